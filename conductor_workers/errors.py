"""Every exception conductor_workers raises, under one root: :class:`ConductorError`.

(One exception stands apart on purpose: :class:`TimeLimitExceeded`, raised inside a worker's own
thread, derives from ``BaseException`` so that a worker's ``except Exception`` cannot swallow it.)

Foreign exceptions (``requests``, ``urllib3``, ``json``) are translated into these exactly once, at
the HTTP boundary in :mod:`conductor_workers._http`; nothing above that layer sees them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from .models import Workflow


class ConductorError(Exception):
    """Base class for every error raised by conductor_workers."""


class TransportError(ConductorError):
    """The server could not be reached, or the connection broke before an answer arrived."""

    def __init__(self, message: str, *, method: str = "", url: str = "") -> None:
        super().__init__(message)
        self.method = method
        self.url = url


class ResponseTooLargeError(ConductorError):
    """An answer's body is larger than the caller allows; it was not read past ``limit`` bytes.

    ``size`` is the length the answer announced (``Content-Length``), None when it announced none
    and the reading stopped after ``limit`` bytes.
    """

    def __init__(self, message: str, *, limit: int, size: Optional[int] = None, url: str = "") -> None:
        super().__init__(message)
        self.limit = limit
        self.size = size
        self.url = url


class InvalidResponseError(ConductorError):
    """The server answered 2xx with a body that is not what the endpoint promises (e.g. bad JSON)."""

    def __init__(self, message: str, *, status_code: int, body: str = "") -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body


class APIError(ConductorError):
    """The server answered with a non-2xx status.

    ``message`` is the server's own ``ErrorResponse.message`` when it sent one; ``validation_errors``
    is its list of ``{"path", "message", "invalidValue"}`` entries; ``retryable`` says whether the
    same request may succeed later (5xx, 429, or the server said so); ``retry_after`` is the
    server's ``Retry-After`` on a 429/503, in seconds (capped at 30), or None.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        method: str = "",
        url: str = "",
        server_message: Optional[str] = None,
        validation_errors: Sequence[Mapping[str, Any]] = (),
        retryable: bool = False,
        body: str = "",
        error_code: Optional[str] = None,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.method = method
        self.url = url
        self.server_message = server_message
        self.validation_errors = list(validation_errors)
        self.retryable = retryable
        self.body = body
        self.error_code = error_code
        self.retry_after = retry_after


class NotFoundError(APIError):
    """The resource does not exist (404, or an empty answer where the server means "nothing")."""


class ConflictError(APIError):
    """The request conflicts with the resource's state (409), e.g. terminating a completed workflow."""


class AuthenticationError(APIError):
    """Credentials were refused (401/403), or the server demands credentials we do not have."""


class EndpointNotSupportedError(APIError):
    """The server does not implement this endpoint (405, or a 404 that is not an ErrorResponse)."""


class ExternalPayloadError(ConductorError):
    """A payload in external storage could not be read or written.

    ``permanent`` is True when trying again cannot help (e.g. the server's storage has no URI for
    clients, or the payload is missing); a task whose input it is fails with
    ``FAILED_WITH_TERMINAL_ERROR`` then, and with ``FAILED`` (retried by the server) otherwise.
    """

    def __init__(self, message: str, *, path: str = "", permanent: bool = False) -> None:
        super().__init__(message)
        self.path = path
        self.permanent = permanent


class InvalidRequestError(ConductorError, ValueError):
    """A request could not be built, e.g. its body is not JSON-serialisable; nothing was sent."""


class InvalidOptionError(ConductorError, ValueError):
    """An option, argument or environment value was rejected; nothing was changed."""


class NonRetryableError(ConductorError):
    """Raise from a worker to fail its task with ``FAILED_WITH_TERMINAL_ERROR`` (no server retry)."""


class WorkflowTimeoutError(ConductorError, TimeoutError):
    """A workflow did not reach a terminal status in time; ``workflow`` is how it was last seen."""

    def __init__(self, message: str, workflow: "Workflow") -> None:
        super().__init__(message)
        self.workflow = workflow


class TimeLimitExceeded(BaseException):
    """A task ran past its ``time_limit``; raised inside the worker's thread to interrupt it.

    Deliberately outside :class:`ConductorError` and ``Exception``, like ``KeyboardInterrupt``: a
    worker's ``except Exception`` must not swallow it. Its task has already been reported FAILED
    when a worker sees it.
    """


__all__ = [
    "APIError",
    "AuthenticationError",
    "ConductorError",
    "ConflictError",
    "EndpointNotSupportedError",
    "ExternalPayloadError",
    "InvalidOptionError",
    "InvalidRequestError",
    "InvalidResponseError",
    "NonRetryableError",
    "NotFoundError",
    "ResponseTooLargeError",
    "TimeLimitExceeded",
    "TransportError",
    "WorkflowTimeoutError",
]
