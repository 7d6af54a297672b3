"""The HTTP front end's wire format: :class:`Request` (query parameters and JSON bodies, parsed
strictly), :class:`Response` and the Conductor ``ErrorResponse``, and the :class:`Router` that maps
``METHOD /api/path/{param}`` to a handler."""

from __future__ import annotations

import json
import re
import socket
from typing import Any, Callable, Dict, List, Optional, Pattern, Tuple
from urllib.parse import unquote

from .errors import BadRequest

_HOST = socket.gethostname()


class Response:
    """A complete HTTP response: status, content type and body bytes."""

    __slots__ = ("status", "body", "content_type", "close")

    def __init__(self, status: int, body: bytes = b"", content_type: Optional[str] = None) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.close = False


def json_response(status: int, obj: Any) -> Response:
    return Response(status, json.dumps(obj, separators=(",", ":")).encode(), "application/json")


def text_response(text: Optional[str]) -> Response:
    return Response(200, (text or "").encode(), "text/plain;charset=UTF-8")


def error_body(status: int, message: str, validation_errors: Optional[List[Any]] = None) -> Dict[str, Any]:
    """A Conductor ``ErrorResponse`` (validation failures carry no ``instance``, as on the server)."""
    body: Dict[str, Any] = {"status": status, "message": message}
    if validation_errors is None:
        body["instance"] = _HOST
    body["retryable"] = False
    if validation_errors is not None:
        body["validationErrors"] = validation_errors
    return body


def error_response(status: int, message: str, validation_errors: Optional[List[Any]] = None) -> Response:
    return json_response(status, error_body(status, message, validation_errors))


class Request:
    """What a route handler sees: path parameters, query parameters and the raw body."""

    __slots__ = ("method", "path", "params", "query", "body", "headers")

    def __init__(self, method: str, path: str, query: Dict[str, List[str]], body: bytes,
                 headers: Any) -> None:
        self.method = method
        self.path = path
        self.params: Dict[str, str] = {}
        self.query = query
        self.body = body
        self.headers = headers

    # Query parameters ------------------------------------------------------------------------
    def arg(self, name: str, default: Optional[str] = None) -> Optional[str]:
        values = self.query.get(name)
        return values[0] if values else default

    def int_arg(self, name: str, default: Optional[int] = None) -> Optional[int]:
        value = self.arg(name)
        if value is None or value == "":
            return default
        try:
            number = int(value)
        except ValueError:
            raise BadRequest("Invalid value %r for query parameter %s: expected an integer" % (value, name))
        if not -(2 ** 31) <= number < 2 ** 31:  # a Java int, as the real server binds it
            raise BadRequest("Invalid value %r for query parameter %s: out of range" % (value, name))
        return number

    def bool_arg(self, name: str, default: bool) -> bool:
        value = self.arg(name)
        if value is None or value == "":
            return default
        if value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise BadRequest("Invalid value %r for query parameter %s: expected true or false" % (value, name))

    # Body ---------------------------------------------------------------------------------------
    def json(self, required: bool = True) -> Any:
        if not self.body.strip():
            if required:
                raise BadRequest("Required request body is missing")
            return None
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as error:
            raise BadRequest("Malformed JSON request body: %s" % error)
        except RecursionError:
            raise BadRequest("Malformed JSON request body: nested too deeply") from None

    def json_object(self, what: str) -> Dict[str, Any]:
        body = self.json()
        if not isinstance(body, dict):
            raise BadRequest("Invalid request body: expected a JSON object (%s)" % what)
        return body

    def text(self) -> str:
        try:
            return self.body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("Request body is not valid UTF-8")


Handler = Callable[[Request], Response]


class Router:
    """A small ordered routing table: ``METHOD /api/path/{param}`` → handler."""

    def __init__(self) -> None:
        self._routes: List[Tuple[str, Pattern[str], Handler]] = []

    def add(self, method: str, template: str, handler: Handler) -> None:
        pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
        self._routes.append((method, re.compile("^" + pattern + "$"), handler))

    def resolve(self, method: str, path: str) -> Tuple[Optional[Handler], Dict[str, str], bool]:
        """The handler and path parameters; the flag says whether the path exists at all."""
        path_known = False
        for route_method, pattern, handler in self._routes:
            match = pattern.match(path)
            if match is None:
                continue
            path_known = True
            if route_method == method:
                return handler, {key: unquote(value) for key, value in match.groupdict().items()}, True
        return None, {}, path_known
