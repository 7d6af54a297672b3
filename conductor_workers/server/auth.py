"""Orkes-style token authentication: ``POST /api/token`` issues tokens for one key id and secret,
and every other ``/api`` call must carry a valid, unexpired one in ``X-Authorization`` (TLS, the
other half of a secured server, is the HTTP server's: see :mod:`.http`).

The payload storage (``/api/external/local/{key}``) also takes a signed location instead of a token,
as S3 takes a pre-signed URL: ``GET /api/{tasks,workflow}/externalstoragelocation`` (which needs the
token) hands out URIs with ``expires`` (epoch seconds, one token TTL away) and ``signature`` (an
HMAC-SHA256, with a key drawn at start, of the operation, the key and the expiry). Clients download
such URIs without their credentials, so this is what lets a worker read an externalized input.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from typing import Dict, List, Optional
from urllib.parse import urlencode

from .model import now_ms
from .wire import Request, Response, error_response, json_response


class TokenAuth:
    """``POST /api/token`` and the ``X-Authorization`` check, as Orkes Conductor does it."""

    def __init__(self, key_id: str, key_secret: str, ttl: float) -> None:
        self._key = (key_id, key_secret)
        self._ttl = ttl
        self._tokens: Dict[str, float] = {}  # token -> monotonic expiry
        self._lock = threading.Lock()  # guards _tokens
        self._signing_key = secrets.token_bytes(32)  # for storage locations; never leaves the process

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

    def sign(self, key: str, operation: str) -> str:
        """The query that lets a payload-storage URI be used for ``operation`` (READ, WRITE) on ``key``."""
        expires = int(time.time() + self._ttl) + 1
        return urlencode({"expires": expires, "signature": self._signature(key, operation, expires)})

    def check_signed(self, key: str, operation: str, query: Dict[str, List[str]]) -> bool:
        """Whether ``query`` holds a signature for ``operation`` on ``key`` that has not expired."""
        expires, signature = query.get("expires", [""])[-1], query.get("signature", [""])[-1]
        if not expires.isdigit() or int(expires) < time.time():
            return False
        return hmac.compare_digest(signature, self._signature(key, operation, int(expires)))

    def _signature(self, key: str, operation: str, expires: int) -> str:
        message = "%s\n%s\n%d" % (operation.upper(), key, expires)
        return hmac.new(self._signing_key, message.encode("utf-8"), hashlib.sha256).hexdigest()

    def expire_all(self) -> None:
        with self._lock:
            for token in self._tokens:
                self._tokens[token] = 0.0

    @staticmethod
    def _denied(code: str, message: str) -> Response:
        return json_response(401, {"message": message, "error": code, "timestamp": now_ms()})
