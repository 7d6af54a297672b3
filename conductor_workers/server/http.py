"""HTTP front end of :class:`~conductor_workers.server.LocalConductor` (stdlib ``http.server``).

:class:`ConductorHTTPServer` accepts connections (in TLS when given an ``ssl.SSLContext``) and
hands them to the :class:`~.connections.ConnectionManager`; :class:`RequestHandler` reads each
request within the body limits, checks the token (:mod:`.auth`), runs its route (:mod:`.routes`)
and answers every error with a Conductor ``ErrorResponse`` JSON body. Each response is written
with one ``sendall`` (status line, headers and body together) on a socket with ``TCP_NODELAY``:
see the Nagle note in the performance notes.
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Callable, Optional, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

from .auth import TokenAuth
from .connections import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_THREADS,
    Connection,
    ConnectionManager,
)
from .errors import EngineError
from .routes import Api
from .scripts import ScriptsStopped
from .wire import Request, Response, error_response

log = logging.getLogger(__name__)

#: Largest request body accepted; bigger bodies get 413 (and are drained, up to DRAIN_LIMIT). Above
#: the 10 MB payload maximum, so that such a task result reaches the engine, which fails the task.
MAX_BODY_BYTES = 16 * 1024 * 1024
#: Where LocalConductor's payload storage lives: a token or a signed location opens it (see :mod:`.auth`).
STORAGE_PATH = "/api/external/local/"
#: Bodies up to this size are read and discarded so that the connection stays usable.
DRAIN_LIMIT = 256 * 1024 * 1024


class ConductorHTTPServer(HTTPServer):
    """The HTTP server: accepts connections and hands them to a :class:`ConnectionManager`.

    A connection holds a thread only while it has a request to serve (see :mod:`.connections`), so
    silent or idle connections cost a file descriptor, not a thread.
    """

    allow_reuse_address = True
    request_queue_size = 1024  # listen backlog: socketserver's 5 stalls bursts of new connections 1 s

    def __init__(self, address: Tuple[str, int], api: Api, auth: Optional[TokenAuth] = None,
                 tls: Optional[ssl.SSLContext] = None,
                 max_threads: int = DEFAULT_MAX_THREADS, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> None:
        super().__init__(address, RequestHandler, bind_and_activate=False)
        self.api = api
        self.auth = auth
        try:
            self.server_bind()
            self.server_activate()
        except BaseException:
            self.server_close()
            raise
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
        self.connections = ConnectionManager(self._serve, max_threads=max_threads,
                                             max_connections=max_connections, idle_timeout=idle_timeout)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.connections.add(request, client_address)

    def _serve(self, connection: Connection) -> bool:
        """Serve what has arrived on ``connection``; True to keep it open (see ConnectionManager)."""
        sock = connection.sock
        try:
            if not connection.handshaken:
                sock.settimeout(RequestHandler.timeout)
                sock.do_handshake()  # type: ignore[attr-defined]
                connection.handshaken = True
            handler = RequestHandler(sock, connection.address, self)
            try:
                return handler.serve_arrived()
            finally:
                handler.finish()
        except (OSError, ValueError):  # reset, closed or a failed TLS handshake: nothing to answer
            log.debug("connection from %s failed", connection.address, exc_info=True)
            return False

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s failed", client_address, exc_info=True)

    def close_all(self, timeout: float = 5.0) -> None:
        """Close every open connection and join the threads serving them."""
        self.connections.close(timeout)


class RequestHandler(BaseHTTPRequestHandler):
    """Parses requests, runs their routes and writes each whole response in one write.

    One handler serves the requests that arrive back to back on a connection; it is made by
    :meth:`ConductorHTTPServer._serve` (not by ``socketserver``), so ``__init__`` only sets up.
    """

    protocol_version = "HTTP/1.1"
    server_version = "LocalConductor"
    disable_nagle_algorithm = True
    timeout = 30  # for each read and write within a request; idle time is the ConnectionManager's
    server: ConductorHTTPServer

    def __init__(self, request: Any, client_address: Any, server: ConductorHTTPServer) -> None:
        # no super().__init__(): that would also serve the connection to its end on this thread
        self.request = request
        self.client_address = client_address
        self.server = server
        self.setup()

    def serve_arrived(self) -> bool:
        """Serve requests while they keep coming; True when the connection may be parked.

        After each response, wait up to the manager's ``linger`` for the next request with a
        peek: bytes already buffered (a pipelined request) count at once, and the wait is the
        same blocking read a thread-per-connection server does.
        """
        sock = self.connection
        while True:
            self.close_connection = True
            self.handle_one_request()
            if self.close_connection:
                return False
            sock.settimeout(self.server.connections.linger)
            try:
                if not self.rfile.peek(1):  # type: ignore[attr-defined]
                    return False  # the client closed
            except socket.timeout:
                return True  # quiet: park it (this rfile is spent; the next serve makes another)
            finally:
                sock.settimeout(self.timeout)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        log.debug("%s - %s", self.address_string(), format % args)

    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        """Errors found by ``http.server`` itself (bad request line, ...): an ErrorResponse too."""
        response = error_response(code, message or self.responses.get(code, ("Error",))[0])
        response.close = True
        self._write(response)

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        started = time.perf_counter()
        try:
            response = self._respond()
        except Exception:
            log.exception("unexpected error serving %s %s", self.command, self.path)
            response = error_response(500, "Internal error in LocalConductor (see its log)")
        self._write(response)
        log.debug("%s %s -> %d (%.1f ms)", self.command, self.path, response.status,
                  (time.perf_counter() - started) * 1000)

    def _respond(self) -> Response:
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        auth = self.server.auth
        issuing = auth is not None and path == "/api/token" and self.command == "POST"
        query = parse_qs(parts.query, keep_blank_values=True)
        if auth is not None and not issuing and path.startswith("/api/") and path != "/api/health":
            denied = auth.check(self.headers.get("X-Authorization"))  # from the headers, before any body
            if denied is not None and path.startswith(STORAGE_PATH) and auth.check_signed(
                    unquote(path[len(STORAGE_PATH):]), "WRITE" if self.command == "PUT" else "READ", query):
                denied = None  # a location the storage-location endpoint signed
            if denied is not None:
                # its body is never read: a connection that carries one cannot carry on
                denied.close = bool(self.headers.get("Transfer-Encoding")) or (
                    self.headers.get("Content-Length") not in (None, "", "0"))
                return denied
        body, too_large = self._read_body()
        if too_large is not None:
            return too_large
        request = Request(self.command, path, query, body, self.headers)
        if issuing:
            assert auth is not None
            return _guard(lambda: auth.issue(request))
        handler, params, path_known = self.server.api.router.resolve(self.command, path)
        if handler is None:
            if path_known:
                return error_response(405, "Request method '%s' is not supported" % self.command)
            return error_response(404, "No static resource %s." % path.lstrip("/"))
        request.params = params
        return _guard(lambda: handler(request))

    def _read_body(self) -> Tuple[bytes, Optional[Response]]:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            response = error_response(400, "Invalid Content-Length header")
            response.close = True
            return b"", response
        if length < 0:
            response = error_response(400, "Invalid Content-Length header")
            response.close = True
            return b"", response
        if length > MAX_BODY_BYTES:
            return b"", self._too_large(self._discard(length))
        return self.rfile.read(length), None

    def _read_chunked(self) -> Tuple[bytes, Optional[Response]]:
        chunks, total, drained = [], 0, True
        while True:
            line = self.rfile.readline(1024)
            digits = line.split(b";")[0].strip() or b"0"
            if not re.fullmatch(rb"[0-9A-Fa-f]{1,16}", digits):  # no sign, no "-1" meaning "read to EOF"
                response = error_response(400, "Malformed chunked request body")
                response.close = True
                return b"", response
            size = int(digits, 16)
            if size == 0:
                self._skip_trailers()
                break
            total += size
            if total > MAX_BODY_BYTES:
                drained = total <= DRAIN_LIMIT and self._discard(size)
                if not drained:
                    break
            else:
                chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)  # CRLF after each chunk
        if total > MAX_BODY_BYTES:
            return b"", self._too_large(drained)
        return b"".join(chunks), None

    def _skip_trailers(self) -> None:
        line = self.rfile.readline(1024)
        while line not in (b"\r\n", b"\n", b""):
            line = self.rfile.readline(1024)

    def _discard(self, length: int) -> bool:
        """Read and drop ``length`` bytes if that is reasonable; False when the connection must close."""
        if length > DRAIN_LIMIT:
            return False
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 20))
            if not chunk:
                return False
            remaining -= len(chunk)
        return True

    @staticmethod
    def _too_large(drained: bool) -> Response:
        response = error_response(413, "Request body too large: the limit is %d bytes" % MAX_BODY_BYTES)
        response.close = not drained
        return response

    def _write(self, response: Response) -> None:
        if response.close:
            self.close_connection = True
        lines = ["HTTP/1.1 %d %s" % (response.status, self.responses.get(response.status, ("",))[0]),
                 "Server: LocalConductor", "Date: " + self.date_time_string()]
        if response.content_type and response.body:
            lines.append("Content-Type: " + response.content_type)
        if response.status not in (204, 304):
            lines.append("Content-Length: %d" % len(response.body))
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        body = b"" if self.command == "HEAD" else response.body
        try:
            self.wfile.write(head + body)
        except OSError:
            self.close_connection = True
            log.debug("client went away before the response was written")


def _guard(call: Callable[[], Response]) -> Response:
    """Run a route; turn engine errors into ErrorResponses."""
    try:
        return call()
    except EngineError as error:
        return error_response(error.status, error.message, error.validation_errors)
    except ScriptsStopped as error:  # its decide was rolled back
        return error_response(503, str(error))
