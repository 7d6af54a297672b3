"""conductor_workers: thread-based workers and a blocking client for the Conductor workflow engine.

Public names are imported on first use (PEP 562), so ``import conductor_workers`` stays cheap and
``requests`` is only loaded by code that talks HTTP.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import errors as _errors
from ._version import __version__

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .client import ConductorClient
    from .config import Configuration
    from .errors import (
        APIError,
        AuthenticationError,
        ConductorError,
        ConflictError,
        EndpointNotSupportedError,
        InvalidOptionError,
        InvalidRequestError,
        InvalidResponseError,
        NonRetryableError,
        NotFoundError,
        TransportError,
    )
    from .events import TaskEvents, UpdateFailureHook
    from .middleware import Middleware
    from .executor import WorkflowExecutor
    from .manager import TaskManager
    from .options import PollingOptions
    from .runner import PollGate, TaskRunner
    from .status import RunnerStatus
    from .worker import (
        FunctionWorker,
        TaskContext,
        Worker,
        add_log,
        check_time_limit,
        current_context,
        current_task,
        time_remaining,
        worker_task,
    )
    from .models import (
        PollData,
        SignalResponse,
        StartWorkflowRequest,
        Task,
        TaskDef,
        TaskExecLog,
        TaskResult,
        TaskResultStatus,
        TaskStatus,
        Workflow,
        WorkflowDef,
        WorkflowStatus,
        WorkflowStatusSummary,
        WorkflowTask,
    )

_EXPORTS = {
    "ConductorClient": "client",
    "Configuration": "config",
    "WorkflowExecutor": "executor",
    "TaskEvents": "events",
    "Middleware": "middleware",
    "FunctionWorker": "worker",
    "TaskContext": "worker",
    "current_context": "worker",
    "time_remaining": "worker",
    "PollGate": "runner",
    "RunnerStatus": "status",
    "UpdateFailureHook": "events",
    "TaskManager": "manager",
    "PollingOptions": "options",
    "TaskRunner": "runner",
    "Worker": "worker",
    "add_log": "worker",
    "check_time_limit": "worker",
    "current_task": "worker",
    "worker_task": "worker",
}
_EXPORTS.update(dict.fromkeys(_errors.__all__, "errors"))  # errors.py is stdlib-only: cheap to load
_EXPORTS.update(
    dict.fromkeys(
        [
            "PollData",
            "SignalResponse",
            "StartWorkflowRequest",
            "Task",
            "TaskDef",
            "TaskExecLog",
            "TaskResult",
            "TaskResultStatus",
            "TaskStatus",
            "Workflow",
            "WorkflowDef",
            "WorkflowStatus",
            "WorkflowStatusSummary",
            "WorkflowTask",
        ],
        "models",
    )
)

__all__ = sorted(_EXPORTS) + ["__version__"]

# No NullHandler on purpose: with no logging configured, Python prints WARNING and above to stderr,
# so a worker that cannot reach its server is visible. The runners log state changes (first
# failure, a reminder once a minute, recovery), not every retry.


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_EXPORTS))
