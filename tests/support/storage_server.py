"""A loopback external-payload storage that can misbehave: huge, endless and slow bodies (stdlib only).

``StorageServer()`` listens on ``127.0.0.1:<free port>`` (``base``; ``url(key)`` is a download URL)
and answers ``GET /store/{key}`` with the body set for that key by one of:

* :meth:`put` a JSON object, sent whole with its ``Content-Length`` (a well-behaved storage);
* :meth:`huge` a valid JSON object of ``size`` bytes, announced with ``Content-Length`` and streamed;
* :meth:`endless` a JSON object that never ends, streamed chunked until ``ceiling`` bytes, then the
  connection is closed (the ceiling keeps a client that reads everything from reading forever);
* :meth:`slow` a valid JSON object of ``size`` bytes, announced, one byte every ``interval`` seconds.

A ``PUT /store/{key}`` (an upload) is kept as that key's body and answered 200.

It counts the connections it accepted (``connections``). For every request it records (``downloads``, in order; uploads too) the request's method, headers and path,
and for downloads how many body bytes the socket took (``sent``: accepted by the kernel, so at most the
socket buffers more than the client read), and whether it ``finished`` the body or the client hung
up first (``hung_up``). Those two are the robust checks: "the client stopped reading" does not
depend on timing, and ``sent`` bounds what the client can have read.

Requests may come through a proxy (an absolute URI in the request line); they are matched on their path.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterator, List, Tuple
from urllib.parse import urlsplit

CHUNK = 64 * 1024
_PREFIX = b'{"blob":"'
_SUFFIX = b'"}'


class Download:
    """What the storage saw and did for one GET."""

    def __init__(self, method: str, path: str, headers: Dict[str, str]) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.sent = 0
        self.finished = False
        self.hung_up = False
        self.done = threading.Event()  # set when the handler has stopped sending, either way

    def __repr__(self) -> str:
        return f"<Download {self.method} {self.path} sent={self.sent} finished={self.finished} hung_up={self.hung_up}>"


def _blob(size: int) -> Iterator[bytes]:
    """A JSON object of exactly ``size`` bytes: ``{"blob":"xxx…"}``, in chunks."""
    filler = size - len(_PREFIX) - len(_SUFFIX)
    yield _PREFIX
    while filler > 0:
        piece = min(filler, CHUNK)
        yield b"x" * piece
        filler -= piece
    yield _SUFFIX


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up mid-body is what these tests provoke


class StorageServer:
    def __init__(self) -> None:
        self._bodies: Dict[str, Tuple[str, Any]] = {}
        self.downloads: List[Download] = []
        self.connections = 0  # TCP connections accepted
        self._lock = threading.Lock()  # guards _bodies, downloads and connections
        self._stopping = threading.Event()
        storage = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with storage._lock:
                    storage.connections += 1

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                storage._answer(self)

            def do_PUT(self) -> None:
                storage._take(self)

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def url(self, key: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/store/{key}"

    # -- what to serve -----------------------------------------------------------------------------

    def put(self, key: str, payload: Dict[str, Any]) -> None:
        self._set(key, "whole", json.dumps(payload).encode())

    def huge(self, key: str, size: int) -> None:
        self._set(key, "huge", size)

    def endless(self, key: str, ceiling: int) -> None:
        self._set(key, "endless", ceiling)

    def slow(self, key: str, size: int, interval: float) -> None:
        self._set(key, "slow", (size, interval))

    def _set(self, key: str, kind: str, how: Any) -> None:
        with self._lock:
            self._bodies[key] = (kind, how)

    def last(self, timeout: float = 30.0) -> Download:
        """The latest download, once its handler has stopped sending."""
        with self._lock:
            download = self.downloads[-1]
        if not download.done.wait(timeout):
            raise AssertionError(f"the storage is still sending after {timeout}s: {download!r}")
        return download

    def close(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "StorageServer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- serving -----------------------------------------------------------------------------------

    def _take(self, handler: BaseHTTPRequestHandler) -> None:
        """A PUT (an upload): kept under its key, answered 200."""
        path = urlsplit(handler.path).path
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        download = Download(handler.command, path, dict(handler.headers.items()))
        download.finished = True
        download.done.set()
        with self._lock:
            self.downloads.append(download)
            if path.startswith("/store/"):
                self._bodies[path[len("/store/"):]] = ("whole", body)
        handler.send_response(200)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        path = urlsplit(handler.path).path
        download = Download(handler.command, path, dict(handler.headers.items()))
        with self._lock:
            self.downloads.append(download)
            found = self._bodies.get(path[len("/store/"):]) if path.startswith("/store/") else None
        try:
            if found is None:
                body = b'{"message":"no such key"}'
                handler.send_response(404)
                handler.send_header("Content-Type", "application/json")
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)
                return
            kind, how = found
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            if kind == "whole":
                handler.send_header("Content-Length", str(len(how)))
                handler.end_headers()
                self._send(handler, download, [how])
            elif kind == "huge":
                handler.send_header("Content-Length", str(how))
                handler.end_headers()
                self._send(handler, download, _blob(how))
            elif kind == "slow":
                size, interval = how
                handler.send_header("Content-Length", str(size))
                handler.end_headers()
                self._send(handler, download, self._trickle(_blob(size), interval))
            else:  # endless: chunked, never closed by JSON, cut at the ceiling
                handler.send_header("Transfer-Encoding", "chunked")
                handler.end_headers()
                self._send_chunked(handler, download, how)
        except OSError:
            download.hung_up = True
            handler.close_connection = True
        finally:
            download.done.set()

    def _trickle(self, chunks: Iterator[bytes], interval: float) -> Iterator[bytes]:
        for chunk in chunks:
            for index in range(len(chunk)):
                if self._stopping.wait(interval):
                    return
                yield chunk[index:index + 1]

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, download: Download, chunks: Any) -> None:
        for chunk in chunks:
            handler.wfile.write(chunk)
            download.sent += len(chunk)
        download.finished = True

    @staticmethod
    def _send_chunked(handler: BaseHTTPRequestHandler, download: Download, ceiling: int) -> None:
        filler = b"x" * CHUNK
        first = True
        while download.sent < ceiling:
            data = _PREFIX + filler if first else filler
            first = False
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            download.sent += len(data)
        handler.close_connection = True  # no final chunk: the body just stops
        download.finished = True


__all__ = ["CHUNK", "Download", "StorageServer"]
