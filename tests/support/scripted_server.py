"""A tiny scripted HTTP server (stdlib only) for the client's error-mapping, auth and worker tests.

Used by tests/http's ``conftest.py`` (fixtures) and by test modules (``Reply``), as
``from support.scripted_server import ...``.

``ScriptedServer`` answers each ``(method, path)`` from a script: a list of :class:`Reply` objects
(consumed in order, the last one repeated) or a callable ``(request) -> Reply``. Every request is
recorded, so tests can count what the client really sent. Paths are matched without the query
string; a proxy-style absolute request line (``GET http://host/api/x``) is matched on its path too.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union
from urllib.parse import parse_qs, urlsplit


PROXY_VARIABLES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
)


class Reply:
    """One scripted answer."""

    def __init__(
        self,
        status: int = 200,
        body: Union[None, bytes, str, Any] = None,
        *,
        headers: Optional[Mapping[str, str]] = None,
        delay: float = 0.0,
        content_type: Optional[str] = None,
        truncate_to: Optional[int] = None,
        stall_after_body_part: float = 0.0,
    ) -> None:
        """``truncate_to=N``: announce the whole body but send only N bytes of it, then close;
        ``stall_after_body_part``: with ``truncate_to``, wait this long before closing."""
        self.truncate_to = truncate_to
        self.stall_after_body_part = stall_after_body_part
        self.status = status
        if body is None:
            self.payload = b""
            default_type = None
        elif isinstance(body, bytes):
            self.payload = body
            default_type = "application/octet-stream"
        elif isinstance(body, str):
            self.payload = body.encode()
            default_type = "text/plain"
        else:
            self.payload = json.dumps(body).encode()
            default_type = "application/json"
        self.content_type = content_type or default_type
        self.headers = dict(headers or {})
        self.delay = delay


class Recorded:
    """What the server received."""

    def __init__(self, method: str, raw_path: str, headers: Dict[str, str], body: bytes) -> None:
        self.method = method
        self.raw_path = raw_path
        parts = urlsplit(raw_path)
        self.path = parts.path
        self.query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def __repr__(self) -> str:
        return f"<{self.method} {self.raw_path}>"


Script = Union[List[Reply], Callable[[Recorded], Reply]]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up is expected here; keep test output clean


class ScriptedServer:
    def __init__(self) -> None:
        self.routes: Dict[Tuple[str, str], Script] = {}
        self.requests: List[Recorded] = []
        self.connections = 0  # TCP connections accepted
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def setup(self) -> None:
                super().setup()
                with server._lock:
                    server.connections += 1

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                recorded = Recorded(self.command, self.path, dict(self.headers.items()), body)
                reply = server._reply_for(recorded)
                if reply.delay:
                    time.sleep(reply.delay)
                try:
                    self.send_response(reply.status)
                    if reply.content_type and reply.payload:
                        self.send_header("Content-Type", reply.content_type)
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(reply.payload)))
                    self.end_headers()
                    if reply.truncate_to is not None:
                        self.wfile.write(reply.payload[: reply.truncate_to])
                        self.wfile.flush()
                        if reply.stall_after_body_part:
                            time.sleep(reply.stall_after_body_part)
                        self.close_connection = True
                        return
                    if reply.payload and self.command != "HEAD":
                        self.wfile.write(reply.payload)
                    self.wfile.flush()
                except OSError:
                    self.close_connection = True

            # CONNECT too (recorded; 404 unless scripted): what an https request through a proxy sends
            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_CONNECT = _handle

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.api = self.base + "/api"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def _reply_for(self, recorded: Recorded) -> Reply:
        with self._lock:
            self.requests.append(recorded)
            script = self.routes.get((recorded.method, recorded.path))
            if script is None:
                return Reply(404, "<html><h1>Whitelabel Error Page</h1></html>", content_type="text/html")
            if callable(script):
                pass
            elif len(script) > 1:
                return script.pop(0)
            else:
                return script[0]
        return script(recorded)

    def route(self, method: str, path: str, *replies: Union[Reply, Callable[[Recorded], Reply]]) -> None:
        """Script ``method path`` (``path`` relative to /api unless it starts with '/')."""
        full = path if path.startswith("/") else "/api/" + path
        if len(replies) == 1 and callable(replies[0]) and not isinstance(replies[0], Reply):
            self.routes[(method, full)] = replies[0]
        else:
            self.routes[(method, full)] = list(replies)

    def count(self, method: Optional[str] = None, path: Optional[str] = None) -> int:
        full = None if path is None else (path if path.startswith("/") else "/api/" + path)
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (method is None or r.method == method) and (full is None or r.path == full)
            )

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
