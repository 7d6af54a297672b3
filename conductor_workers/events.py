"""Event hooks: subclass :class:`TaskEvents` and override what you need.

Hooks run on the thread where the event happens (a pool thread, or the poll thread for polls), so
keep them cheap; an exception raised by a hook is logged and otherwise ignored. Metrics and tracing
build on these.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Optional

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

    def update_failed(self, task: Task, result: TaskResult, error: BaseException) -> None:
        """``result`` could not be reported, after every retry: it is lost to the server."""

    def external_payload_used(self, task_type: str, operation: str, payload_type: str) -> None:
        """A payload went through external storage: ``operation`` READ (an input was downloaded) or
        WRITE (an output was uploaded); ``payload_type`` TASK_INPUT or TASK_OUTPUT. Metrics count
        these as ``external_payload_used_total``."""


UpdateFailureHook = Callable[[Task, TaskResult, BaseException], Any]


def call_hook(hook: Optional[Callable[..., Any]], *args: Any) -> None:
    """Call a user hook; never let it break the runner."""
    if hook is None:
        return
    try:
        hook(*args)
    except Exception:
        log.exception("event hook %r raised; ignored", hook)


__all__ = ["TaskEvents", "UpdateFailureHook", "call_hook"]
