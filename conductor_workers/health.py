"""A ``/health`` endpoint for a :class:`~conductor_workers.TaskManager` (stdlib ``http.server`` only).

``start_health_server(manager, port)`` (or ``manager.serve_health(port)``) serves, on a daemon thread:

* ``GET /health``: 200 with a JSON report while every poll thread is alive and every worker that has
  something to poll for reached the server recently; 503 with the same report otherwise.

Per worker the report has ``polling``, ``paused``, ``in_flight``, ``last_contact`` (``time.time()`` of
the server's last answer to a poll or a report), ``last_contact_age`` (seconds), ``last_error``,
``last_error_time`` and ``problems`` (why it is unhealthy, empty when it is not).

A worker is healthy once its poll thread runs and the server answered it at least once. A worker
that is paused, or whose slots are all busy, does not poll, so its silence is not held against it. "Recently" is ``max_silence`` seconds, but never less than one idle long poll and poll
interval plus a second, so that an idle, healthy worker is never reported unhealthy.

A worker is also unhealthy, and ``wedged`` in its report, when every one of its slots has been held
for more than ``max_stuck`` seconds by tasks that overran their ``time_limit`` (already reported
FAILED, their threads never returned) or run past their response timeout: it takes no work and
never will by itself. ``conductor-workers run`` replaces such a process; a liveness probe on this
endpoint restarts an embedded one. So is a worker whose time-limit watchdog or lease-extension
thread died or is late (``problems`` says which).
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable, Dict, Mapping, Optional, Protocol, Tuple

from . import _validate
from ._httpserve import Endpoint, Route

from .status import COUNTERS, RunnerStatus

log = logging.getLogger(__name__)

DEFAULT_MAX_SILENCE = 30.0
DEFAULT_MAX_STUCK = 30.0
HealthReport = Dict[str, Any]


class StatusSource(Protocol):
    """What a health report is made from: a :class:`~conductor_workers.TaskManager`, or anything
    else whose ``status()`` gives a :class:`RunnerStatus` per task type."""

    def status(self) -> Mapping[str, RunnerStatus]: ...


def worker_health(status: RunnerStatus, *, max_silence: float = DEFAULT_MAX_SILENCE,
                  max_stuck: float = DEFAULT_MAX_STUCK, now: Optional[float] = None) -> Dict[str, Any]:
    """The health of one worker from its :meth:`TaskRunner.status`; ``healthy`` says the verdict."""
    now = time.time() if now is None else now
    options = status.options
    gate_limit = status.admission.get("limit") if status.admission else None
    # paused, every slot busy, or every slot the admission gate grants busy (0: it holds polling)
    waiting = status.paused or status.in_flight >= (options.concurrency if gate_limit is None else gate_limit)
    silence = None if status.last_contact is None else max(0.0, now - status.last_contact)
    idle_cycle = (options.batch_poll_timeout + options.poll_interval) / 1000.0
    allowed = max(max_silence, idle_cycle + 1.0)
    problems = []
    if not status.polling:
        problems.append("not polling")
    # paused, or every slot busy: it does not poll, so its silence says nothing
    elif not waiting and silence is None:
        problems.append("has not reached the server yet")
    elif not waiting and silence is not None and silence > allowed:
        problems.append(f"has not reached the server for {silence:.1f}s (allowed: {allowed:.1f}s)")
    stuck = None if status.stuck_since is None else max(0.0, now - status.stuck_since)
    wedged = stuck is not None and stuck > max_stuck
    if wedged:
        problems.append(
            f"all {options.concurrency} slot(s) held by overrunning tasks (past their time limit or response "
            f"timeout) for {stuck:.1f}s (allowed: {max_stuck:.1f}s)"
        )
    problems.extend(status.problems)
    report = {name: getattr(status, name) for name in (
        "polling", "paused", "in_flight", "last_contact", "last_error", "last_error_time", *COUNTERS)}
    report.update(
        admission=status.admission,
        healthy=not problems,
        overrunning=len(status.overrunning),
        wedged=wedged,
        last_contact_age=None if silence is None else round(silence, 3),
        problems=problems,
    )
    return report


def health_report(manager: StatusSource, *, max_silence: float = DEFAULT_MAX_SILENCE,
                  max_stuck: float = DEFAULT_MAX_STUCK) -> HealthReport:
    """``{"healthy": bool, "status": "ok"|"unhealthy", "workers": {task_type: worker_health(...)}}``."""
    now = time.time()
    workers = {name: worker_health(status, max_silence=max_silence, max_stuck=max_stuck, now=now)
               for name, status in manager.status().items()}
    healthy = bool(workers) and all(worker["healthy"] for worker in workers.values())
    return {"healthy": healthy, "status": "ok" if healthy else "unhealthy", "time": now, "workers": workers}


def _json_route(report: Callable[[], HealthReport]) -> Route:
    def route() -> Tuple[int, str, bytes]:
        try:
            body = report()
        except Exception as exc:  # noqa: BLE001 - a broken report is an unhealthy service, not a crash
            log.exception("health report failed")
            body = {"healthy": False, "status": "unhealthy", "error": f"{type(exc).__name__}: {exc}"}
        data = json.dumps(body, default=str, sort_keys=True).encode("utf-8")
        return (200 if body.get("healthy") else 503), "application/json", data

    return route


class HealthServer(Endpoint):
    """Serves ``report()`` as JSON at ``/health`` on a daemon thread (200 when its ``healthy`` is
    true, 503 otherwise); :meth:`close` stops it."""

    path = "/health"

    def __init__(self, report: Callable[[], HealthReport], port: int = 0, host: str = "127.0.0.1") -> None:
        super().__init__(_json_route(report), port, host, what="health")
        log.info("health endpoint on %s", self.url)


def start_health_server(manager: StatusSource, port: int = 0, host: str = "127.0.0.1", *,
                        max_silence: float = DEFAULT_MAX_SILENCE,
                        max_stuck: float = DEFAULT_MAX_STUCK) -> HealthServer:
    """Serve ``manager``'s :func:`health_report` at ``http://host:port/health`` (port 0: a free one)."""
    max_silence = _validate.seconds("max_silence", max_silence, positive=True)
    max_stuck = _validate.seconds("max_stuck", max_stuck, positive=True)
    return HealthServer(lambda: health_report(manager, max_silence=max_silence, max_stuck=max_stuck), port, host)


__all__ = ["DEFAULT_MAX_SILENCE", "DEFAULT_MAX_STUCK", "HealthServer", "health_report", "start_health_server", "worker_health"]
