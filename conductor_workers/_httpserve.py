"""A tiny read-only HTTP server on a daemon thread, for ``/health`` and ``/metrics`` (stdlib only)."""
from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Tuple

from .errors import InvalidOptionError

log = logging.getLogger(__name__)

#: A route answers ``(status code, content type, body)``.
Route = Callable[[], Tuple[int, str, bytes]]


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        route = self.server.routes.get(path)
        if route is None:
            known = ", ".join(sorted(self.server.routes))
            self._send(404, "text/plain; charset=utf-8", f"not found: {self.path}; try {known}\n".encode())
            return
        try:
            code, content_type, body = route()
        except Exception as exc:  # noqa: BLE001 - a broken route answers 500, the server goes on
            log.exception("GET %s failed", path)
            code, content_type, body = 500, "text/plain; charset=utf-8", f"{type(exc).__name__}: {exc}\n".encode()
        self._send(code, content_type, body)

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        log.debug("%s: " + format, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: Tuple[str, int], routes: Dict[str, Route]) -> None:
        self.routes = routes
        super().__init__(address, _Handler)


class BackgroundHTTPServer:
    """Serves ``routes`` (path -> :data:`Route`) on a daemon thread; :meth:`close` stops it."""

    def __init__(self, routes: Dict[str, Route], port: int = 0, host: str = "127.0.0.1", *, what: str = "http") -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidOptionError(f"{what} port must be an int between 0 and 65535, got {port!r}")
        try:
            self._server = _Server((host, port), dict(routes))
        except OSError as exc:
            raise InvalidOptionError(f"cannot serve {what} on {host}:{port}: {exc}") from None
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name=f"cw-{what}", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    def url(self, path: str) -> str:
        host = self.host
        return "http://%s:%d%s" % (f"[{host}]" if ":" in host else host, self.port, path)

    def close(self) -> None:
        """Stop serving (idempotent)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()


class Endpoint:
    """One path served by a :class:`BackgroundHTTPServer` (the health and metrics endpoints)."""

    path = "/"

    def __init__(self, route: Route, port: int, host: str, what: str) -> None:
        self._http = BackgroundHTTPServer({self.path: route}, port, host, what=what)

    @property
    def port(self) -> int:
        return self._http.port

    @property
    def url(self) -> str:
        return self._http.url(self.path)

    def close(self) -> None:
        """Stop serving (idempotent)."""
        self._http.close()

    def __enter__(self) -> "Endpoint":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
