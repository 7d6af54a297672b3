"""Orkes-style token authentication: ``POST /api/token`` issues tokens for one key id and secret,
and every other ``/api`` call must carry a valid, unexpired one in ``X-Authorization`` (TLS, the
other half of a secured server, is the HTTP server's: see :mod:`.http`)."""

from __future__ import annotations

import secrets
import threading
import time
from typing import Dict, Optional

from .model import now_ms
from .wire import Request, Response, error_response, json_response


class TokenAuth:
    """``POST /api/token`` and the ``X-Authorization`` check, as Orkes Conductor does it."""

    def __init__(self, key_id: str, key_secret: str, ttl: float) -> None:
        self._key = (key_id, key_secret)
        self._ttl = ttl
        self._tokens: Dict[str, float] = {}  # token -> monotonic expiry
        self._lock = threading.Lock()

    def issue(self, request: Request) -> Response:
        body = request.json_object("GenerateTokenRequest")
        if (body.get("keyId"), body.get("keySecret")) != self._key:
            return error_response(401, "Invalid credentials: unknown keyId or keySecret")
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = time.monotonic() + self._ttl
        return json_response(200, {"token": token})

    def check(self, header: Optional[str]) -> Optional[Response]:
        """None when ``header`` holds a valid token, else the 401 response to send."""
        if not header:
            return self._denied("INVALID_TOKEN", "Token cannot be null or empty")
        with self._lock:
            expiry = self._tokens.get(header)
        if expiry is None:
            return self._denied("INVALID_TOKEN", "Invalid token")
        if time.monotonic() >= expiry:
            return self._denied("EXPIRED_TOKEN", "Token expired")
        return None

    def expire_all(self) -> None:
        with self._lock:
            for token in self._tokens:
                self._tokens[token] = 0.0

    @staticmethod
    def _denied(code: str, message: str) -> Response:
        return json_response(401, {"message": message, "error": code, "timestamp": now_ms()})
