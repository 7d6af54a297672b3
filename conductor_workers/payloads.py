"""Large payloads: reading what the server keeps in external storage, and sizing outputs before a report.

conductor-oss moves a task's input or output into external storage when it is larger than its
threshold (3072 KB for tasks by default) and then hands the task out with an empty ``inputData`` and
``externalInputPayloadStoragePath`` set. :class:`PayloadStore` asks the server where such a payload
lives (``GET /api/{tasks|workflow}/externalstoragelocation``), downloads it from that URI (a plain
HTTP(S) URL: the server's own ``/api/external/postgres/{key}`` for the PostgreSQL storage, a
pre-signed URL for S3 or Azure), and, when the user turns uploads on, uploads an output above the
threshold with a ``PUT`` to a WRITE location. The default "dummy" storage gives no URI: such a
payload cannot be read, and the task fails with a reason that says so instead of running on ``{}``.
"""
from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Dict, Optional

from .errors import ConductorError, ExternalPayloadError, InvalidResponseError

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

    def read(self, path: str, payload_type: str) -> Dict[str, Any]:
        """The payload stored at ``path``; :class:`ExternalPayloadError` when it cannot be had."""
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
        try:
            resp = self._http.send("GET", str(uri))
        except ConductorError as exc:
            raise ExternalPayloadError(f"could not download the {_what(payload_type)} from {uri}: {exc}", path=path) from exc
        if resp.status_code != 200:
            raise ExternalPayloadError(
                f"could not download the {_what(payload_type)} from {uri}: HTTP {resp.status_code}",
                path=path,
                permanent=resp.status_code in (403, 404, 410),
            )
        try:
            payload = json.loads(resp.content)
        except (ValueError, RecursionError) as exc:
            raise ExternalPayloadError(
                f"the {_what(payload_type)} downloaded from {uri} is not JSON ({exc})", path=path, permanent=True
            ) from exc
        if not isinstance(payload, dict):
            raise ExternalPayloadError(
                f"the {_what(payload_type)} downloaded from {uri} is not a JSON object", path=path, permanent=True
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
        if resp.status_code in (403, 404, 405, 501):
            self._refuse(f"PUT {uri} answered HTTP {resp.status_code}")
            return None
        if resp.status_code >= 300:
            raise ExternalPayloadError(f"could not upload the {_what(payload_type)} to {uri}: HTTP {resp.status_code}")
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
