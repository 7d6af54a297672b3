"""The pool-thread side of a runner: execute a task through the middleware chain, report it, and go
on with the task update-v2 hands back. A mixin of :class:`~conductor_workers.runner.TaskRunner`.

Every slot taken by the poll thread is given back here, in ``_work``'s ``finally``, whatever
happens; a task reported early (over its time limit) keeps its slot until its thread returns.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Optional

import attrs

from ._reporting import Reporting
from .errors import ExternalPayloadError, NonRetryableError
from .events import call_hook
from .models import Task, TaskResult, TaskResultStatus
from .payloads import TASK_INPUT
from .worker import Handler, TaskContext, Worker, run_task

log = logging.getLogger("conductor_workers.runner")

_current = threading.local()  # .runner: the TaskRunner whose task this pool thread is running
_EXECUTION_COUNTER = {
    TaskResultStatus.COMPLETED: "executions_completed",
    TaskResultStatus.IN_PROGRESS: "executions_in_progress",
}


class Executing(Reporting):
    """Running tasks on pool threads; the attributes below are the runner's."""

    worker: Worker
    _handler: Handler
    _limited_handler: Handler

    def _poke(self) -> None:
        raise NotImplementedError  # the runner's

    def _work(self, task: Task, received: float, job: "_Job") -> None:
        """Execute ``task``, report it, and keep going with the next task update-v2 hands back."""
        with self._cond:
            if job.cancelled:  # the poll thread took it back (its submit failed)
                return
            job.started = True
            stopping = self._stopping
        next_task: Optional[Task] = task
        _current.runner = self
        try:
            if stopping:  # polled, but not started yet: someone else can run it now
                self._give_back(task, self._options)
                next_task = None
            while next_task is not None:
                current, next_task = next_task, None
                result = self._execute(current, received)
                if result is not None:  # None: reported already, over its time limit
                    next_task = self._report(current, result, received)
                received = time.monotonic()
        except Exception:  # noqa: BLE001 - a pool thread must never lose a slot
            log.exception("%s: unexpected error while handling a task", self.task_type)
        finally:
            _current.runner = None
            with self._cond:
                self._in_flight -= 1
                self._poke()

    def _execute(self, task: Task, received: float) -> Optional[TaskResult]:
        """Run ``task`` through the middleware; its result, None when it was already reported."""
        events = self._events
        options = self._options
        if events is not None:
            call_hook(events.task_started, task)
        lease = options.lease_extend
        if lease:
            self._lease.track(task, received)
        started = time.monotonic()
        if not lease and task.response_timeout_seconds > 0:  # past it, the slot counts as stuck
            self._stats.response_due(task.task_id, time.time() + task.response_timeout_seconds - (started - received))
        worker_id = options.worker_id or self._default_worker_id
        context: Optional[TaskContext] = None
        try:
            if task.external_input_payload_storage_path and not task.input_data:
                # bounded by download_timeout, and by the time limit when shorter (see payloads)
                path = task.external_input_payload_storage_path
                task = attrs.evolve(
                    task, input_data=self._client.payloads.read(path, TASK_INPUT, timeout=options.time_limit)
                )
                if events is not None:
                    call_hook(events.external_payload_used, self.task_type, "READ", TASK_INPUT)
            context = TaskContext(
                task,
                options.time_limit,
                functools.partial(self._report_early, task, received=received, worker_id=worker_id),
                time_limit_terminal=options.time_limit_terminal,
            )
            handler = self._handler if options.time_limit is None else self._limited_handler
            result, error = run_task(self.worker, task, worker_id=worker_id, handler=handler, context=context)
            result = self._fit_output(result)
        except ExternalPayloadError as exc:  # never run a worker on an input it does not have
            error = exc
            result = TaskResult.failed(
                f"not executed: {exc}",
                terminal=exc.permanent,
                task_id=task.task_id,
                workflow_instance_id=task.workflow_instance_id,
                worker_id=worker_id,
            )
        finally:
            if lease:
                self._lease.untrack(task.task_id)
            self._stats.ended(task.task_id)
        reported_early = context is not None and not context.settle()
        if reported_early:
            self._stats.overrun_ended(task.task_id)
            assert context is not None and context.early_result is not None
            log.debug("%s: task %s returned after it was reported over its time limit", self.task_type, task.task_id)
        elif error is not None and not isinstance(error, NonRetryableError):
            log.warning("%s: task %s raised %s: %s", self.task_type, task.task_id, type(error).__name__, error)
        if not reported_early:
            self._stats.count(_EXECUTION_COUNTER.get(result.status, "executions_failed"))
        if events is not None:
            if error is not None:
                call_hook(events.task_failed, task, error)
            call_hook(events.task_finished, task, result, time.monotonic() - started)
        return None if reported_early else result


class _Job:
    """Who owns a submitted task's slot: the pool thread that starts it, or the poll thread taking it back."""

    __slots__ = ("started", "cancelled")

    def __init__(self) -> None:
        self.started = False
        self.cancelled = False


__all__ = ["Executing"]
