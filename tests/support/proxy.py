"""One loopback HTTP/1.1 proxy for the tests and the benchmarks (stdlib only: threads + sockets).

``LoopbackProxy(upstream_url)`` listens on ``127.0.0.1:<free port>``; ``url`` is the proxied
equivalent of ``upstream_url``. Clients talk to the proxy, the proxy talks to the server. It

* **counts** what the clients send, by kind (poll, update, other; polls also per task type), with
  timestamps: ``forwarded``, ``polls``, ``updates``, ``synthetic``, ``polls_by_type``,
  ``first_forwarded_poll``, ``update_times``, ``forwarded_at_update``; :meth:`wait_for_polls` and
  :meth:`wait_for_updates` block on them and :meth:`reset` zeroes them (and the log below). So
  "HTTP requests per completed task", "requests/s while idle" and "time of the N-th task update" are
  measured at the server's door in the same way for every client;
* can **gate** polls (:meth:`gate`): while closed, the proxy answers polls itself with "nothing to
  do" (``[]`` for batch polls, ``204`` for single polls), so workers can be started, warmed up and
  left idling while a benchmark queues tasks on the server directly;
* can be **cut** (:meth:`cut`): open connections are reset and new ones are reset as soon as they
  are accepted, as if the server had gone away; :meth:`restore` lets traffic through again;
* can answer chosen requests itself with a fixed HTTP response (:meth:`reject`), e.g. a 405 for
  ``POST /api/tasks/update-v2`` to play a server without that endpoint;
* can play an unreliable network (:meth:`chaos`): a share of requests answered 503 by the proxy, a
  share reset before they reach the server, a share whose answer is lost after the server acted on
  them, and a random delay on each, from a seeded random generator.

Answers the proxy makes itself (gate, rules, chaos 503s) count as ``synthetic``, not ``forwarded``.

Two relays, chosen by ``record``:

* ``record=True`` (the default; the tests): every request is logged (``requests``: method, path,
  query, body, time, who answered) with the conversation in order (``events``). Upstream answers are
  read with ``http.client`` (chunked or not), logged, and passed back with a ``Content-Length``.
* ``record=False`` (the benchmarks' hot path): nothing is logged; answers are relayed as raw bytes
  by one pump thread per connection, so the proxy adds as little as possible per request. Chaos
  needs the answers parsed and is refused here; gate, cut and rules work.

It understands just enough HTTP/1.1 for HTTP clients: one request at a time per connection (no
pipelining, which the synthetic answers rely on), bodies by ``Content-Length`` or chunked,
keep-alive. Sockets use ``TCP_NODELAY``; reads are buffered by 64 KiB.
"""
from __future__ import annotations

import functools
import http.client
import random
import socket
import threading
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Set, Tuple
from urllib.parse import parse_qs, urlsplit

from support.sockets import close, listen, reset, shutdown

# headers the recorded relay does not pass on: hop-by-hop ones, and the length it sets itself
_NOT_PASSED = {
    "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection",
    "content-length",
}
_BUFFER = 65536
_EMPTY_BATCH = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]"
_EMPTY_SINGLE = b"HTTP/1.1 204 No Content\r\n\r\n"
_CHAOS_503 = b'{"status":503,"message":"chaos: service unavailable","retryable":true}'


class Seen(NamedTuple):
    """One request the proxy received (logged with ``record=True``)."""

    time: float
    method: str
    path: str
    query: Dict[str, List[str]]
    body: bytes
    answered_by: str  # "upstream", "gate", "rule", "cut", or the chaos verdict "503", "reset", "lost"


Event = Tuple[str, Seen, int, bytes]


class Rule(NamedTuple):
    method: Optional[str]
    path: str
    exact: bool
    predicate: Optional[Callable[[str, str, bytes], bool]]
    status: int
    body: bytes
    content_type: str


#: reset a client connection, waking the proxy's thread that reads it (cut() runs on another thread)
_reset = functools.partial(reset, wake=True)


class LoopbackProxy:
    """``LoopbackProxy(upstream_url, record=True)``; ``url``: the proxied ``upstream_url``, on ``port``."""

    def __init__(self, upstream_url: str, *, record: bool = True) -> None:
        parts = urlsplit(upstream_url)
        if parts.scheme != "http":
            raise ValueError("LoopbackProxy speaks plain http only")
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.record = record
        self._lock = threading.Lock()  # guards everything below, and the counters
        self._cond = threading.Condition(self._lock)  # notified on every poll and forwarded update
        self._cut = False
        self._gated = False
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
        self._plain = True  # nothing tampers with traffic: the fast path (see _tampering)
        self.reset()
        self._listener = listen(256)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}{parts.path.rstrip('/')}"
        self._acceptor = threading.Thread(target=self._accept_loop, name="test-proxy-accept", daemon=True)
        self._acceptor.start()

    # -- counters and log --------------------------------------------------------------------------

    def reset(self) -> None:
        """Zero every counter and clear the log (call between measurements)."""
        with self._lock:
            self.forwarded = 0
            self.polls = 0
            self.updates = 0
            self.synthetic = 0
            self.polls_by_type: Dict[str, int] = {}
            self.first_forwarded_poll: Optional[float] = None
            self.update_times: List[float] = []
            self.forwarded_at_update: List[int] = []  # requests forwarded up to each update
            self._seen.clear()
            self._events.clear()

    def snapshot(self) -> Dict[str, int]:
        with self._lock:
            return {"forwarded": self.forwarded, "polls": self.polls, "updates": self.updates,
                    "synthetic": self.synthetic}

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
        """Block until every task type in ``task_types`` has been polled (forwarded or not)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not all(self.polls_by_type.get(t) for t in task_types):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
            return True

    @property
    def requests(self) -> List[Seen]:
        with self._lock:
            return list(self._seen)

    @property
    def events(self) -> List[Event]:
        """``("request", seen, 0, b"")`` and ``("response", seen, status, body)``, in their order."""
        with self._lock:
            return list(self._events)

    # -- control -----------------------------------------------------------------------------------

    def gate(self, closed: bool) -> None:
        """``gate(True)``: answer polls with "nothing to do" instead of forwarding them."""
        with self._lock:
            self._gated = closed
            self._tampering()
            if not closed:
                self.first_forwarded_poll = None

    def cut(self) -> None:
        """Reset every open connection and every new one until :meth:`restore`."""
        with self._lock:
            self._cut = True
            self._tampering()
            clients = list(self._clients)
        for client in clients:
            _reset(client)

    def restore(self) -> None:
        with self._lock:
            self._cut = False
            self._tampering()

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
            self._tampering()

    def clear_rules(self) -> None:
        with self._lock:
            self._rules.clear()
            self._tampering()

    def chaos(
        self,
        *,
        error_503: float = 0.1,
        reset: float = 0.05,
        lost: float = 0.05,
        jitter: float = 0.02,
        seed: int = 0,
    ) -> None:
        """Fail requests at random: shares of 503s, resets before the server, answers lost after it."""
        if not self.record:
            raise ValueError("chaos needs the answers parsed: LoopbackProxy(..., record=True)")
        with self._lock:
            self._chaos = (error_503, reset, lost, jitter)
            self._random = random.Random(seed)
            self._tampering()

    def calm(self) -> None:
        with self._lock:
            self._chaos = None
            self._tampering()

    def close(self) -> None:
        """Stop accepting, reset every open connection and join every thread."""
        with self._lock:
            self._closing = True
            self._cut = True
            self._tampering()
            clients = list(self._clients)
        shutdown(self._listener)  # wakes the blocked accept() on Linux
        try:
            self._listener.close()
        except OSError:
            pass
        for client in clients:
            _reset(client)
        self._acceptor.join(5)
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(5)

    def __enter__(self) -> "LoopbackProxy":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- serving -----------------------------------------------------------------------------------

    def _start(self, target: Callable[..., None], args: Tuple[Any, ...], name: str) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refuse = self._closing or self._cut
                if not refuse:
                    self._clients.add(client)
            if refuse:
                _reset(client)
                continue
            try:
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            self._start(self._serve, (client,), "test-proxy-conn")

    def _serve(self, client: socket.socket) -> None:
        upstream: Any = None  # http.client.HTTPConnection (record=True) or a socket (record=False)
        record = self.record
        # how the client's socket is closed at the end: the raw relay closes cleanly (a reset could
        # destroy an answer the pump relayed and the client has not read yet), except when cut
        finish: Callable[[socket.socket], None] = _reset if record else close
        reader = client.makefile("rb", buffering=_BUFFER)
        try:
            while True:
                request = _read_request(reader)
                if request is None:
                    return
                data, method, target, body = request
                kind, task_type = _classify(method, target)
                now = time.monotonic()
                rule: Optional[Rule] = None
                delay = 0.0
                seen: Optional[Seen] = None
                with self._lock:
                    if task_type is not None:
                        self.polls_by_type[task_type] = self.polls_by_type.get(task_type, 0) + 1
                        self._cond.notify_all()
                    if self._plain:
                        verdict = "upstream"
                    else:
                        verdict, rule, delay = self._decide(kind, method, target, body)
                    if verdict == "upstream" or verdict == "lost":
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
                    elif verdict != "cut" and verdict != "reset":
                        self.synthetic += 1
                    if record:
                        parts = urlsplit(target)
                        seen = Seen(now, method, parts.path, parse_qs(parts.query), body, verdict)
                        self._seen.append(seen)
                        self._events.append(("request", seen, 0, b""))
                if verdict == "upstream" and not record:  # the benchmarks' hot path
                    if upstream is None:
                        upstream = self._connect_raw(client)
                    upstream.sendall(data)
                    continue
                if verdict == "cut" or verdict == "reset":
                    finish = _reset
                    return
                if delay:
                    time.sleep(delay)
                if verdict == "upstream" or verdict == "lost":
                    if upstream is None:
                        upstream = http.client.HTTPConnection(*self.upstream, timeout=120)
                    if not self._exchange(client, upstream, method, target, data, body, seen, verdict):
                        return
                    continue
                if verdict == "gate":
                    answer = _EMPTY_BATCH if "/poll/batch/" in target else _EMPTY_SINGLE
                    status, payload = (200, b"[]") if "/poll/batch/" in target else (204, b"")
                elif rule is not None:
                    status, payload = rule.status, rule.body
                    answer = _head(status, [("Content-Type", rule.content_type)], len(payload)) + payload
                else:  # chaos 503
                    status, payload = 503, _CHAOS_503
                    answer = _head(status, [("Content-Type", "application/json")], len(payload)) + payload
                if seen is not None:
                    self._log_response(seen, status, payload)
                client.sendall(answer)
        except (OSError, http.client.HTTPException, ValueError):
            return
        finally:
            with self._lock:
                self._clients.discard(client)
            try:
                reader.close()
            except OSError:
                pass
            if isinstance(upstream, socket.socket):
                close(upstream)  # the pump wakes up and ends
            elif upstream is not None:
                upstream.close()
            finish(client)

    def _connect_raw(self, client: socket.socket) -> socket.socket:
        """The upstream socket of one client connection, with a pump thread relaying its answers."""
        upstream = socket.create_connection(self.upstream, timeout=10)
        upstream.settimeout(None)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._start(_pump, (upstream, client), "test-proxy-down")
        return upstream

    def _exchange(
        self,
        client: socket.socket,
        upstream: http.client.HTTPConnection,
        method: str,
        target: str,
        data: bytes,
        body: bytes,
        seen: Optional[Seen],
        verdict: str,
    ) -> bool:
        """Forward one request with ``http.client`` and pass its answer back; False: end the connection."""
        forward = {k: v for k, v in _headers(data) if k.lower() not in _NOT_PASSED}
        upstream.request(method, target, body=body if body or method in ("POST", "PUT") else None,
                         headers=forward)
        response = upstream.getresponse()
        payload = response.read()
        if self.is_cut or verdict == "lost":  # the server acted, but its answer is lost
            return False
        headers = [(k, v) for k, v in response.getheaders() if k.lower() not in _NOT_PASSED]
        if seen is not None:
            self._log_response(seen, response.status, payload)
        client.sendall(_head(response.status, headers, len(payload), response.reason) + payload)
        if response.will_close:
            upstream.close()  # http.client reconnects on the next request
        return True

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

    def _decide(self, kind: str, method: str, target: str, body: bytes) -> Tuple[str, Optional[Rule], float]:
        """(verdict, the rule that answers, chaos delay) when something tampers (caller holds _lock)."""
        if self._cut:
            return "cut", None, 0.0
        if self._gated and kind == "poll":
            return "gate", None, 0.0
        rule = self._match(method, urlsplit(target).path, body) if self._rules else None
        if rule is not None:
            return "rule", rule, 0.0
        if self._chaos is not None:
            verdict, delay = self._draw()
            return verdict, None, delay
        return "upstream", None, 0.0

    def _tampering(self) -> None:
        """Recompute ``_plain``: nothing gates, cuts, rejects or plays chaos (caller holds _lock)."""
        self._plain = not (self._cut or self._gated or self._rules or self._chaos is not None)

    def _draw(self) -> Tuple[str, float]:
        """The chaos verdict for one request and its delay (caller holds _lock)."""
        assert self._chaos is not None
        error_503, reset, lost, jitter = self._chaos
        roll = self._random.random()
        delay = self._random.uniform(0.0, jitter)
        verdict = "503" if roll < error_503 else "reset" if roll < error_503 + reset else (
            "lost" if roll < error_503 + reset + lost else "")
        if verdict:
            self.chaos_counts[verdict] += 1
        return verdict or "upstream", delay


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Relay the server's bytes to the client until either side ends."""
    try:
        while True:
            chunk = src.recv(_BUFFER)
            if not chunk:
                break
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        shutdown(dst)


def _head(status: int, headers: List[Tuple[str, str]], length: int, reason: Optional[str] = None) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason or http.client.responses.get(status, 'Error')}"]
    lines.extend(f"{key}: {value}" for key, value in headers)
    lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _headers(data: bytes) -> List[Tuple[str, str]]:
    """The header fields of a request (as received: request line, headers, blank line, body)."""
    end = data.find(b"\r\n\r\n")
    head = data[:end] if end >= 0 else data[: data.find(b"\n\n")]
    fields = []
    for line in head.decode("latin-1").split("\n")[1:]:
        text = line.rstrip("\r")
        if text:
            key, _, value = text.partition(":")
            fields.append((key.strip(), value.strip()))
    return fields


def _classify(method: str, target: str) -> Tuple[str, Optional[str]]:
    """("poll"|"update"|"other", polled task type or None)."""
    bare = target.split("?", 1)[0]
    if method == "GET" and "/tasks/poll/" in bare:
        return "poll", bare.rsplit("/", 1)[-1]
    if method == "POST" and (bare.endswith("/tasks") or bare.endswith("/tasks/update-v2")):
        return "update", None
    return "other", None


def _read_request(reader: Any) -> Optional[Tuple[bytes, str, str, bytes]]:
    """One whole request: (its bytes as received, method, target, body); None at the end of the stream.

    The body is the one sent (chunked framing removed); the bytes keep the framing, for the raw relay.
    """
    line = reader.readline(65537)
    while line in (b"\r\n", b"\n"):
        line = reader.readline(65537)
    if not line:
        return None
    try:
        method_bytes, target_bytes, _ = line.split()
    except ValueError:  # not a request line
        return None
    method = method_bytes.decode("latin-1")
    target = target_bytes.decode("latin-1")
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
        chunks = []
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
            piece = reader.read(size + 2)
            head.append(piece)
            chunks.append(piece[:size])
        body = b"".join(chunks)
    elif length:
        body = reader.read(length)
        if len(body) != length:
            return None
        head.append(body)
    else:
        body = b""
    return b"".join(head), method, target, body
