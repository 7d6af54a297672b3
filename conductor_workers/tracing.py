"""OpenTelemetry tracing, written as a middleware (the optional ``otel`` extra: ``opentelemetry-api``).

Nothing here is imported by ``import conductor_workers``; a process that never imports this module
pays nothing. What it gives:

* :class:`TracingMiddleware`: one span per execution, ``execute {taskType}``, kind CONSUMER, with
  the attributes ``conductor.task.id``, ``conductor.workflow.id``, ``conductor.task.type``,
  ``conductor.task.retry_count``, ``conductor.task.poll_count`` and ``conductor.task.status``;
  an exception is recorded on the span and a failed task sets its status to ERROR;
* :func:`trace_http`: optionally, one CLIENT span per HTTP call a client makes (``HTTP {method}``);
* context across the workflow: :func:`inject_trace_context` (and
  ``WorkflowExecutor(client, propagate_trace=True)``, which starts a ``start_workflow {name}``
  span and injects it) puts the current W3C trace context into the workflow input under
  :data:`TRACE_CONTEXT_KEY`. When the workflow definition passes that key on to a task
  (``"traceContext": "${workflow.input.traceContext}"`` in its ``inputParameters``), the task's
  execution span becomes a child of the starter's, so one trace shows the starter and every worker.

The spans go wherever the application's OpenTelemetry SDK sends them; with only the API installed
they are no-ops.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, Mapping, Optional

from .errors import InvalidOptionError
from .middleware import CallNext, Middleware
from .models import Task, TaskResultStatus
from .worker import WorkerResult

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError:  # pragma: no cover - exercised by the test that runs without the extra
    trace = None  # type: ignore[assignment]

if TYPE_CHECKING:  # pragma: no cover
    from .client import ConductorClient

#: The workflow input key (and the task input key) that carries the W3C trace context:
#: ``{"traceparent": "00-...", "tracestate": "..."}``.
TRACE_CONTEXT_KEY = "traceContext"
_TRACER_NAME = "conductor_workers"
_OK = (TaskResultStatus.COMPLETED, TaskResultStatus.IN_PROGRESS)


def _require() -> None:
    if trace is None:
        raise InvalidOptionError(
            "tracing needs the OpenTelemetry API: pip install 'conductor-workers[otel]'"
        )


def _tracer(tracer_provider: Any = None) -> Any:
    from ._version import __version__

    return trace.get_tracer(_TRACER_NAME, __version__, tracer_provider=tracer_provider)


def inject_trace_context(input: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """A copy of ``input`` carrying the current trace context under :data:`TRACE_CONTEXT_KEY`."""
    _require()
    carrier: Dict[str, str] = {}
    propagate.inject(carrier)
    updated = dict(input or {})
    if carrier:
        updated[TRACE_CONTEXT_KEY] = carrier
    return updated


def extract_trace_context(input: Optional[Mapping[str, Any]]) -> Any:
    """The OpenTelemetry context carried in a task's or workflow's input, None when it carries none."""
    _require()
    carrier = (input or {}).get(TRACE_CONTEXT_KEY)
    if not isinstance(carrier, Mapping) or not carrier:
        return None
    return propagate.extract({str(key): str(value) for key, value in carrier.items()})


@contextlib.contextmanager
def start_workflow_span(name: str, tracer_provider: Any = None) -> Iterator[Any]:
    """A PRODUCER span ``start_workflow {name}``, current while the workflow is being started."""
    _require()
    with _tracer(tracer_provider).start_as_current_span(
        f"start_workflow {name}", kind=SpanKind.PRODUCER, attributes={"conductor.workflow.name": name}
    ) as span:
        yield span


class TracingMiddleware(Middleware):
    """A span per execution; a child of the workflow starter's span when the task input carries it.

    :param tracer_provider: the ``TracerProvider`` to use (default: the global one).
    """

    def __init__(self, tracer_provider: Any = None) -> None:
        _require()
        self._tracer = _tracer(tracer_provider)

    def execute(self, task: Task, call_next: CallNext) -> WorkerResult:
        task_type = task.task_type or task.task_def_name or ""
        attributes = {
            "conductor.task.id": task.task_id or "",
            "conductor.workflow.id": task.workflow_instance_id or "",
            "conductor.task.type": task_type,
            "conductor.task.retry_count": task.retry_count,
            "conductor.task.poll_count": task.poll_count,
        }
        with self._tracer.start_as_current_span(
            f"execute {task_type}",
            context=extract_trace_context(task.input_data),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                result = call_next(task)
            except BaseException as exc:
                span.record_exception(exc)
                span.set_attribute("conductor.task.status", TaskResultStatus.FAILED.value)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                raise
            status = result.status
            span.set_attribute("conductor.task.status", status.value)
            if status not in _OK:
                span.set_status(Status(StatusCode.ERROR, result.reason_for_incompletion or status.value))
            return result


def trace_http(client: "ConductorClient", tracer_provider: Any = None) -> None:
    """Give every HTTP call ``client`` makes a CLIENT span ``HTTP {method}`` (polls included).

    Off by default: a worker that long-polls makes many calls, and each is a span.
    """
    _require()
    tracer = _tracer(tracer_provider)

    def around(method: str, url: str, send: Callable[[], Any]) -> Any:
        with tracer.start_as_current_span(
            f"HTTP {method}",
            kind=SpanKind.CLIENT,
            attributes={"http.request.method": method, "url.full": url},
        ) as span:
            resp = send()
            span.set_attribute("http.response.status_code", resp.status_code)
            if resp.status_code >= 500:
                span.set_status(Status(StatusCode.ERROR, f"HTTP {resp.status_code}"))
            return resp

    client.wrap_requests(around)


__all__ = [
    "TRACE_CONTEXT_KEY",
    "TracingMiddleware",
    "extract_trace_context",
    "inject_trace_context",
    "start_workflow_span",
    "trace_http",
]
