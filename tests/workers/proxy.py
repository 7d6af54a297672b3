"""A small loopback HTTP proxy for the worker tests (stdlib only: threads + sockets).

It sits in front of a server and

* counts the requests that pass (``requests`` log: method, path, query, time);
* can be **cut**: open connections are reset and new ones are reset as soon as they are accepted,
  as if the server had gone away; :meth:`restore` lets traffic through again;
* can answer chosen requests itself with a fixed HTTP response (:meth:`reject`), e.g. a 405 for
  ``POST /api/tasks/update-v2`` to play a server without that endpoint;
* can play an unreliable network (:meth:`chaos`): a share of requests answered 503 by the proxy, a
  share reset before they reach the server, a share whose answer is lost after the server acted on
  them, and a random delay on each, from a seeded random generator.

It understands just enough HTTP/1.1 for the ``requests`` client: one request at a time per
connection, bodies by ``Content-Length`` (or chunked), keep-alive. Upstream answers are read with
``http.client`` (chunked or not) and passed back with a ``Content-Length``.
"""
from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Set, Tuple
from urllib.parse import parse_qs, urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class Seen(NamedTuple):
    """One request the proxy received."""

    time: float
    method: str
    path: str
    query: Dict[str, List[str]]
    body: bytes
    answered_by: str  # "upstream", "rule" or "cut"


Event = Tuple[str, Seen, int, bytes]


class Rule(NamedTuple):
    method: Optional[str]
    path: str
    exact: bool
    predicate: Optional[Callable[[str, str, bytes], bool]]
    status: int
    body: bytes
    content_type: str


class _Closed(Exception):
    pass


def _reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0): the client sees 'connection reset', not a clean close.

    ``shutdown`` first, so that a proxy thread blocked reading this socket wakes up at once.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class CuttableProxy:
    """``CuttableProxy(upstream_url)``; ``url`` is the proxied equivalent of ``upstream_url``."""

    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        if parts.scheme != "http":
            raise ValueError("CuttableProxy speaks plain http only")
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._path_prefix = parts.path.rstrip("/")
        self._lock = threading.Lock()  # guards everything below
        self._cut = False
        self._rules: List[Rule] = []
        self._seen: List[Seen] = []
        # ("request", seen, 0, b"") at receipt and ("response", seen, status, body) just before
        # sending, in the order they happened (for checks that replay the conversation).
        self._events: List[Event] = []
        self._chaos: Optional[Tuple[float, float, float, float]] = None  # 503, reset, lost shares; jitter s
        self._random = random.Random(0)
        #: what chaos did: {"503": n, "reset": n, "lost": n}
        self.chaos_counts: Dict[str, int] = {"503": 0, "reset": 0, "lost": 0}
        self._clients: Set[socket.socket] = set()
        self._threads: List[threading.Thread] = []
        self._closing = False
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}{self._path_prefix}"
        self._acceptor = threading.Thread(target=self._accept_loop, name="test-proxy-accept", daemon=True)
        self._acceptor.start()

    # -- control -----------------------------------------------------------------------------------

    def cut(self) -> None:
        """Reset every open connection and every new one until :meth:`restore`."""
        with self._lock:
            self._cut = True
            clients = list(self._clients)
        for client in clients:
            _reset(client)

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    @property
    def is_cut(self) -> bool:
        with self._lock:
            return self._cut

    def reject(
        self,
        path: str,
        status: int,
        body: str = "",
        *,
        method: Optional[str] = None,
        exact: bool = False,
        content_type: str = "application/json",
        predicate: Optional[Callable[[str, str, bytes], bool]] = None,
    ) -> None:
        """Answer requests for ``path`` (a prefix unless ``exact``) with ``status`` and ``body``.

        ``predicate(method, path, body)``, when given, must also be true for the rule to apply.
        """
        rule = Rule(method, path, exact, predicate, status, body.encode("utf-8"), content_type)
        with self._lock:
            self._rules.append(rule)

    def chaos(
        self, *, error_503: float = 0.1, reset: float = 0.05, lost: float = 0.05, jitter: float = 0.02, seed: int = 0
    ) -> None:
        """Fail requests at random: shares of 503s, resets before the server, answers lost after it."""
        with self._lock:
            self._chaos = (error_503, reset, lost, jitter)
            self._random = random.Random(seed)

    def calm(self) -> None:
        with self._lock:
            self._chaos = None

    def _draw(self) -> Tuple[str, float]:
        """The chaos verdict for one request ("", "503", "reset" or "lost") and its delay (caller holds _lock)."""
        if self._chaos is None:
            return "", 0.0
        error_503, reset, lost, jitter = self._chaos
        roll = self._random.random()
        delay = self._random.uniform(0.0, jitter)
        verdict = "503" if roll < error_503 else "reset" if roll < error_503 + reset else (
            "lost" if roll < error_503 + reset + lost else "")
        if verdict:
            self.chaos_counts[verdict] += 1
        return verdict, delay

    def clear_rules(self) -> None:
        with self._lock:
            self._rules.clear()

    @property
    def requests(self) -> List[Seen]:
        with self._lock:
            return list(self._seen)

    @property
    def events(self) -> List["Event"]:
        """``("request", seen, 0, b"")`` and ``("response", seen, status, body)``, in the order they happened."""
        with self._lock:
            return list(self._events)

    def reset_log(self) -> None:
        with self._lock:
            self._seen.clear()
            self._events.clear()

    def close(self) -> None:
        with self._lock:
            self._closing = True
            self._cut = True
            clients = list(self._clients)
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        except OSError:
            pass
        try:
            self._listener.close()
        except OSError:
            pass
        for client in clients:
            _reset(client)
        self._acceptor.join(5)
        for thread in list(self._threads):
            thread.join(5)

    def __enter__(self) -> "CuttableProxy":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- serving -----------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._closing or self._cut:
                    refuse = True
                else:
                    refuse = False
                    self._clients.add(client)
                    self._threads = [t for t in self._threads if t.is_alive()]
            if refuse:
                _reset(client)
                continue
            thread = threading.Thread(target=self._serve, args=(client,), name="test-proxy-conn", daemon=True)
            with self._lock:
                self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        upstream: Optional[http.client.HTTPConnection] = None
        reader = client.makefile("rb")
        try:
            while True:
                request = self._read_request(reader)
                if request is None:
                    return
                method, target, headers, body = request
                parts = urlsplit(target)
                with self._lock:
                    cut = self._cut
                    rule = None if cut else self._match(method, parts.path, body)
                    verdict, delay = ("", 0.0) if cut or rule else self._draw()
                    seen = Seen(time.monotonic(), method, parts.path, parse_qs(parts.query), body,
                                "cut" if cut else "rule" if rule else verdict or "upstream")
                    self._seen.append(seen)
                    self._events.append(("request", seen, 0, b""))
                if cut or verdict == "reset":
                    return
                if delay:
                    time.sleep(delay)
                if verdict == "503":
                    payload = b'{"status":503,"message":"chaos: service unavailable","retryable":true}'
                    head = (
                        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(payload)}\r\n\r\n"
                    )
                    self._log_response(seen, 503, payload)
                    client.sendall(head.encode("latin-1") + payload)
                    continue
                if rule is not None:
                    reason = http.client.responses.get(rule.status, "Error")
                    head = (
                        f"HTTP/1.1 {rule.status} {reason}\r\nContent-Type: {rule.content_type}\r\n"
                        f"Content-Length: {len(rule.body)}\r\n\r\n"
                    )
                    self._log_response(seen, rule.status, rule.body)
                    client.sendall(head.encode("latin-1") + rule.body)
                    continue
                if upstream is None:
                    upstream = http.client.HTTPConnection(*self._upstream, timeout=120)
                forward = {k: v for k, v in headers if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length"}
                upstream.request(method, target, body=body if body or method in ("POST", "PUT") else None,
                                 headers=forward)
                response = upstream.getresponse()
                payload = response.read()
                if self.is_cut or verdict == "lost":  # the server acted, but its answer is lost
                    return
                lines = [f"HTTP/1.1 {response.status} {response.reason}"]
                for key, value in response.getheaders():
                    if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                        lines.append(f"{key}: {value}")
                lines.append(f"Content-Length: {len(payload)}")
                self._log_response(seen, response.status, payload)
                client.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
                if response.will_close:
                    upstream.close()
                    upstream = None
        except (OSError, _Closed, http.client.HTTPException, ValueError):
            return
        finally:
            if upstream is not None:
                upstream.close()
            with self._lock:
                self._clients.discard(client)
            try:
                reader.close()
            except OSError:
                pass
            _reset(client)

    def _log_response(self, seen: Seen, status: int, payload: bytes) -> None:
        with self._lock:
            self._events.append(("response", seen, status, payload))

    def _match(self, method: str, path: str, body: bytes) -> Optional[Rule]:
        for rule in self._rules:
            if rule.method is not None and rule.method != method:
                continue
            if (path != rule.path) if rule.exact else not path.startswith(rule.path):
                continue
            if rule.predicate is not None and not rule.predicate(method, path, body):
                continue
            return rule
        return None

    @staticmethod
    def _read_request(reader) -> Optional[Tuple[str, str, List[Tuple[str, str]], bytes]]:  # type: ignore[no-untyped-def]
        line = reader.readline(65537)
        if not line:
            return None
        parts = line.decode("latin-1").rstrip("\r\n").split(" ")
        if len(parts) != 3:
            raise _Closed()
        method, target, _ = parts
        headers: List[Tuple[str, str]] = []
        while True:
            raw = reader.readline(65537)
            if not raw:
                raise _Closed()
            text = raw.decode("latin-1").rstrip("\r\n")
            if not text:
                break
            key, _, value = text.partition(":")
            headers.append((key.strip(), value.strip()))
        lowered = {k.lower(): v for k, v in headers}
        body = b""
        if lowered.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(reader.readline(1024).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while reader.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(reader.read(size))
                reader.readline(8)
            body = b"".join(chunks)
        elif "content-length" in lowered:
            length = int(lowered["content-length"])
            body = reader.read(length)
            if len(body) != length:
                raise _Closed()
        return method, target, headers, body
