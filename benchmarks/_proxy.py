"""A tiny counting HTTP/1.1 proxy for the benchmarks (stdlib only, threads, loopback only).

The clients under test talk to the proxy; the proxy talks to the server. It counts every request
a client sends (by kind: poll, update, other; polls also per task type) and timestamps them, so
"HTTP requests per completed task", "requests/s while idle" and "time of the N-th task update" are
measured at the server's door in the same way for every client.

Requests are parsed (request line, headers, ``Content-Length`` or chunked body) so that bodies are
never mistaken for requests; responses are relayed as raw bytes. Clients send one request at a time
per connection (no pipelining), which the gate relies on:

``gate(True)`` answers polls itself with "nothing to do" (``[]`` for batch polls, ``204`` for
single polls) instead of forwarding them, so workers can be started, warmed up and left idling
while the benchmark queues tasks on the server directly; ``gate(False)`` lets polls through again.
Other requests are always forwarded. Synthetic answers are not counted as forwarded requests.
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Dict, List, Optional, Tuple

_EMPTY_BATCH = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]"
)
_EMPTY_SINGLE = b"HTTP/1.1 204 No Content\r\n\r\n"


class CountingProxy:
    """Listen on ``127.0.0.1:<free port>``, forward to ``upstream_host:upstream_port``."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(256)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._closed = False
        self._gated = False
        self._sockets: List[socket.socket] = []
        self.reset()
        threading.Thread(target=self._accept_loop, name="proxy-accept", daemon=True).start()

    # -- counters ------------------------------------------------------------------------------

    def reset(self) -> None:
        """Zero every counter (call between measurements)."""
        with self._lock:
            self.forwarded = 0
            self.polls = 0
            self.updates = 0
            self.synthetic = 0
            self.polls_by_type: Dict[str, int] = {}
            self.first_forwarded_poll: Optional[float] = None
            self.update_times: List[float] = []
            self.forwarded_at_update: List[int] = []  # requests forwarded up to each update

    def snapshot(self) -> Dict[str, int]:
        with self._lock:
            return {"forwarded": self.forwarded, "polls": self.polls, "updates": self.updates,
                    "synthetic": self.synthetic}

    def gate(self, closed: bool) -> None:
        with self._lock:
            self._gated = closed
            if not closed:
                self.first_forwarded_poll = None

    def wait_for_updates(self, count: int, timeout: float) -> Optional[float]:
        """Block until ``count`` updates were forwarded since reset(); the time of the count-th."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.update_times) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.5))
            return self.update_times[count - 1]

    def wait_for_polls(self, task_types: List[str], timeout: float) -> bool:
        """Block until every task type in ``task_types`` has been polled (forwarded or gated)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not all(self.polls_by_type.get(t) for t in task_types):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
            return True

    # -- plumbing ------------------------------------------------------------------------------

    def close(self) -> None:
        self._closed = True
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), name="proxy-conn", daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
            upstream.settimeout(None)
        except OSError:
            client.close()
            return
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._sockets += [client, upstream]
        threading.Thread(target=self._pump, args=(upstream, client), name="proxy-down", daemon=True).start()
        reader = client.makefile("rb", buffering=65536)
        try:
            while True:
                parsed = _read_request(reader)
                if parsed is None:
                    break
                data, method, path = parsed
                kind, task_type = _classify(method, path)
                now = time.monotonic()
                with self._lock:
                    gated = self._gated and kind == "poll"
                    if task_type is not None:
                        self.polls_by_type[task_type] = self.polls_by_type.get(task_type, 0) + 1
                    if gated:
                        self.synthetic += 1
                    else:
                        self.forwarded += 1
                        if kind == "poll":
                            self.polls += 1
                            if self.first_forwarded_poll is None:
                                self.first_forwarded_poll = now
                        elif kind == "update":
                            self.updates += 1
                            self.update_times.append(now)
                            self.forwarded_at_update.append(self.forwarded)
                            self._cond.notify_all()
                    if task_type is not None:
                        self._cond.notify_all()
                if gated:
                    client.sendall(_EMPTY_BATCH if "/poll/batch/" in path else _EMPTY_SINGLE)
                else:
                    upstream.sendall(data)
        except OSError:
            pass
        finally:
            reader.close()
            for sock in (client, upstream):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                chunk = src.recv(65536)
                if not chunk:
                    break
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _classify(method: str, path: str) -> Tuple[str, Optional[str]]:
    """("poll"|"update"|"other", polled task type or None)."""
    bare = path.split("?", 1)[0]
    if method == "GET" and "/tasks/poll/" in bare:
        task_type = bare.rsplit("/", 1)[-1]
        return "poll", task_type
    if method == "POST" and (bare.endswith("/tasks") or bare.endswith("/tasks/update-v2")):
        return "update", None
    return "other", None


def _read_request(reader) -> Optional[Tuple[bytes, str, str]]:  # type: ignore[no-untyped-def]
    """One whole request as bytes, its method and path; None at end of stream."""
    line = reader.readline(65537)
    while line in (b"\r\n", b"\n"):
        line = reader.readline(65537)
    if not line:
        return None
    parts = line.split()
    method = parts[0].decode("latin-1") if parts else ""
    path = parts[1].decode("latin-1") if len(parts) > 1 else ""
    head = [line]
    length = 0
    chunked = False
    while True:
        header = reader.readline(65537)
        if not header:
            return None
        head.append(header)
        if header in (b"\r\n", b"\n"):
            break
        name, _, value = header.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size_line = reader.readline(65537)
            head.append(size_line)
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers up to the empty line
                    trailer = reader.readline(65537)
                    head.append(trailer)
                    if trailer in (b"\r\n", b"\n", b""):
                        break
                break
            head.append(reader.read(size + 2))
    elif length:
        head.append(reader.read(length))
    return b"".join(head), method, path
