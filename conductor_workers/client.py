"""``ConductorClient``: hand-written methods for the task, workflow and metadata REST APIs.

Each method is one endpoint; the URL, its parameters and what the answer means (including the
differences between server versions, see the README's compatibility table) are handled here so that
callers only see models and :mod:`conductor_workers.errors`.

The API groups live in their own modules (``_task_client``, ``_workflow_client``, ``_metadata_client``,
with their shared helpers in ``_client_common``); this module holds :class:`ConductorClient`, which
ties them to one transport, and re-exports them.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from . import _client_common
from ._http import HttpTransport, RequestWrapper
from ._metadata_client import MetadataClient
from ._task_client import TaskClient
from ._workflow_client import WorkflowClient
from .config import Configuration
from .payloads import PayloadStore

StatusLike = _client_common.StatusLike  # a task result status or its name (used by the executor)


class ConductorClient:
    """A thread-safe client for one Conductor server. Close it with :meth:`close` or ``with``.

    >>> with ConductorClient(Configuration(server_url="http://localhost:8080/api")) as client:
    ...     client.workflows.start_by_name("greetings", {"name": "Ada"})
    """

    def __init__(self, config: Optional[Configuration] = None) -> None:
        self.config = config if config is not None else Configuration.from_env()
        self._transport = HttpTransport(self.config)
        #: external payload storage (large inputs and outputs), see :mod:`conductor_workers.payloads`
        self.payloads = PayloadStore(self._transport)
        self.tasks = TaskClient(self._transport, self.payloads)
        self.workflows = WorkflowClient(self._transport, self.payloads)
        self.metadata = MetadataClient(self._transport, self.payloads)

    def health(self) -> Dict[str, Any]:
        """``GET /health`` (served beside, not under, ``/api``)."""
        return dict(self._transport.call_json("GET", "/health") or {})

    def wrap_requests(self, around: Optional[RequestWrapper]) -> None:
        """Wrap every HTTP call this client makes, polls included: ``around(method, url, send)``
        calls ``send()`` and returns its response (:func:`conductor_workers.tracing.trace_http` gives
        each call a span this way). None removes the wrapper."""
        self._transport.around = around

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> "ConductorClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ConductorClient({self.config.server_url!r})"


__all__ = ["ConductorClient", "MetadataClient", "TaskClient", "WorkflowClient"]
