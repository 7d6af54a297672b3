"""``RunnerStatus``: what one :class:`~conductor_workers.TaskRunner` is doing, as a frozen value.

``TaskRunner.status()`` and ``TaskManager.status()`` (one per task type) return it; the health
endpoint and dashboards read it; :meth:`RunnerStatus.to_dict` gives plain JSON-ready data.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import attrs

from .options import PollingOptions


@attrs.frozen
class RunnerStatus:
    """A snapshot of one runner. Counters count since the runner was made.

    :param task_type: the task type the runner polls for.
    :param options: the polling options in force.
    :param polling: started, not stopping, and its poll thread alive.
    :param paused: the ``paused`` option is set.
    :param in_flight: tasks holding a slot now (an overrunning task holds one until its thread returns).
    :param overrunning: ids of tasks already reported over their ``time_limit`` whose thread still runs.
    :param tasks_received: tasks the server handed out (by polls and by update-v2).
    :param executions_completed: executions that ended with a COMPLETED result.
    :param executions_failed: executions that ended FAILED or FAILED_WITH_TERMINAL_ERROR (over the time
        limit included), or whose input could not be downloaded.
    :param executions_in_progress: executions that returned IN_PROGRESS (a callback later).
    :param reports_accepted: results the server accepted.
    :param reports_failed: results that could not be reported after every retry (see ``on_update_failure``).
    :param last_error: the last error, as ``"Type: message"``, None before the first.
    :param last_error_time: its ``time.time()``.
    :param last_contact: ``time.time()`` the server last answered a poll or a report, None before its first answer.
    :param update_v2: whether the server takes update-v2 (None until the first report).
    :param stuck_since: ``time.time()`` since when every slot (``concurrency``) is held by a task that
        overran its ``time_limit`` or runs past its response timeout (without lease extension), None
        while at least one slot is not. A worker stuck for long is *wedged* (see ``/health``).
    :param problems: threads of the runner that cannot do their job (the time-limit watchdog, the
        lease-extension thread): dead, or late.
    :param admission: with an admission gate, its state for this worker: ``limit`` (slots it may
        hold now), ``reason`` (why the limit is where it is), ``signal`` and ``memory_fraction``.
    """

    task_type: str
    options: PollingOptions
    polling: bool
    paused: bool
    in_flight: int
    overrunning: Tuple[str, ...]
    tasks_received: int
    executions_completed: int
    executions_failed: int
    executions_in_progress: int
    reports_accepted: int
    reports_failed: int
    last_error: Optional[str]
    last_error_time: Optional[float]
    last_contact: Optional[float]
    update_v2: Optional[bool]
    admission: Optional[Dict[str, Any]] = None
    stuck_since: Optional[float] = None
    problems: Tuple[str, ...] = ()

    def to_dict(self) -> Dict[str, Any]:
        """Plain data (options as a dict, ids as a list) for JSON."""
        data = attrs.asdict(self, recurse=False)
        data["options"] = attrs.asdict(self.options)
        data["overrunning"] = list(self.overrunning)
        data["problems"] = list(self.problems)
        return data


#: The counters a runner keeps, by :class:`RunnerStatus` field name.
COUNTERS: Tuple[str, ...] = (
    "tasks_received",
    "executions_completed",
    "executions_failed",
    "executions_in_progress",
    "reports_accepted",
    "reports_failed",
)

__all__ = ["COUNTERS", "RunnerStatus"]
