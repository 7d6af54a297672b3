"""The ``time_limit`` option, written as a middleware: a task that runs too long fails on time.

When a task has run ``time_limit`` seconds, a watchdog thread (one per process, started on first
use) settles it FAILED (FAILED_WITH_TERMINAL_ERROR with ``time_limit_terminal``) through
:meth:`TaskContext.expire`: the runner reports that at once, on a thread of its own, so the workflow
moves on and the server's retry policy applies. The watchdog does nothing else to the worker's thread.

The worker's thread learns of it at its next **safe point**: :func:`~conductor_workers.check_time_limit`
or :func:`~conductor_workers.add_log` raise :class:`~conductor_workers.TimeLimitExceeded` there, once.
No exception is ever delivered from outside (CPython's ``PyThreadState_SetAsyncExc``): such an
exception lands at an arbitrary bytecode, so it can leave a lock held (``logging``'s handler lock, a
``Condition``, a ``Queue``, a connection pool, the watchdog's own) and wedge the whole process.

A task that never reaches a safe point keeps its slot until its thread returns, so the concurrency
bound holds; :meth:`TaskRunner.status` lists it in ``overrunning``, and when every slot of a worker
is held that way for a while the worker is *stuck* (``RunnerStatus.stuck_since``), which ``/health``
reports and ``conductor-workers run`` answers by replacing the process (its hard limit). Whatever
the worker returns late is discarded and logged, never reported over the failure.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from typing import Dict, List, Optional, Tuple

from .errors import TimeLimitExceeded
from .middleware import CallNext, Middleware
from .models import Task
from .worker import TaskContext, WorkerResult, current_context

log = logging.getLogger(__name__)

MAX_WAIT = 60.0  # the watchdog never waits longer than this in one go (any deadline is safe to hold)
IDLE_EXIT = 2.0  # with nothing to watch for this long, the watchdog thread ends (the next watch starts one)
LATE_FIRE = 5.0  # a watch due this many seconds ago and still not fired: the watchdog is blocked


class _Watch:
    __slots__ = ("deadline", "context", "ended")

    def __init__(self, deadline: float, context: TaskContext) -> None:
        self.deadline = deadline
        self.context = context
        self.ended = False


class Watchdog:
    """One thread that expires the watched contexts whose deadline passed.

    It holds its lock only for its own bookkeeping: expiring a context (which hands the failure to
    the runner) happens outside it, and no exception from one context stops it.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())  # guards everything below
        self._watches: Dict[int, _Watch] = {}
        self._heap: List[Tuple[float, int]] = []
        self._ids = itertools.count()
        self._thread: Optional[threading.Thread] = None

    def watch(self, context: TaskContext) -> Optional[int]:
        """Watch ``context`` until :meth:`end`; None when its deadline is never reached (inf, nan)."""
        deadline = context.deadline
        if deadline is None or not math.isfinite(deadline):
            return None
        with self._cond:
            key = next(self._ids)
            self._watches[key] = _Watch(deadline, context)
            while self._heap and self._heap[0][1] not in self._watches:  # ended watches: not what it waits for
                heapq.heappop(self._heap)
            earliest = not self._heap or deadline < self._heap[0][0]
            heapq.heappush(self._heap, (deadline, key))
            if self._thread is None or not self._thread.is_alive():  # never started, idle-ended or dead
                self._thread = threading.Thread(target=self._run, name="cw-time-limit", daemon=True)
                self._thread.start()
            elif earliest:
                self._cond.notify()
        return key

    def end(self, key: Optional[int]) -> None:
        """The watched code has returned: its limit no longer fires."""
        if key is None:
            return
        with self._cond:
            watch = self._watches.pop(key, None)
            if watch is not None:
                watch.ended = True
            if not self._watches:
                self._cond.notify()  # nothing left to watch: the thread may go idle and end
            if len(self._heap) > 2 * len(self._watches) + 64:  # drop the entries of ended watches
                self._heap = [(w.deadline, k) for k, w in self._watches.items()]
                heapq.heapify(self._heap)

    def problem(self) -> Optional[str]:
        """Why the watchdog cannot do its job (dead, or a limit long overdue), None when it can."""
        with self._cond:
            thread = self._thread
            overdue = min((w.deadline for w in self._watches.values()), default=None)
        if overdue is None:
            return None
        if thread is None or not thread.is_alive():
            return "the time-limit watchdog thread is not running"
        late = time.monotonic() - overdue
        if late > LATE_FIRE:
            return f"the time-limit watchdog is {late:.0f}s late firing a limit"
        return None

    def _due(self) -> Optional[List[_Watch]]:
        """Pop the watches whose deadline passed; wait for the next one when none did. None: end the
        thread (nothing watched for ``IDLE_EXIT`` seconds)."""
        with self._cond:
            if not self._watches:
                self._cond.wait(IDLE_EXIT)
                if not self._watches:
                    self._heap.clear()
                    self._thread = None  # under the lock: the next watch() starts a new thread
                    return None
            now = time.monotonic()
            due: List[_Watch] = []
            while self._heap and (self._heap[0][0] <= now or self._heap[0][1] not in self._watches):
                _, key = heapq.heappop(self._heap)
                watch = self._watches.pop(key, None)
                if watch is not None:
                    due.append(watch)
            if not due:
                wait = min(self._heap[0][0] - now, MAX_WAIT) if self._heap else MAX_WAIT
                self._cond.wait(max(wait, 0.0))
            return due

    def _run(self) -> None:
        while True:
            try:
                due = self._due()
            except Exception:  # noqa: BLE001 - the watchdog must outlive any bug; logged
                log.exception("time-limit watchdog: unexpected error; going on")
                threading.Event().wait(0.1)
                continue
            if due is None:
                return
            for watch in due:
                try:
                    _expire(watch.context)
                except Exception:  # noqa: BLE001 - one task's failure must not end every other limit
                    log.exception("time-limit watchdog: could not expire task %s", watch.context.task.task_id)


def _expire(context: TaskContext) -> None:
    task = context.task
    if context.expire():
        log.warning(
            "%s: task %s of workflow %s exceeded its time limit of %g s: reported FAILED; the worker "
            "sees TimeLimitExceeded at its next check_time_limit()/add_log(), and its slot stays held "
            "until it returns",
            task.task_type, task.task_id, task.workflow_instance_id, context.time_limit,
        )


watchdog = Watchdog()


class TimeLimitMiddleware(Middleware):
    """Enforces the task context's ``time_limit`` (the runner adds it, innermost, when the option is set)."""

    def execute(self, task: Task, call_next: CallNext) -> WorkerResult:
        context = current_context()
        if context is None or context.deadline is None:
            return call_next(task)
        key = watchdog.watch(context)
        try:
            result = call_next(task)
        finally:
            watchdog.end(key)
        if context.expired:
            assert context.deadline is not None
            log.warning(
                "%s: task %s returned %.1f s after its time limit of %g s; that result is discarded "
                "(the task was reported FAILED)",
                task.task_type, task.task_id, time.monotonic() - context.deadline, context.time_limit,
            )
            raise TimeLimitExceeded(context.exceeded_message())
        return result


__all__ = ["TimeLimitExceeded", "TimeLimitMiddleware", "Watchdog", "watchdog"]
