"""Event hooks: subclass :class:`TaskEvents` and override what you need.

Hooks run on the thread where the event happens (a pool thread, or the poll thread for polls), so
keep them cheap; an exception raised by a hook is logged and otherwise ignored. A
:class:`~conductor_workers.middleware.Middleware` is a ``TaskEvents`` that can also wrap executions.
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Optional, Sequence

from .models import Task, TaskResult

log = logging.getLogger(__name__)


class TaskEvents:
    """No-op hooks for the life of a task in a runner."""

    def polled(self, task_type: str, count: int, duration: float) -> None:
        """A poll returned ``count`` tasks after ``duration`` seconds."""

    def poll_failed(self, task_type: str, error: BaseException) -> None:
        """A poll failed; the runner backs off and polls again."""

    def task_started(self, task: Task) -> None:
        """``execute`` is about to run ``task``."""

    def task_finished(self, task: Task, result: TaskResult, duration: float) -> None:
        """``execute`` returned (or raised; then ``result`` is the FAILED result) after ``duration`` s."""

    def task_failed(self, task: Task, error: BaseException) -> None:
        """``execute`` raised ``error``."""

    def task_updated(self, task: Task, result: TaskResult, duration: float) -> None:
        """The server accepted ``result`` after ``duration`` seconds (retries included)."""

    def update_failed(self, task: Task, result: TaskResult, error: BaseException) -> None:
        """``result`` could not be reported, after every retry: it is lost to the server."""

    def admission_changed(self, task_type: str, limit: int, reason: str) -> None:
        """With an admission gate: the slots ``task_type`` may hold changed to ``limit`` (0: polling
        is held), for ``reason``."""

    def external_payload_used(self, task_type: str, operation: str, payload_type: str) -> None:
        """A payload went through external storage: ``operation`` READ (an input was downloaded) or
        WRITE (an output was uploaded); ``payload_type`` TASK_INPUT or TASK_OUTPUT. Metrics count
        these as ``external_payload_used_total``."""


_HOOKS = (
    "polled", "poll_failed", "task_started", "task_finished", "task_failed", "task_updated", "update_failed",
    "admission_changed", "external_payload_used",
)


class _AllEvents(TaskEvents):
    """Several :class:`TaskEvents` as one: each hook calls theirs in order, each guarded by :func:`call_hook`."""

    def __init__(self, members: Sequence[TaskEvents]) -> None:
        for name in _HOOKS:
            # Only members that override a hook are called for it.
            hooks = tuple(
                getattr(member, name) for member in members
                if getattr(type(member), name, None) is not getattr(TaskEvents, name)
            )
            setattr(self, name, functools.partial(_call_each, hooks))


def _call_each(hooks: Sequence[Callable[..., Any]], *args: Any) -> None:
    for hook in hooks:
        call_hook(hook, *args)


def combine(members: Sequence[Optional[TaskEvents]]) -> Optional[TaskEvents]:
    """One TaskEvents for several (None for none, the member itself for one)."""
    present = [member for member in members if member is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    return _AllEvents(present)


UpdateFailureHook = Callable[[Task, TaskResult, BaseException], Any]


def call_hook(hook: Optional[Callable[..., Any]], *args: Any) -> None:
    """Call a user hook; never let it break the runner."""
    if hook is None:
        return
    try:
        hook(*args)
    except Exception:
        log.exception("event hook %r raised; ignored", hook)


__all__ = ["TaskEvents", "UpdateFailureHook"]  # call_hook(), combine(): the runtime's
