"""The ``time_limit`` option, written as a middleware: a task that runs too long fails at once.

When a task has run ``time_limit`` seconds, a watchdog thread (one per process, started on first
use) does three things, in this order and under one lock:

1. settles the task with a FAILED result (FAILED_WITH_TERMINAL_ERROR with ``time_limit_terminal``)
   whose reason names the limit, through :meth:`TaskContext.report_now`: the runner reports it
   at once, so the workflow moves on and the server's retry policy applies;
2. raises :class:`~conductor_workers.TimeLimitExceeded` in the worker's thread (CPython's
   asynchronous exception). That interrupts Python code at its next bytecode; code blocked in C (a
   socket read, ``time.sleep``) sees it only when the call returns;
3. nothing else: the task's slot stays taken until the worker's thread really returns, so the
   concurrency bound holds; ``TaskRunner.status()`` lists such tasks as overrunning, and whatever
   the worker returns late is discarded and logged, never reported over the failure.

Workers that prefer to stop on their own read :func:`conductor_workers.time_remaining`.
"""
from __future__ import annotations

import ctypes
import heapq
import itertools
import logging
import threading
import time
from typing import Dict, List, Optional, Tuple

from .errors import TimeLimitExceeded
from .middleware import CallNext, Middleware
from .models import Task, TaskResult
from .worker import TaskContext, WorkerResult, current_context

log = logging.getLogger(__name__)


def _set_async_exc(thread_id: int, exc: Optional[type]) -> bool:
    """Raise ``exc`` in the thread ``thread_id`` at its next bytecode (None: clear a pending one)."""
    set_async_exc = getattr(getattr(ctypes, "pythonapi", None), "PyThreadState_SetAsyncExc", None)
    if set_async_exc is None:  # not CPython
        return False
    return bool(set_async_exc(ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None))


class _Watch:
    __slots__ = ("deadline", "context", "thread_id", "fired", "ended")

    def __init__(self, deadline: float, context: TaskContext, thread_id: int) -> None:
        self.deadline = deadline
        self.context = context
        self.thread_id = thread_id
        self.fired = False
        self.ended = False


class _Watchdog:
    """One thread that fires the watches whose deadline passed."""

    def __init__(self) -> None:
        self._cond = threading.Condition()  # guards everything below
        self._watches: Dict[int, _Watch] = {}
        self._heap: List[Tuple[float, int]] = []
        self._ids = itertools.count()
        self._thread: Optional[threading.Thread] = None

    def watch(self, context: TaskContext) -> Tuple[int, _Watch]:
        assert context.deadline is not None
        watch = _Watch(context.deadline, context, threading.get_ident())
        with self._cond:
            key = next(self._ids)
            self._watches[key] = watch
            earliest = not self._heap or watch.deadline < self._heap[0][0]
            heapq.heappush(self._heap, (watch.deadline, key))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="cw-time-limit", daemon=True)
                self._thread.start()
            elif earliest:
                self._cond.notify()
        return key, watch

    def end(self, key: int, watch: _Watch) -> bool:
        """The watched code has returned (call on its thread); True when the watch had fired."""
        with self._cond:
            watch.ended = True
            self._watches.pop(key, None)
            if len(self._heap) > 2 * len(self._watches) + 64:  # drop the entries of ended watches
                self._heap = [(w.deadline, k) for k, w in self._watches.items()]
                heapq.heapify(self._heap)
            if watch.fired:
                _set_async_exc(watch.thread_id, None)  # not raised yet: it must not escape later
            return watch.fired

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                while self._heap and (self._heap[0][0] <= now or self._heap[0][1] not in self._watches):
                    _, key = heapq.heappop(self._heap)
                    watch = self._watches.pop(key, None)
                    if watch is not None and not watch.ended:
                        self._fire(watch)
                wait = self._heap[0][0] - now if self._heap else None
                self._cond.wait(wait)

    def _fire(self, watch: _Watch) -> None:
        """Settle the task as failed and interrupt its thread (caller holds ``_cond``)."""
        context = watch.context
        task = context.task
        reason = (
            f"time limit exceeded: the task ran longer than its time_limit of {context.time_limit:g} s"
        )
        result = TaskResult.failed(reason, terminal=context.time_limit_terminal)
        if not context.report_now(result):
            return  # settled otherwise in the meantime
        watch.fired = True
        if not _set_async_exc(watch.thread_id, TimeLimitExceeded):
            log.warning("task %s: cannot interrupt its thread on this Python; it runs on", task.task_id)
        log.warning(
            "%s: task %s of workflow %s exceeded its time limit of %g s: reported FAILED; its thread was "
            "asked to stop",
            task.task_type, task.task_id, task.workflow_instance_id, context.time_limit,
        )


_watchdog = _Watchdog()


class TimeLimitMiddleware(Middleware):
    """Enforces the task context's ``time_limit`` (the runner adds it, innermost, when the option is set)."""

    def execute(self, task: Task, call_next: CallNext) -> WorkerResult:
        context = current_context()
        if context is None or context.deadline is None:
            return call_next(task)
        key, watch = _watchdog.watch(context)
        exceeded = f"the task ran longer than its time_limit of {context.time_limit:g} s"
        try:
            result = call_next(task)
        except TimeLimitExceeded:
            if not _end(key, watch):
                raise  # the worker's own
            raise TimeLimitExceeded(exceeded) from None
        except BaseException:
            _end(key, watch)  # fired or not, the runner decides what to report
            raise
        if _end(key, watch):
            log.warning(
                "%s: task %s returned %.1f s after its time limit of %g s; that result is discarded "
                "(the task was reported FAILED)",
                task.task_type, task.task_id, time.monotonic() - watch.deadline, context.time_limit,
            )
            raise TimeLimitExceeded(exceeded)
        return result


def _end(key: int, watch: _Watch) -> bool:
    """End the watch; an interruption that lands while ending it is caught and the end retried."""
    while True:
        try:
            return _watchdog.end(key, watch)
        except TimeLimitExceeded:
            continue


__all__ = ["TimeLimitExceeded", "TimeLimitMiddleware"]
