"""Prometheus metrics, written as a :class:`~conductor_workers.middleware.Middleware` (the optional ``metrics`` extra).

``MetricsMiddleware`` only observes (it uses the hooks, not ``execute``), so it adds no layer
around executions; it counts in plain dicts under a lock (no dependency, nothing paid unless you
pass it to a manager). ``start_metrics_server`` serves the figures in the Prometheus text format
with ``prometheus_client`` (``pip install conductor-workers[metrics]``), imported only then::

    metrics = MetricsMiddleware()
    manager = TaskManager(client, workers, middleware=[metrics])
    server = start_metrics_server(metrics, port=9100)      # GET http://127.0.0.1:9100/metrics

Metrics, each with a ``taskType`` label: ``task_poll_total``, ``task_poll_error_total``
(+ ``exception``), ``task_execute_time`` (a histogram, seconds), ``task_execute_total`` (+ ``status``),
``task_execute_error_total`` (+ ``exception``), ``task_update_error_total``, the gauge
``task_admission_limit`` (with an admission gate) and
``external_payload_used_total`` (+ ``operation``, ``payloadType``).

A :meth:`MetricsMiddleware.snapshot` is plain data (picklable), and :func:`merge_snapshots` adds several
up: ``conductor-workers run --processes N --metrics-port P`` serves the sum over its processes.
"""
from __future__ import annotations

import math
import threading
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

from ._httpserve import Endpoint
from .errors import InvalidOptionError
from .middleware import Middleware
from .models import Task, TaskResult

Labels = Tuple[Tuple[str, str], ...]
#: ``{"counters": {(name, labels): value}, "histograms": {(name, labels): [bucket counts..., sum]},
#: "gauges": {(name, labels): value}}``
Snapshot = Dict[str, Dict[Tuple[str, Labels], Any]]

#: Upper bounds (seconds) of ``task_execute_time``'s buckets; the last one is +Inf.
EXECUTE_TIME_BUCKETS: Tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, math.inf,
)

_HELP = {
    "task_poll_total": "Polls that the server answered",
    "task_poll_error_total": "Polls that failed",
    "task_execute_time": "Time spent executing tasks, in seconds",
    "task_execute_total": "Tasks executed, by result status",
    "task_execute_error_total": "Tasks whose execute() raised",
    "task_update_error_total": "Results that could not be reported after every retry",
    "external_payload_used_total": "Payloads read from or written to external storage",
    "task_admission_limit": "Slots the admission gate lets a worker hold now (0: polling held)",
}


def _task_type(task: Task) -> str:
    return task.task_type or task.task_def_name or ""


class MetricsMiddleware(Middleware):
    """Counts what the middleware hooks report; cheap enough for every poll and task."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: Dict[Tuple[str, Labels], float] = {}
        self._histograms: Dict[Tuple[str, Labels], List[float]] = {}
        self._gauges: Dict[Tuple[str, Labels], float] = {}

    def _inc(self, name: str, labels: Labels, amount: float = 1.0) -> None:
        key = (name, labels)
        with self._lock:
            self._counters[key] = self._counters.get(key, 0.0) + amount

    def _observe(self, name: str, labels: Labels, value: float) -> None:
        key = (name, labels)
        with self._lock:
            cells = self._histograms.get(key)
            if cells is None:
                cells = self._histograms[key] = [0.0] * (len(EXECUTE_TIME_BUCKETS) + 1)
            for index, bound in enumerate(EXECUTE_TIME_BUCKETS):
                if value <= bound:
                    cells[index] += 1  # non-cumulative here; rendering accumulates
                    break
            cells[-1] += value

    # -- hooks ---------------------------------------------------------------------------------

    def polled(self, task_type: str, count: int, duration: float) -> None:
        self._inc("task_poll_total", (("taskType", task_type),))

    def poll_failed(self, task_type: str, error: BaseException) -> None:
        self._inc("task_poll_error_total", (("taskType", task_type), ("exception", type(error).__name__)))

    def task_finished(self, task: Task, result: TaskResult, duration: float) -> None:
        task_type = _task_type(task)
        self._observe("task_execute_time", (("taskType", task_type),), duration)
        self._inc("task_execute_total", (("taskType", task_type), ("status", result.status.value)))

    def task_failed(self, task: Task, error: BaseException) -> None:
        task_type = _task_type(task)
        self._inc("task_execute_error_total", (("taskType", task_type), ("exception", type(error).__name__)))

    def update_failed(self, task: Task, result: TaskResult, error: BaseException) -> None:
        self._inc("task_update_error_total", (("taskType", _task_type(task)),))

    def admission_changed(self, task_type: str, limit: int, reason: str) -> None:
        with self._lock:
            self._gauges[("task_admission_limit", (("taskType", task_type),))] = float(limit)

    def external_payload_used(self, task_type: str, operation: str, payload_type: str) -> None:
        labels = (("taskType", task_type), ("operation", operation), ("payloadType", payload_type))
        self._inc("external_payload_used_total", labels)

    # -- reading -------------------------------------------------------------------------------

    def register(self, registry: Any) -> None:
        """Expose these figures through a ``prometheus_client.CollectorRegistry`` of your own.

        For a service that already serves ``/metrics``: ``events.register(REGISTRY)`` and pass
        ``events`` to the ``TaskManager`` (``events=``); every scrape reads the current values.
        """
        _import_prometheus()
        registry.register(_Collector(self.snapshot))

    def snapshot(self) -> Snapshot:
        """A copy of every value, as plain (picklable) data."""
        with self._lock:
            return {
                "counters": dict(self._counters),
                "histograms": {key: list(cells) for key, cells in self._histograms.items()},
                "gauges": dict(self._gauges),
            }


def merge_snapshots(snapshots: Iterable[Snapshot]) -> Snapshot:
    """The sum of several snapshots (e.g. one per process)."""
    counters: Dict[Tuple[str, Labels], float] = {}
    histograms: Dict[Tuple[str, Labels], List[float]] = {}
    gauges: Dict[Tuple[str, Labels], float] = {}
    for snapshot in snapshots:
        for key, value in snapshot.get("gauges", {}).items():  # e.g. slots admitted, over the processes
            gauges[key] = gauges.get(key, 0.0) + value
        for key, value in snapshot.get("counters", {}).items():
            counters[key] = counters.get(key, 0.0) + value
        for key, cells in snapshot.get("histograms", {}).items():
            total = histograms.setdefault(key, [0.0] * len(cells))
            for index, value in enumerate(cells):
                total[index] += value
    return {"counters": counters, "histograms": histograms, "gauges": gauges}


def _import_prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise InvalidOptionError(
            "metrics need prometheus_client: pip install 'conductor-workers[metrics]'"
        ) from None
    return prometheus_client


class _Collector:
    """A prometheus_client collector reading a snapshot each time it is scraped."""

    def __init__(self, source: Callable[[], Snapshot]) -> None:
        self._source = source

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        snapshot = self._source()
        families: Dict[str, Any] = {}

        def family(kind: Any, name: str, labels: Labels) -> Any:
            if name not in families:
                families[name] = kind(name, _HELP.get(name, name), labels=[key for key, _ in labels])
            return families[name]

        for (name, labels), value in sorted(snapshot.get("counters", {}).items()):
            family(CounterMetricFamily, name, labels).add_metric([val for _, val in labels], value)
        for (name, labels), value in sorted(snapshot.get("gauges", {}).items()):
            family(GaugeMetricFamily, name, labels).add_metric([val for _, val in labels], value)
        for (name, labels), cells in sorted(snapshot.get("histograms", {}).items()):
            cumulative, buckets = 0.0, []
            for bound, count in zip(EXECUTE_TIME_BUCKETS, cells[:-1]):
                cumulative += count
                buckets.append(("+Inf" if math.isinf(bound) else repr(bound), cumulative))
            family(HistogramMetricFamily, name, labels).add_metric([val for _, val in labels], buckets, cells[-1])
        yield from families.values()


def render(source: Union[MetricsMiddleware, Callable[[], Snapshot]]) -> Tuple[bytes, str]:
    """The Prometheus text exposition of ``source`` and its content type."""
    prometheus_client = _import_prometheus()
    snapshot_fn = source.snapshot if isinstance(source, MetricsMiddleware) else source
    registry = prometheus_client.CollectorRegistry(auto_describe=False)
    registry.register(_Collector(snapshot_fn))
    return prometheus_client.generate_latest(registry), str(prometheus_client.CONTENT_TYPE_LATEST)


class MetricsServer(Endpoint):
    """Serves ``/metrics`` on a daemon thread; :meth:`close` stops it."""

    path = "/metrics"

    def __init__(self, source: Union[MetricsMiddleware, Callable[[], Snapshot]], port: int = 0,
                 host: str = "127.0.0.1") -> None:
        _import_prometheus()  # fail now, not at the first scrape

        def route() -> Tuple[int, str, bytes]:
            body, content_type = render(source)
            return 200, content_type, body

        super().__init__(route, port, host, what="metrics")


def start_metrics_server(source: Union[MetricsMiddleware, Callable[[], Snapshot]], port: int = 0,
                         host: str = "127.0.0.1") -> MetricsServer:
    """Serve ``source`` (a :class:`MetricsMiddleware`, or a function returning a snapshot) at ``/metrics``."""
    return MetricsServer(source, port, host)


def metrics_available() -> Optional[str]:
    """None when prometheus_client can be imported, else why not (one line)."""
    try:
        _import_prometheus()
    except InvalidOptionError as exc:
        return str(exc)
    return None


__all__ = [
    "EXECUTE_TIME_BUCKETS",
    "MetricsMiddleware",
    "MetricsServer",
    "merge_snapshots",
    "metrics_available",
    "render",
    "start_metrics_server",
]
