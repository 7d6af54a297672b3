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


class RunnerStats:
    """Counters, last error and contact, overrunning tasks and response-timeout deadlines of one runner."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards everything below
        self._counters: Dict[str, Any] = dict.fromkeys(COUNTERS, 0)
        self._counters.update(last_error=None, last_error_time=None)
        self._overrunning: Dict[str, float] = {}  # task id -> time.time() it was reported over its time limit
        self._response_due: Dict[str, float] = {}  # running task id -> time.time() its response timeout ends
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

    def response_due(self, task_id: str, due: float) -> None:
        """A task started that runs without lease extension: at ``due`` (``time.time()``) its slot
        counts as stuck."""
        with self._lock:
            self._response_due[task_id] = due

    def overran(self, task_id: str) -> None:
        """A task was reported over its time limit while its thread still runs."""
        with self._lock:
            self._overrunning[task_id] = time.time()

    def ended(self, task_id: str) -> None:
        """A task's execution returned: it has no response timeout to run past any more."""
        with self._lock:
            self._response_due.pop(task_id, None)

    def overrun_ended(self, task_id: str) -> None:
        """The thread of a task reported over its time limit returned."""
        with self._lock:
            self._overrunning.pop(task_id, None)

    def snapshot(self, concurrency: int) -> Tuple[Dict[str, Any], Tuple[str, ...], Optional[float]]:
        """The counters (with ``last_error``/``last_error_time``), the ids of the overrunning tasks, and
        since when all ``concurrency`` slots are stuck (None while at least one is not)."""
        now = time.time()
        with self._lock:
            counters = dict(self._counters)
            overrunning = tuple(sorted(self._overrunning))
            # since when each stuck slot is stuck: reported over its time limit, or past its response timeout
            stuck = sorted([*self._overrunning.values(), *(
                due for task_id, due in self._response_due.items() if due <= now and task_id not in self._overrunning
            )])
        return counters, overrunning, stuck[concurrency - 1] if len(stuck) >= concurrency else None


__all__ = ["RunnerStats"]
