"""Middleware: code that wraps every execution of a worker and observes its polls and reports.

A :class:`Middleware` is a :class:`~conductor_workers.TaskEvents` (the observing hooks: ``polled``,
``poll_failed``, ``task_started``, ``task_finished``, ``task_failed``, ``task_updated``,
``update_failed``, ``external_payload_used``) with one more method, :meth:`Middleware.execute`,
which wraps the execution::

    class Timing(Middleware):
        def execute(self, task, call_next):
            started = time.monotonic()                  # before: change the task, or refuse it
            result = call_next(task)                    # the next middleware, then the worker
            log.info("%s took %.3fs", task.task_type, time.monotonic() - started)
            return result                               # after: change the result

    manager = TaskManager(client, workers, middleware=[Timing(), MetricsMiddleware()])

The first middleware in the list is the outermost. ``call_next`` returns a
:class:`~conductor_workers.TaskResult`, or raises what the worker raised; a middleware may catch
that, return a result of its own, or raise (``NonRetryableError`` fails the task without retries).
Whatever escapes the outermost middleware fails the task with its message as the reason, exactly as
an exception from the worker does, and the slot and the report are never lost. ``execute`` runs on
the task's pool thread, inside the task's context (:func:`~conductor_workers.current_task`,
:func:`~conductor_workers.add_log` work there).

Built on this protocol: the time limit (:mod:`conductor_workers.time_limit`, innermost, added when a
worker's ``time_limit`` option is set), the Prometheus metrics
(:class:`conductor_workers.metrics.MetricsMiddleware`) and OpenTelemetry tracing
(:class:`conductor_workers.tracing.TracingMiddleware`).
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

from .events import TaskEvents
from .models import Task, TaskResult
from .worker import Handler, Worker, WorkerResult, to_task_result

CallNext = Callable[[Task], TaskResult]


class Middleware(TaskEvents):
    """Wraps executions (:meth:`execute`) and observes polls, executions and reports (the hooks)."""

    def execute(self, task: Task, call_next: CallNext) -> WorkerResult:
        """Run ``call_next(task)`` and return its result, changed or not, or a result of your own."""
        return call_next(task)


def wraps_execution(middleware: Middleware) -> bool:
    """Whether ``middleware`` overrides :meth:`Middleware.execute` (the others cost nothing per task)."""
    return type(middleware).execute is not Middleware.execute


def _worker_handler(worker: Worker, task: Task) -> TaskResult:
    return to_task_result(worker.execute(task))


def _layer(middleware: Middleware, call_next: Handler, task: Task) -> TaskResult:
    return to_task_result(middleware.execute(task, call_next))


def chain(worker: Worker, middleware: Sequence[Middleware]) -> Handler:
    """``worker.execute`` wrapped in ``middleware``, the first one outermost, as one callable."""
    handler: Handler = functools.partial(_worker_handler, worker)
    for layer in reversed([m for m in middleware if wraps_execution(m)]):
        handler = functools.partial(_layer, layer, handler)
    return handler


__all__ = ["CallNext", "Middleware", "wraps_execution"]  # chain(): the runtime's
