"""What a runner has done and what it is stuck on: the counters of :class:`RunnerStatus`, the last
error and contact, the tasks that overran their time limit and the response timeouts of the tasks
running. Every part of a runner writes here; :meth:`TaskRunner.status` reads one snapshot.

The lock guards only this bookkeeping, is never held while anything else is called, and is not
the runner's: counting never waits for the poll loop, nor the poll loop for counting.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Dict, Optional, Tuple

from .status import COUNTERS
from .worker import TaskContext


class _Running:
    """One executing task, as the statistics see it."""

    __slots__ = ("response_due", "context")

    def __init__(self, response_due: Optional[float]) -> None:
        self.response_due = response_due
        self.context: Optional[TaskContext] = None


class RunnerStats:
    """Counters, last error and contact, and the tasks executing (their response timeouts and contexts) of one runner."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards everything below
        self._counters: Dict[str, Any] = dict.fromkeys(COUNTERS, 0)
        self._counters.update(last_error=None, last_error_time=None)
        self._running: Dict[str, _Running] = {}  # the tasks executing now, by task id
        self._last_contact: Optional[float] = None  # time.time() the server last answered a poll or report

    def count(self, key: str, amount: int = 1) -> None:
        with self._lock:
            self._counters[key] += amount

    def record_error(self, error: BaseException) -> None:
        with self._lock:
            self._counters["last_error"] = f"{type(error).__name__}: {error}"
            self._counters["last_error_time"] = time.time()

    def contact(self) -> None:
        """The server answered a poll or a report just now."""
        self._last_contact = time.time()  # one reference, written whole: no lock needed

    @property
    def last_contact(self) -> Optional[float]:
        return self._last_contact

    def started(self, task_id: str, response_due: Optional[float]) -> None:
        """A task's execution started; at ``response_due`` (``time.time()``; None: never, e.g. with lease
        extension) its slot counts as stuck."""
        with self._lock:
            self._running[task_id] = _Running(response_due)

    def watching(self, task_id: str, context: TaskContext) -> None:
        """The context the running task is settled through (whether it was reported early tells
        whether the task overruns)."""
        with self._lock:
            running = self._running.get(task_id)
            if running is not None:
                running.context = context

    def ended(self, task_id: str) -> None:
        """A task's execution returned: its slot is no longer stuck or overrunning."""
        with self._lock:
            self._running.pop(task_id, None)

    def snapshot(self, concurrency: int) -> Tuple[Dict[str, Any], Tuple[str, ...], Optional[float]]:
        """The counters (with ``last_error``/``last_error_time``), the ids of the overrunning tasks, and
        since when all ``concurrency`` slots are stuck (None while at least one is not)."""
        now = time.time()
        with self._lock:
            counters = dict(self._counters)
            running = list(self._running.items())
        # Derived, not kept: a task overruns while its context was reported early and its thread still runs.
        reported = {task_id: r.context.reported_at for task_id, r in running
                    if r.context is not None and r.context.reported_at is not None}
        overrunning = tuple(sorted(reported))
        # since when each stuck slot is stuck: reported over its time limit, or past its response timeout
        stuck = sorted([*(at for at in reported.values() if at is not None), *(
            r.response_due for task_id, r in running
            if task_id not in reported and r.response_due is not None and r.response_due <= now
        )])
        return counters, overrunning, stuck[concurrency - 1] if len(stuck) >= concurrency else None


__all__ = ["RunnerStats"]
