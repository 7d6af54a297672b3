"""Large payloads: reading what the server keeps in external storage, and sizing outputs before a report.

conductor-oss moves a task's input or output into external storage when it is larger than its
threshold (3072 KB for tasks by default) and then hands the task out with an empty ``inputData`` and
``externalInputPayloadStoragePath`` set. :class:`PayloadStore` asks the server where such a payload
lives (``GET /api/{tasks|workflow}/externalstoragelocation``), downloads it from that URI (a plain
HTTP(S) URL: the server's own ``/api/external/postgres/{key}`` for the PostgreSQL storage, a
pre-signed URL for S3 or Azure), and, when the user turns uploads on, uploads an output above the
threshold with a ``PUT`` to a WRITE location. The default "dummy" storage gives no URI: such a
payload cannot be read, and the task fails with a reason that says so instead of running on ``{}``.

A download is bounded, whatever the storage sends:

* in size: never read past ``Configuration.max_payload_kb`` (the server's maximum payload, 10240 KB
  by default; the server publishes no maximum of its own through its API, so the client's setting is
  the one known). A payload announced larger is not read at all; one that does not announce its size
  is cut just past the maximum. Either fails with the size in the message, permanently: it will be
  as large next time;
* in time: ``Configuration.download_timeout`` (60 s by default) for the whole download, or the
  caller's shorter ``timeout`` (the runner passes the worker's ``time_limit``); each read is also
  bounded by ``read_timeout``. Not permanent: the storage may be faster next time.

Downloads and uploads go through the proxy the environment names for the storage's host (``NO_PROXY``
decided for that host, not the server's), never carry the client's credentials, and are reported
without the URL's query (a pre-signed URL's signature).
"""
from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Dict, Optional

from ._http import shown_url
from .errors import ConductorError, ExternalPayloadError, InvalidResponseError, ResponseTooLargeError

if TYPE_CHECKING:  # pragma: no cover
    from ._http import HttpTransport

log = logging.getLogger(__name__)

TASK_INPUT = "TASK_INPUT"
TASK_OUTPUT = "TASK_OUTPUT"
WORKFLOW_INPUT = "WORKFLOW_INPUT"
WORKFLOW_OUTPUT = "WORKFLOW_OUTPUT"


def payload_size(payload: Any) -> int:
    """The size in bytes the server measures: the payload as compact JSON, UTF-8 encoded."""
    return len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


class PayloadStore:
    """External payload storage as one client sees it (thread-safe; one per ``ConductorClient``)."""

    def __init__(self, transport: "HttpTransport") -> None:
        self._http = transport
        self.uploads_refused = False  # the storage answered a PUT with 405 (PostgreSQL's is read-only)

    def location(self, operation: str, payload_type: str, path: str = "") -> Dict[str, Any]:
        """The server's ``ExternalStorageLocation`` (``{"uri", "path"}``; ``uri`` absent for dummy storage)."""
        api = "workflow" if payload_type.startswith("WORKFLOW") else "tasks"
        data = self._http.call_json(
            "GET",
            f"{api}/externalstoragelocation",
            params={"path": path, "operation": operation, "payloadType": payload_type},
        )
        if not isinstance(data, dict):
            raise InvalidResponseError(
                f"GET {api}/externalstoragelocation: expected a location object, got {data!r:.100}", status_code=200
            )
        return data

    def read(self, path: str, payload_type: str, *, timeout: Optional[float] = None) -> Dict[str, Any]:
        """The payload stored at ``path``; :class:`ExternalPayloadError` when it cannot be had.

        ``timeout``: seconds the download may take, when shorter than ``download_timeout``.
        """
        try:
            location = self.location("READ", payload_type, path)
        except ConductorError as exc:
            raise ExternalPayloadError(
                f"could not ask the server where the {_what(payload_type)} at {path!r} is: {exc}", path=path
            ) from exc
        uri = location.get("uri")
        if not uri:
            raise ExternalPayloadError(
                f"the {_what(payload_type)} was moved to external storage ({path!r}), but the server gives no "
                "URI to read it from: its external payload storage is the placeholder ('dummy') storage, "
                "which nothing outside the server can read. Configure conductor.external-payload-storage.type "
                "(postgres, s3, azureblob) on the server",
                path=path,
                permanent=True,
            )
        config = self._http.config
        seconds = config.download_timeout if timeout is None else min(timeout, config.download_timeout)
        shown = shown_url(str(uri))
        try:
            status, body = self._http.download(str(uri), max_bytes=config.max_payload_kb * 1024, timeout=seconds)
        except ResponseTooLargeError as exc:
            limit = f"max_payload_kb={config.max_payload_kb}"
            if exc.size is not None:
                why = f"is {exc.size} bytes, more than the maximum of {exc.limit} bytes ({limit}); it was not downloaded"
            else:
                why = f"is more than {exc.limit} bytes, the maximum ({limit}); the download was stopped there"
            raise ExternalPayloadError(f"the {_what(payload_type)} at {path!r} {why}", path=path, permanent=True) from exc
        except ConductorError as exc:
            raise ExternalPayloadError(f"could not download the {_what(payload_type)} from {shown}: {exc}", path=path) from exc
        if status != 200:
            raise ExternalPayloadError(
                f"could not download the {_what(payload_type)} from {shown}: HTTP {status}",
                path=path,
                permanent=status in (403, 404, 410),
            )
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise ExternalPayloadError(
                f"the {_what(payload_type)} downloaded from {shown} is not JSON ({exc})", path=path, permanent=True
            ) from exc
        del body  # the text is no longer needed while the caller holds the payload
        if not isinstance(payload, dict):
            raise ExternalPayloadError(
                f"the {_what(payload_type)} downloaded from {shown} is not a JSON object", path=path, permanent=True
            )
        if set(payload) == {"Error"}:  # conductor-oss's PostgreSQL storage says "missing" with a 200
            raise ExternalPayloadError(
                f"the external storage has no {_what(payload_type)} at {path!r}: {payload['Error']}",
                path=path,
                permanent=True,
            )
        return payload

    def write(self, payload: Dict[str, Any], payload_type: str) -> Optional[str]:
        """Upload ``payload``; its storage path, or None when this storage takes no uploads."""
        if self.uploads_refused:
            return None
        location = self.location("WRITE", payload_type)
        uri, path = location.get("uri"), location.get("path")
        if not uri or not path:
            self._refuse(f"the server gives no URI to upload to ({location!r:.100})")
            return None
        resp = self._http.send("PUT", str(uri), json_body=payload)
        shown = shown_url(str(uri))
        if resp.status_code in (403, 404, 405, 501):
            self._refuse(f"PUT {shown} answered HTTP {resp.status_code}")
            return None
        if resp.status_code >= 300:
            raise ExternalPayloadError(f"could not upload the {_what(payload_type)} to {shown}: HTTP {resp.status_code}")
        return str(path)

    def _refuse(self, why: str) -> None:
        if not self.uploads_refused:
            log.warning(
                "external payload storage takes no uploads from clients (%s): large outputs are sent inline, "
                "and the server moves them to its storage itself",
                why,
            )
        self.uploads_refused = True


def _what(payload_type: str) -> str:
    return payload_type.lower().replace("_", " ")


__all__ = ["PayloadStore", "payload_size"]
