"""The pool-thread side of a runner: execute a task through the middleware chain, report it, and go
on with the task update-v2 hands back.

:class:`Execution` holds what running a task needs: the worker wrapped in its middleware (and in the
time limit, innermost, when that option is set), the runner's state (slots), statistics, reporter
and lease keeper. It owns no mutable state: a task's own state is its
:class:`~conductor_workers.worker.TaskContext`, which settles the result exactly once (the normal
report, or an early one over the time limit).

Every slot taken by the poll thread is given back here, in :meth:`Execution.work`'s ``finally``,
whatever happens; a task reported early (over its time limit) keeps its slot until its thread returns.
"""
from __future__ import annotations

import functools
import logging
import time
from typing import Optional, Sequence

import attrs

from ._lease import LeaseKeeper
from ._reporting import Reporter
from ._runner_state import Job, RunnerParts
from .errors import ExternalPayloadError, NonRetryableError
from .events import call_hook
from .middleware import Middleware, chain
from .models import Task, TaskResult, TaskResultStatus
from .payloads import TASK_INPUT
from .time_limit import TimeLimitMiddleware
from .worker import TaskContext, Worker, run_task

log = logging.getLogger("conductor_workers.runner")

_TIME_LIMIT = TimeLimitMiddleware()
_EXECUTION_COUNTER = {
    TaskResultStatus.COMPLETED: "executions_completed",
    TaskResultStatus.IN_PROGRESS: "executions_in_progress",
}


class Execution:
    """Runs one runner's tasks on its pool threads and hands their results to the reporter.

    :param layers: middleware around every execution, the first outermost.
    """

    def __init__(
        self,
        parts: RunnerParts,
        worker: Worker,
        reporter: Reporter,
        lease: LeaseKeeper,
        *,
        layers: Sequence[Middleware] = (),
    ) -> None:
        self.task_type = parts.task_type
        self._client, self._state, self._stats = parts.client, parts.state, parts.stats
        self._events = parts.events
        self._worker = worker
        self._reporter = reporter
        self._lease = lease
        self._handler = chain(worker, list(layers))
        self._limited_handler = chain(worker, [*layers, _TIME_LIMIT])  # time_limit set: innermost

    def work(self, task: Task, received: float, job: Job) -> None:
        """Execute ``task``, report it, and keep going with the next task update-v2 hands back."""
        stopping = self._state.claim(job)
        if stopping is None:  # the poll thread took it back (its submit failed)
            return
        next_task: Optional[Task] = task
        self._state.running_here(True)
        try:
            if stopping:  # polled, but not started yet: someone else can run it now
                self._reporter.give_back(task, self._state.options)
                next_task = None
            while next_task is not None:
                current, next_task = next_task, None
                result = self._execute(current, received)
                if result is not None:  # None: reported already, over its time limit
                    next_task = self._reporter.report(current, result, received)
                received = time.monotonic()
        except Exception:  # noqa: BLE001 - a pool thread must never lose a slot
            log.exception("%s: unexpected error while handling a task", self.task_type)
        finally:
            self._state.running_here(False)
            self._state.release()

    def _execute(self, task: Task, received: float) -> Optional[TaskResult]:
        """Run ``task`` through the middleware; its result, None when it was already reported."""
        events = self._events
        options = self._state.options
        if events is not None:
            call_hook(events.task_started, task)
        lease = options.lease_extend
        if lease:
            self._lease.track(task, received)
        started = time.monotonic()
        # past its response timeout (no lease extension), the slot counts as stuck
        due = None if lease or task.response_timeout_seconds <= 0 else (
            time.time() + task.response_timeout_seconds - (started - received))
        self._stats.started(task.task_id, due)
        worker_id = self._state.worker_id(options)
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
                functools.partial(self._settled_early, task, received, worker_id),
                time_limit_terminal=options.time_limit_terminal,
            )
            self._stats.watching(task.task_id, context)
            handler = self._handler if options.time_limit is None else self._limited_handler
            # run_task settles the context: from here on, an early report can no longer happen
            result, error = run_task(self._worker, task, worker_id=worker_id, handler=handler, context=context)
            if not context.expired:
                result = self._reporter.fit_output(result)
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
        reported_early = context is not None and context.expired
        if reported_early:
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

    def _settled_early(self, task: Task, received: float, worker_id: str, result: TaskResult) -> None:
        """The task's context was settled while ``execute`` still runs (its time limit, or
        ``report_now``): count it, stop extending its lease, and have it reported at once."""
        result = attrs.evolve(result, worker_id=result.worker_id or worker_id)
        self._stats.count("executions_failed")
        self._lease.untrack(task.task_id)
        self._reporter.report_early(task, result, received)


__all__ = ["Execution"]
