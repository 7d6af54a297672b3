"""Lease extension: one thread per runner that sends ``extendLease`` for tasks running past ~80 % of
their ``responseTimeoutSeconds`` (the ``lease_extend`` option)."""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Dict, Optional, Tuple

from .errors import ConductorError
from .models import Task

log = logging.getLogger("conductor_workers.runner")

LEASE_FRACTION = 0.8


class LeaseKeeper:
    """One thread per runner that sends ``extendLease`` for tasks running past ~80 % of their timeout.

    :param task_type: the runner's task type (names the thread).
    :param extend: sends the lease extension of one task (the runner's reporter); called on the
        keeper's thread, never under its lock.
    """

    def __init__(self, task_type: str, extend: Callable[[Task], None]) -> None:
        self._task_type = task_type
        self._extend = extend
        self._cond = threading.Condition()  # guards _due, _thread and _stopped
        self._due: Dict[str, Tuple[float, Task]] = {}
        self._thread: Optional[threading.Thread] = None
        self._stopped = False

    def track(self, task: Task, received: float) -> None:
        if task.response_timeout_seconds <= 0:
            return
        with self._cond:
            self._stopped = False
            self._due[task.task_id] = (received + LEASE_FRACTION * task.response_timeout_seconds, task)
            if self._thread is None or not self._thread.is_alive():
                thread = threading.Thread(target=self._run, name=f"cw-lease-{self._task_type}", daemon=True)
                try:
                    thread.start()
                except RuntimeError as exc:  # e.g. at interpreter shutdown: run on without a lease
                    self._due.pop(task.task_id, None)
                    log.warning("%s: no lease extension for task %s: %s", task.task_type, task.task_id, exc)
                    return
                self._thread = thread
            self._cond.notify_all()

    def untrack(self, task_id: str) -> None:
        with self._cond:
            self._due.pop(task_id, None)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._due.clear()
            self._cond.notify_all()

    def problem(self) -> Optional[str]:
        """Why lease extension cannot happen (its thread died with tasks to extend), None when it can."""
        with self._cond:
            if self._stopped or not self._due or (self._thread is not None and self._thread.is_alive()):
                return None
        return "the lease-extension thread is not running"

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                now = time.monotonic()
                due = [(task_id, task) for task_id, (when, task) in self._due.items() if when <= now]
                for task_id, task in due:
                    self._due[task_id] = (now + LEASE_FRACTION * task.response_timeout_seconds, task)
                if not due:
                    wait = min((when for when, _ in self._due.values()), default=now + 60.0) - now
                    self._cond.wait(max(wait, 0.01))
                    continue
            for _, task in due:
                try:
                    self._extend(task)
                    log.debug("%s: extended the lease of task %s", task.task_type, task.task_id)
                except ConductorError as exc:
                    log.warning("%s: lease extension for task %s failed: %s", task.task_type, task.task_id, exc)
                except Exception:  # noqa: BLE001 - a bug must not end lease extension for every task
                    log.exception("%s: lease extension for task %s failed", task.task_type, task.task_id)


__all__ = ["LEASE_FRACTION", "LeaseKeeper"]
