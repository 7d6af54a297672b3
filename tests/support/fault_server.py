"""A fault-injecting loopback HTTP/1.1 server for the worker tests (stdlib only: sockets + threads).

It plays Conductor's task API for **one** task type, from a queue of tasks:

* ``GET /api/tasks/poll/batch/{taskType}?count=&timeout=`` ("poll"): up to ``count`` queued tasks,
  waiting up to ``timeout`` ms (in small steps) while the queue is empty, then ``200 []``;
* ``POST /api/tasks`` ("update"): records the result, answers ``200`` text/plain with the task id; a
  result ``IN_PROGRESS`` with ``callbackAfterSeconds=0`` (a task handed back) re-queues the task;
* ``POST /api/tasks/update-v2`` ("update_v2"): records the result like "update", answers ``200`` with
  the next queued task, or ``204`` when there is none.

Each endpoint has a **script**: a list of :class:`Fault` values, one consumed per request; when it
runs out the endpoint behaves normally. What a fault does to the queue and to the record:

================  =======================================  ======================================
fault             poll                                     update / update-v2
================  =======================================  ======================================
``ok``            dequeues, answers                        records, answers
``status``        answers that status; dequeues nothing    answers that status; records nothing
``wrong_shape``   ``200`` with that body; dequeues nothing  records; ``200`` with that body
``truncate``      dequeues; sends a partial body, closes   records; sends a partial body, closes
``stall``         dequeues; silent N s, then closes        records; silent N s, then closes
``reset``         dequeues nothing; RST                    records nothing; RST
``lost``          dequeues; RST instead of the answer      records; RST instead of the answer
================  =======================================  ======================================

(``truncate``, ``stall`` and ``lost`` are answers lost *after* the server did the work, as when a real
server's answer dies on the way.)

It records every request, every accepted update (``updates``: taskId -> list of TaskResult dicts),
every hand-out of tasks (``handouts``: ids and whether that answer was lost), TCP connections accepted
and open, and how many of its answers closed the connection (``closes``).

Keep-alive with ``Content-Length`` bodies; each response is written with one ``sendall`` on a
``TCP_NODELAY`` socket. Every loop is bounded: sockets use short timeouts and check the closing flag,
idle connections are dropped after ``idle_timeout`` seconds, and :meth:`FaultServer.close` stops and
joins every thread.
"""
from __future__ import annotations

import collections
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

from support.sockets import close, listen, reset, shutdown

ENDPOINTS = ("poll", "update", "update_v2")
_POLL_PREFIX = "/api/tasks/poll/batch/"
_MAX_HEAD = 64 * 1024
_MAX_BODY = 8 * 1024 * 1024
_TICK = 0.05  # how often blocked loops look at the closing flag
_REASONS = {
    200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 413: "Payload Too Large",
    429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}


@dataclass(frozen=True)
class Fault:
    """What the server does with one request; build with the class methods (``Fault.stall(0.5)``)."""

    kind: str
    code: int = 200
    body: bytes = b""
    headers: Tuple[Tuple[str, str], ...] = ()
    seconds: float = 0.0

    @classmethod
    def ok(cls) -> "Fault":
        return cls("ok")

    @classmethod
    def status(cls, code: int, body: bytes = b"", headers: Optional[Mapping[str, str]] = None) -> "Fault":
        return cls("status", code=code, body=body, headers=tuple((headers or {}).items()))

    @classmethod
    def wrong_shape(cls, body: bytes) -> "Fault":
        return cls("wrong_shape", body=body)

    @classmethod
    def truncate(cls) -> "Fault":
        return cls("truncate")

    @classmethod
    def stall(cls, seconds: float) -> "Fault":
        return cls("stall", seconds=seconds)

    @classmethod
    def reset(cls) -> "Fault":
        return cls("reset")

    @classmethod
    def lost(cls) -> "Fault":
        return cls("lost")

    def __repr__(self) -> str:  # short, so that hypothesis' falsifying examples stay readable
        if self.kind == "status":
            extra = f", {dict(self.headers)!r}" if self.headers else ""
            return f"status({self.code}, {self.body!r}{extra})"
        if self.kind == "wrong_shape":
            return f"wrong_shape({self.body!r})"
        if self.kind == "stall":
            return f"stall({self.seconds:g})"
        return self.kind

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis' pretty printer: use __repr__
        printer.text(repr(self))


@dataclass
class Request:
    """One request the server read."""

    time: float
    method: str
    path: str
    query: Dict[str, str]
    body: bytes
    endpoint: Optional[str]
    fault: Fault

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class HandOut:
    """Tasks the server dequeued for one answer; ``lost`` when that answer never arrived whole."""

    time: float
    endpoint: str
    task_ids: List[str]
    lost: bool


@dataclass
class _Answer:
    status: int
    body: bytes = b""
    content_type: Optional[str] = None
    headers: Tuple[Tuple[str, str], ...] = ()
    task_ids: List[str] = field(default_factory=list)  # tasks this answer hands out


class _Closed(Exception):
    """The peer went away, the request was malformed, or the server is closing."""


def make_task(
    task_type: str,
    task_id: str,
    workflow_id: Optional[str] = None,
    input_data: Optional[Mapping[str, Any]] = None,
    response_timeout_seconds: int = 30,
) -> Dict[str, Any]:
    """A task as the server hands it out (``IN_PROGRESS``)."""
    return {
        "taskId": task_id,
        "workflowInstanceId": workflow_id or f"wf-{task_id}",
        "taskType": task_type,
        "status": "IN_PROGRESS",
        "inputData": dict(input_data or {}),
        "responseTimeoutSeconds": response_timeout_seconds,
    }


def _content_type_for(body: bytes) -> str:
    stripped = body.lstrip()[:1]
    return "application/json" if stripped in (b"{", b"[", b'"') or stripped.isdigit() else "text/plain"


class FaultServer:
    """``FaultServer(task_type, tasks, poll=[...], update=[...], update_v2=[...])``; ``url`` ends in ``/api``."""

    def __init__(
        self,
        task_type: str,
        tasks: Iterable[Mapping[str, Any]] = (),
        *,
        poll: Sequence[Fault] = (),
        update: Sequence[Fault] = (),
        update_v2: Sequence[Fault] = (),
        max_poll_wait: float = 5.0,
        idle_timeout: float = 30.0,
    ) -> None:
        self.task_type = task_type
        self.max_poll_wait = max_poll_wait
        self.idle_timeout = idle_timeout
        self._cond = threading.Condition()  # guards everything below; notified when tasks are queued
        self._queue: Deque[Dict[str, Any]] = collections.deque()
        self._known: Dict[str, Dict[str, Any]] = {}  # every task ever queued, by id
        self._scripts: Dict[str, Deque[Fault]] = {name: collections.deque() for name in ENDPOINTS}
        self._requests: List[Request] = []
        self._updates: Dict[str, List[Dict[str, Any]]] = {}
        self._handouts: List[HandOut] = []
        self._given_back: List[str] = []
        self._accepted = 0
        self._open = 0
        self._closes = 0
        self._idle_closes = 0
        self._clients: Set[socket.socket] = set()
        self._threads: List[threading.Thread] = []
        self._closing = threading.Event()
        self.add_tasks(tasks)
        self.script("poll", poll)
        self.script("update", update)
        self.script("update_v2", update_v2)
        self._listener = listen(128)
        self._listener.settimeout(_TICK)
        self.port = self._listener.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = self.base + "/api"
        self._acceptor = threading.Thread(target=self._accept_loop, name="test-fault-accept", daemon=True)
        self._acceptor.start()

    # -- control -----------------------------------------------------------------------------------

    def add_tasks(self, tasks: Iterable[Mapping[str, Any]]) -> None:
        with self._cond:
            for task in tasks:
                copy = dict(task)
                self._queue.append(copy)
                if isinstance(copy.get("taskId"), str):
                    self._known[copy["taskId"]] = copy
            self._cond.notify_all()

    def script(self, endpoint: str, faults: Iterable[Fault]) -> None:
        """Append ``faults`` to the script of ``endpoint`` ("poll", "update" or "update_v2")."""
        if endpoint not in self._scripts:
            raise ValueError(f"unknown endpoint {endpoint!r}; one of {ENDPOINTS}")
        with self._cond:
            self._scripts[endpoint].extend(faults)

    def close(self) -> None:
        """Stop accepting, reset every open connection and join every thread."""
        self._closing.set()
        with self._cond:
            self._cond.notify_all()
            clients = list(self._clients)
        for client in clients:
            shutdown(client)  # wakes a thread blocked on it
        self._acceptor.join(5)
        try:
            self._listener.close()
        except OSError:
            pass
        with self._cond:
            threads = list(self._threads)
        for thread in threads:
            thread.join(5)

    def __enter__(self) -> "FaultServer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- what happened -----------------------------------------------------------------------------

    @property
    def requests(self) -> List[Request]:
        with self._cond:
            return list(self._requests)

    @property
    def updates(self) -> Dict[str, List[Dict[str, Any]]]:
        """Every update the server accepted: taskId -> the TaskResult dicts received, in order."""
        with self._cond:
            return {task_id: list(results) for task_id, results in self._updates.items()}

    @property
    def handouts(self) -> List[HandOut]:
        with self._cond:
            return list(self._handouts)

    @property
    def given_back(self) -> List[str]:
        """Ids of tasks re-queued because a worker handed them back."""
        with self._cond:
            return list(self._given_back)

    @property
    def queued_ids(self) -> List[Any]:
        with self._cond:
            return [task.get("taskId") for task in self._queue]

    @property
    def remaining_faults(self) -> Dict[str, int]:
        with self._cond:
            return {name: len(script) for name, script in self._scripts.items()}

    @property
    def connections_accepted(self) -> int:
        with self._cond:
            return self._accepted

    @property
    def connections_open(self) -> int:
        with self._cond:
            return self._open

    @property
    def closes(self) -> int:
        """How many of the server's answers (or non-answers) closed the connection."""
        with self._cond:
            return self._closes

    @property
    def idle_closes(self) -> int:
        with self._cond:
            return self._idle_closes

    def count(self, endpoint: Optional[str] = None) -> int:
        with self._cond:
            return sum(1 for r in self._requests if endpoint is None or r.endpoint == endpoint)

    # -- serving -----------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.settimeout(_TICK)
            thread = threading.Thread(target=self._serve, args=(client,), name="test-fault-conn", daemon=True)
            with self._cond:
                if self._closing.is_set():
                    refused = True
                else:
                    refused = False
                    self._accepted += 1
                    self._open += 1
                    self._clients.add(client)
                    self._threads = [t for t in self._threads if t.is_alive()]
                    self._threads.append(thread)
            if refused:
                reset(client)
                return
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        buffer = bytearray()
        how: Callable[[socket.socket], None] = reset  # how the socket is closed at the end
        try:
            while True:
                request = self._read_request(client, buffer)
                if request is None:  # the client closed (or went idle too long)
                    how = close
                    return
                keep_open, how = self._answer(client, request)
                if not keep_open:
                    return
        except _Closed:
            return
        except OSError:
            return
        finally:
            with self._cond:
                self._clients.discard(client)
                self._open -= 1
            how(client)

    def _recv(self, client: socket.socket) -> bytes:
        """Some bytes, ``b""`` at EOF; waits at most ``idle_timeout`` s; raises _Closed when closing."""
        idle_until = time.monotonic() + self.idle_timeout
        while True:
            if self._closing.is_set():
                raise _Closed()
            try:
                return client.recv(65536)
            except socket.timeout:
                if time.monotonic() >= idle_until:
                    with self._cond:
                        self._idle_closes += 1
                    return b""

    def _read_request(self, client: socket.socket, buffer: bytearray) -> Optional[Tuple[str, str, Dict[str, str], bytes]]:
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(buffer) > _MAX_HEAD:
                raise _Closed()
            chunk = self._recv(client)
            if not chunk:
                if buffer:
                    raise _Closed()  # a partial request
                return None
            buffer += chunk
        head = bytes(buffer[:end]).decode("latin-1")
        del buffer[: end + 4]
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            raise _Closed()
        method, target, _ = parts
        headers: Dict[str, str] = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        if "transfer-encoding" in headers:
            raise _Closed()  # the client under test always sends Content-Length
        try:
            length = int(headers.get("content-length") or 0)
        except ValueError:
            raise _Closed() from None
        if length < 0 or length > _MAX_BODY:
            raise _Closed()
        while len(buffer) < length:
            chunk = self._recv(client)
            if not chunk:
                raise _Closed()
            buffer += chunk
        body = bytes(buffer[:length])
        del buffer[:length]
        return method, target, headers, body

    def _endpoint(self, method: str, path: str) -> Optional[str]:
        if method == "GET" and path.startswith(_POLL_PREFIX):
            return "poll"
        if method == "POST" and path == "/api/tasks":
            return "update"
        if method == "POST" and path == "/api/tasks/update-v2":
            return "update_v2"
        return None

    def _answer(self, client: socket.socket, request: Tuple[str, str, Dict[str, str], bytes]) -> Tuple[bool, Any]:
        """Handle one request; (keep the connection open?, how to close it)."""
        method, target, headers, body = request
        parts = urlsplit(target)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        endpoint = self._endpoint(method, parts.path)
        with self._cond:
            script = self._scripts[endpoint] if endpoint else None
            fault = script.popleft() if script else Fault.ok()
            self._requests.append(Request(time.monotonic(), method, parts.path, query, body, endpoint, fault))
        client_closes = headers.get("connection", "").lower() == "close"

        if fault.kind == "reset":
            self._count_close()
            return False, reset
        if fault.kind == "status":
            answer = _Answer(fault.code, fault.body, _content_type_for(fault.body) if fault.body else None, fault.headers)
        elif fault.kind == "wrong_shape":
            if endpoint in ("update", "update_v2"):
                self._record_update(body)
            answer = _Answer(200, fault.body, _content_type_for(fault.body))
        else:  # ok, truncate, stall, lost: the server does the work; the latter three lose the answer
            answer = self._normal(endpoint, parts.path, query, body)
            if answer.task_ids:
                with self._cond:
                    self._handouts.append(
                        HandOut(time.monotonic(), endpoint or "", list(answer.task_ids), fault.kind != "ok")
                    )

        if fault.kind == "lost":
            self._count_close()
            return False, reset
        if fault.kind == "stall":
            self._count_close()
            self._closing.wait(fault.seconds)
            return False, close
        if fault.kind == "truncate":
            payload = answer.body or b'{"taskId":"truncated","workflowInstanceId":"truncated"}'
            status = answer.status if answer.body else 200
            sent = payload[: max(1, len(payload) // 2)]
            self._count_close()
            client.sendall(self._head(status, "application/json", (), len(payload) + 32) + sent)
            return False, close
        wire = self._head(answer.status, answer.content_type, answer.headers, len(answer.body), client_closes)
        if client_closes:
            self._count_close()
        client.sendall(wire + answer.body)
        return not client_closes, close

    def _count_close(self) -> None:
        with self._cond:
            self._closes += 1

    @staticmethod
    def _head(
        status: int,
        content_type: Optional[str],
        headers: Iterable[Tuple[str, str]],
        length: int,
        close: bool = False,
    ) -> bytes:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        lines.extend(f"{key}: {value}" for key, value in headers)
        if status != 204:
            lines.append(f"Content-Length: {length}")
        if close:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    # -- the task API ------------------------------------------------------------------------------

    def _normal(self, endpoint: Optional[str], path: str, query: Dict[str, str], body: bytes) -> _Answer:
        if endpoint == "poll":
            return self._poll(unquote(path[len(_POLL_PREFIX):]), query)
        if endpoint in ("update", "update_v2"):
            result = self._record_update(body)
            if result is None:
                return _Answer(400, b'{"status":400,"message":"not a TaskResult","retryable":false}', "application/json")
            if endpoint == "update":
                return _Answer(200, str(result["taskId"]).encode(), "text/plain")
            with self._cond:
                next_task = self._queue.popleft() if self._queue else None
            if next_task is None:
                return _Answer(204)
            return _Answer(200, json.dumps(next_task).encode(), "application/json", task_ids=[next_task.get("taskId")])
        return _Answer(404, b"<html><body><h1>Whitelabel Error Page</h1></body></html>", "text/html")

    def _poll(self, task_type: str, query: Dict[str, str]) -> _Answer:
        try:
            count = min(max(int(query.get("count", "1")), 1), 1000)
            timeout = min(max(int(query.get("timeout", "100")), 0) / 1000.0, self.max_poll_wait)
        except ValueError:
            return _Answer(400, b'{"status":400,"message":"bad count or timeout","retryable":false}', "application/json")
        tasks: List[Dict[str, Any]] = []
        if task_type == self.task_type:
            deadline = time.monotonic() + timeout
            with self._cond:
                while not self._queue and not self._closing.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(min(left, _TICK))
                while self._queue and len(tasks) < count:
                    tasks.append(self._queue.popleft())
        return _Answer(200, json.dumps(tasks).encode(), "application/json", task_ids=[t.get("taskId") for t in tasks])

    def _record_update(self, body: bytes) -> Optional[Dict[str, Any]]:
        """Record a TaskResult; a task handed back (IN_PROGRESS, callback 0) is queued again."""
        try:
            result = json.loads(body) if body else None
        except ValueError:
            return None
        if not isinstance(result, dict) or "taskId" not in result:
            return None
        task_id = result["taskId"]
        with self._cond:
            self._updates.setdefault(str(task_id), []).append(result)
            handed_back = (
                result.get("status") == "IN_PROGRESS"
                and not result.get("callbackAfterSeconds")
                and not result.get("extendLease")
                and task_id in self._known
                and all(task.get("taskId") != task_id for task in self._queue)
            )
            if handed_back:
                self._queue.appendleft(dict(self._known[task_id]))
                self._given_back.append(task_id)
                self._cond.notify_all()
        return result


__all__ = ["ENDPOINTS", "Fault", "FaultServer", "HandOut", "Request", "make_task"]
