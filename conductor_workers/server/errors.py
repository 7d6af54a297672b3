"""Errors of the engine: the client errors that the HTTP layer answers with a Conductor
``ErrorResponse`` (each with its HTTP status), bean-validation violations, and ``_Terminate``, which
ends a workflow from inside the decider."""

from __future__ import annotations

import json
from typing import Any, List, Optional

from .model import JSON

VALIDATION_FAILED = "Validation failed, check below errors for detail."


class EngineError(Exception):
    """An error with an HTTP status; the HTTP layer turns it into an ``ErrorResponse``."""

    status = 500

    def __init__(self, message: str, validation_errors: Optional[List[JSON]] = None) -> None:
        super().__init__(message)
        self.message = message
        self.validation_errors = validation_errors


class BadRequest(EngineError):
    status = 400


class NotFound(EngineError):
    status = 404


class Conflict(EngineError):
    status = 409


class ValidationFailed(BadRequest):
    """A bean-validation failure: 400 with a ``validationErrors`` list."""

    def __init__(self, errors: List[JSON]) -> None:
        super().__init__(VALIDATION_FAILED, errors)


def _violation(path: str, message: str, value: Any = None) -> JSON:
    error: JSON = {"path": path, "message": message}
    if value is not None:
        error["invalidValue"] = value if isinstance(value, str) else json.dumps(value)
    return error


class _Terminate(Exception):
    """Raised inside the decider to end a workflow (TerminateWorkflowException)."""

    def __init__(self, reason: str, status: str = "FAILED", task: Optional[JSON] = None,
                 output: Optional[JSON] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.task = task
        self.output = output  # TERMINATE: the workflow's output
