"""The ``HTTP`` system task: what it may call, how, and how its result comes back.

* **Its input is read once, before any call** (:func:`read_request`), the way conductor-oss's
  Jackson reads ``HttpTask.Input``: numbers given as strings are taken, anything else that does
  not fit (``connectionTimeOut: "3s"``, headers as a list, a URI that cannot be parsed) fails the
  task with a reason instead of leaving it ``IN_PROGRESS``.
* **Only ``http`` and ``https`` URLs**, and only to loopback hosts unless more are allowed
  (``http_allowed_hosts`` / ``--http-allow-host``): ``file:``, ``ftp:`` and ``data:`` URLs fail the
  task as conductor-oss fails them ("... protocol is not supported").
* **Redirects are followed as conductor-oss follows them, each target checked** against the same
  rules: a loopback URL cannot send the call on to a refused host or to another scheme.
* **A bounded pool** (:class:`HttpCallPool`, :data:`HTTP_POOL_THREADS` threads) makes the calls
  outside the engine lock; more tasks wait in line, as they wait for conductor-oss's system-task
  workers. A task that ended while it waited (its workflow terminated) is not called.
* **A bounded answer**: the body is read up to the task payload maximum (10 MB by default) and no
  further; the whole call must end within its connection and read timeouts plus
  :data:`CALL_GRACE_SECONDS`, so a server that sends one byte at a time cannot hold a thread.
* The result is reported back like a worker's (:meth:`HttpTask.finish_system_task`). With
  ``asyncComplete: true`` on the workflow task (HTTPTaskMapper copies it into the input, over any
  ``asyncComplete`` given there), a 2xx answer leaves the task ``IN_PROGRESS`` with the response
  as its output, until an update (``POST /tasks``) completes it, as on conductor-oss.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import queue
import re
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Tuple
from urllib.parse import urlsplit

from .model import JSON

log = logging.getLogger(__name__)

#: Hosts an HTTP task may call by default: this machine only.
LOOPBACK_HOSTS = ("localhost",)
#: Threads that make HTTP tasks' calls; further tasks wait in line for one.
HTTP_POOL_THREADS = 8
#: Time a whole call may take besides its connection and read timeouts (the body's transfer).
CALL_GRACE_SECONDS = 5.0
#: conductor-oss's default connection and read timeouts, in ms (``HttpTask.Input``).
DEFAULT_TIMEOUT_MS = 3000
_JAVA_INT_MAX = 2 ** 31 - 1
_SCHEMES = ("http", "https")
_READ_CHUNK = 64 * 1024
_INTEGER = re.compile(r"^\s*[+-]?\d+\s*$")


class BadHttpInput(Exception):
    """The task's ``http_request`` cannot be turned into a call; the message is the task's reason."""


class HttpCall(NamedTuple):
    """One HTTP task's request, read and checked (see :func:`read_request`)."""

    uri: str
    method: str
    headers: Dict[str, str]
    body: Optional[bytes]
    timeout: float  # seconds: the connection and each read
    deadline: float  # seconds the whole call may take


def host_allowed(url: str, allowed: Iterable[str]) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    patterns = list(allowed)
    if "*" in patterns or host in patterns:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in LOOPBACK_HOSTS


def scheme_refusal(url: str) -> Optional[str]:
    """Why conductor-oss's HTTP client could not call ``url`` (its scheme, its syntax), or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as error:
        return "Illegal URI %s: %s" % (url, error)
    scheme = parts.scheme.lower()
    if not scheme:
        return "URI is not absolute: %s" % url
    if scheme not in _SCHEMES:
        return "%s protocol is not supported" % scheme
    return None


def host_refusal(url: str) -> str:
    return ("LocalConductor does not call %s: HTTP tasks may call loopback hosts only, unless the host is "
            "allowed (LocalConductor(http_allowed_hosts=[...]) or --http-allow-host)" % urlsplit(url).hostname)


# -- the input ---------------------------------------------------------------------------------------


def read_request(spec: JSON) -> HttpCall:
    """The call ``spec`` (an ``http_request``, or the flat input) asks for; :class:`BadHttpInput` if none."""
    method = _text(spec, "method").upper()
    uri = _text(spec, "uri")
    raw_headers = spec.get("headers")
    if raw_headers is not None and not isinstance(raw_headers, dict):
        raise BadHttpInput("Invalid HTTP request: 'headers' must be a JSON object of names and values, got %s"
                           % _json_type(raw_headers))
    headers = {str(name): _header_value(value) for name, value in (raw_headers or {}).items() if value is not None}
    body = spec.get("body")
    data = None
    if body is not None and method not in ("GET", "HEAD", "DELETE"):
        data = body.encode("utf-8") if isinstance(body, str) else json.dumps(body).encode("utf-8")
        headers.setdefault("Content-Type", _text(spec, "contentType", "application/json"))
    headers.setdefault("Accept", _text(spec, "accept", "application/json"))
    connect_ms, read_ms = _millis(spec, "connectionTimeOut"), _millis(spec, "readTimeOut")
    timeout = max(connect_ms, read_ms) / 1000.0
    return HttpCall(uri, method, headers, data, timeout, (connect_ms + read_ms) / 1000.0 + CALL_GRACE_SECONDS)


def _text(spec: JSON, name: str, default: str = "") -> str:
    """A string field; numbers become their text (as Jackson coerces them), anything else is refused."""
    value = spec.get(name)
    if value is None:
        return default
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    raise BadHttpInput("Invalid HTTP request: '%s' must be a string, got %s" % (name, _json_type(value)))


def _header_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _millis(spec: JSON, name: str) -> int:
    """A timeout in ms: a whole number from 0 to 2^31-1 (0 or none: the 3000 ms default)."""
    value = spec.get(name)
    number: Optional[int] = None
    if value is None:
        number = 0
    elif isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and math.isfinite(value):
        number = int(value)  # Jackson truncates a fraction
    elif isinstance(value, str) and _INTEGER.match(value):
        number = int(value)
    if number is None or not 0 <= number <= _JAVA_INT_MAX:
        raise BadHttpInput("Invalid HTTP request: '%s' must be a whole number of milliseconds from 0 to %d, got %s"
                           % (name, _JAVA_INT_MAX, json.dumps(value)[:100]))
    return number or DEFAULT_TIMEOUT_MS


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(type(value), "a number")


# -- the call ----------------------------------------------------------------------------------------


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to a URL the task could have called itself."""

    def __init__(self, allowed: Tuple[str, ...]) -> None:
        self._allowed = allowed

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> Optional[urllib.request.Request]:
        why = scheme_refusal(newurl) or (None if host_allowed(newurl, self._allowed) else host_refusal(newurl))
        if why is not None:
            raise urllib.error.URLError("Redirect to %s refused: %s" % (newurl, why))
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
    pass


class HttpCaller:
    """Makes one HTTP task's call: (status, outputData, reason), in conductor-oss's shapes.

    ``allowed``: the hosts besides loopback ones; ``max_body``: bytes of an answer read at most.
    No proxy from the environment is used (conductor-oss's HTTP client uses none either).
    """

    def __init__(self, allowed: Tuple[str, ...], max_body: int) -> None:
        self.allowed = allowed
        self.max_body = max_body
        self._opener = urllib.request.OpenerDirector()
        for handler in (urllib.request.HTTPHandler(), urllib.request.HTTPSHandler(), _CheckedRedirects(allowed),
                        urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPErrorProcessor(),
                        urllib.request.UnknownHandler()):
            self._opener.add_handler(handler)

    def call(self, request: HttpCall) -> Tuple[str, JSON, Optional[str]]:
        method, uri = request.method, request.uri
        started = time.monotonic()
        try:
            prepared = urllib.request.Request(uri, data=request.body, method=method, headers=request.headers)
            with self._opener.open(prepared, timeout=request.timeout) as answer:
                raw = self._read(answer, started + request.deadline)
                code, phrase, answer_headers = answer.status, answer.reason, answer.headers
        except urllib.error.HTTPError as error:
            text = error.read(min(self.max_body, 64 * 1024)).decode("utf-8", "replace").replace("\n", "<EOL>")
            message = 'java.lang.Exception: %d %s on %s request for "%s": "%s"' % (
                error.code, error.reason, method, uri, text)
            return "FAILED", {"response": message}, "Failed to invoke HTTP task due to: " + message
        except _TooLarge:
            reason = ("The payload size of the HTTP answer is greater than the permissible limit: %d bytes "
                      "(LocalConductor stops reading an answer there)" % self.max_body)
            return "FAILED_WITH_TERMINAL_ERROR", {}, reason
        except _TooSlow:
            message = 'java.lang.Exception: I/O error on %s request for "%s": the call did not finish within %.1f s' % (
                method, uri, request.deadline)
            return "FAILED", {"response": message}, "Failed to invoke HTTP task due to: " + message
        except (OSError, ValueError, LookupError) as error:  # LookupError: a header that is not Latin-1
            message = 'java.lang.Exception: I/O error on %s request for "%s": %s' % (method, uri, _cause(error, uri))
            return "FAILED", {"response": message}, "Failed to invoke HTTP task due to: " + message
        text = raw.decode("utf-8", "replace")
        try:
            parsed: Any = json.loads(text) if text.strip() else None
        except ValueError:
            parsed = text
        grouped: Dict[str, List[str]] = {}
        for key, value in answer_headers.items():
            grouped.setdefault(key, []).append(value)
        response = {"statusCode": code, "reasonPhrase": phrase, "headers": grouped, "body": parsed}
        return "COMPLETED", {"response": response}, None

    def _read(self, answer: Any, deadline: float) -> bytes:
        """The body, never more than ``max_body`` bytes of it, and not on past ``deadline``."""
        length = answer.headers.get("Content-Length")
        if length is not None and length.strip().isdigit() and int(length) > self.max_body:
            raise _TooLarge()
        body = bytearray()
        while True:
            if time.monotonic() >= deadline:
                raise _TooSlow()
            chunk = answer.read1(_READ_CHUNK)
            if not chunk:
                return bytes(body)
            body += chunk
            if len(body) > self.max_body:
                raise _TooLarge()


def _cause(error: BaseException, uri: str) -> str:
    cause: Any = getattr(error, "reason", error)
    if isinstance(cause, ConnectionRefusedError):
        parts = urlsplit(uri)
        return "Connect to %s://%s failed: Connection refused" % (parts.scheme, parts.netloc)
    return str(cause)


# -- the pool ----------------------------------------------------------------------------------------


class HttpCallPool:
    """At most ``threads`` daemon threads that run ``work(task_id, call)`` for each submitted call,
    in the order submitted; calls beyond them wait in line. Daemon threads: a call still running at
    exit (bounded by its deadline anyway) never holds the process."""

    def __init__(self, threads: int, work: Callable[[str, HttpCall], None]) -> None:
        self._size = threads
        self._work = work
        self._queue: "queue.Queue[Optional[Tuple[str, HttpCall]]]" = queue.Queue()
        self._threads: List[threading.Thread] = []
        self._lock = threading.Lock()  # guards _threads and _closed
        self._closed = False

    def submit(self, task_id: str, call: HttpCall) -> None:
        with self._lock:
            if self._closed:
                return
            self._queue.put((task_id, call))
            if len(self._threads) < self._size:
                thread = threading.Thread(target=self._run, name="local-conductor-http-task-%d" % len(self._threads),
                                          daemon=True)
                self._threads.append(thread)
                thread.start()

    def close(self) -> None:
        """Take no more calls and let every thread end after its current call (not waited for)."""
        with self._lock:
            self._closed = True
            for _ in self._threads:
                self._queue.put(None)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._closed:
                continue  # drain what waited: the engine is gone
            try:
                self._work(*item)
            except Exception:  # keep the thread whatever one call does; the task stays for its timeout
                log.exception("HTTP task %s could not be run or reported", item[0])


class HttpTask:
    """The HTTP task's executor (mixed into the system tasks)."""

    # what the engine provides
    _http_caller: HttpCaller
    _http_pool: HttpCallPool
    _tx: Callable[[], Any]
    _save_task: Callable[[JSON], None]
    _decide: Callable[[JSON, List[JSON]], None]

    # -- HTTP: on the pool ------------------------------------------------------------------------
    def _run_http(self, workflow: JSON, tasks: List[JSON], task: JSON) -> bool:
        if task["status"] != "SCHEDULED":
            return False
        params = task["inputData"]
        spec = params.get("http_request") if isinstance(params.get("http_request"), dict) else params
        if not spec.get("uri"):
            task.update(status="FAILED",
                        reasonForIncompletion="Missing HTTP URI.  See documentation for HttpTask for required input parameters")
            return True
        if not spec.get("method"):
            task.update(status="FAILED", reasonForIncompletion="No HTTP method specified")
            return True
        try:
            call = read_request(spec)
        except BadHttpInput as error:
            task.update(status="FAILED", reasonForIncompletion=str(error))
            return True
        why = scheme_refusal(call.uri)
        if why is not None:  # what conductor-oss's HTTP client says of a URL it cannot call
            message = 'java.lang.Exception: I/O error on %s request for "%s": %s' % (call.method, call.uri, why)
            task.update(status="FAILED", reasonForIncompletion="Failed to invoke HTTP task due to: " + message,
                        outputData={"response": message})
            return True
        if not host_allowed(call.uri, self._http_caller.allowed):
            task.update(status="FAILED", reasonForIncompletion=host_refusal(call.uri))  # conductor-oss calls any
            return True
        task.update(status="IN_PROGRESS", workerId="local-conductor", pollCount=1,
                    startTime=task.get("startTime") or int(time.time() * 1000))
        self._http_pool.submit(task["taskId"], call)  # its thread waits for the lock: it sees this decide
        return True

    def _call_http(self, task_id: str, call: HttpCall) -> None:
        with self._tx() as store:
            task = store.get_task(task_id)
        if task is None or task["status"] != "IN_PROGRESS":
            return  # ended while it waited for a thread (its workflow was terminated)
        status, output, reason = self._http_caller.call(call)
        if status == "COMPLETED" and task["inputData"].get("asyncComplete") is True:
            status = "IN_PROGRESS"  # asyncComplete: the answer is kept, an external update completes it
        self.finish_system_task(task_id, status, output, reason)

    def finish_system_task(self, task_id: str, status: str, output: JSON, reason: Optional[str]) -> None:
        """Report the result of a system task that ran outside the lock (HTTP)."""
        with self._tx() as store:
            task = store.get_task(task_id)
            if task is None or task["status"] != "IN_PROGRESS":
                return
            task.update(status=status, outputData=output, reasonForIncompletion=reason)
            self._save_task(task)
            workflow = store.get_workflow(task["workflowInstanceId"])
            if workflow is not None:
                self._decide(workflow, store.workflow_tasks(workflow["workflowId"]))
