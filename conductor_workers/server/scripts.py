"""JavaScript and jq for LocalConductor's system tasks, from the optional ``server`` extra, run in
runner processes with a time limit and a memory limit.

conductor-oss evaluates ``SWITCH``/``DECISION`` javascript cases, ``DO_WHILE`` loop conditions and
``INLINE`` scripts with GraalJS, and ``JSON_JQ_TRANSFORM`` queries with jq. Neither engine is in
the standard library: ``pip install conductor_workers[server]`` brings ``mini-racer`` (V8, the
ECMAScript that GraalJS also implements; Python 3.10+) and ``jq`` (the C library's bindings).
Without them, a workflow definition that needs one is refused at registration with a 400 that
names the extra, and everything else works.

No script runs in the server's process: a jq query holds the GIL until it ends (the server would stop
answering, SIGTERM included) and V8 ends the whole process when it runs out of memory. So:

* each engine has a small pool of runner processes (:mod:`.script_child`), started when a script first
  needs one; an evaluation takes an idle runner, sends it the source and the input as JSON, and waits
  for its one-line answer without holding the GIL;
* a runner that has not answered by the time limit is killed (V8 usually stops the script itself,
  and its runner is kept); a runner that dies (memory limit, crash) is forgotten; either way a new one
  is started for the next script, and only the task whose script it ran fails;
* the failure reads as conductor-oss's: a time limit is ``Script not evaluated within N seconds,
  interrupted.`` (retryable: an ``INLINE`` task is FAILED, not FAILED_WITH_TERMINAL_ERROR), a script
  error ``Error evaluating the script `...``` (terminal);
* :meth:`Scripts.close` kills every runner at once, so that a server stops within a moment even
  while a script runs; an evaluation cut short that way raises :class:`ScriptsStopped` (not a
  :class:`ScriptError`), so the decide that asked for it is rolled back instead of failing a task.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from typing import Any, List, Optional, Tuple

from .. import _validate

log = logging.getLogger(__name__)

EXTRA_HINT = "pip install 'conductor_workers[server]'"
#: conductor-oss's GraalJS evaluator stops a script after 4 s (CONDUCTOR_SCRIPT_MAX_EXECUTION_SECONDS).
DEFAULT_TIME_LIMIT = 4.0
DEFAULT_MEMORY_MB = 256
MAX_TIME_LIMIT = 3600.0
MIN_MEMORY_MB, MAX_MEMORY_MB = 32, 65536
#: Runners kept per engine. Scripts are evaluated one at a time today (inside the engine's lock);
#: a second runner is ready while the first is being replaced.
POOL_SIZE = 2
#: How much longer than the time limit a JavaScript runner is given to report V8's own timeout.
_REPORT_GRACE = 0.5
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: Signals a runner dies of when it runs out of memory: jq aborts, V8 traps on a fatal error, the
#: kernel's OOM killer kills.
_MEMORY_DEATHS = frozenset(-int(s) for s in (signal.SIGABRT, signal.SIGSEGV, getattr(signal, "SIGTRAP", 5),
                                             getattr(signal, "SIGBUS", 7), getattr(signal, "SIGKILL", 9)))


class ScriptLimits:
    """How long (seconds) and how much memory (MB) one script or jq query may use.

    ``time_limit`` defaults to conductor-oss's 4 s; past it the task fails with conductor-oss's
    ``Script not evaluated within N seconds, interrupted.``. ``memory_mb`` bounds V8's heap, or jq's
    address space beyond what its runner holds at start.
    """

    __slots__ = ("time_limit", "memory_mb")

    def __init__(self, time_limit: float = DEFAULT_TIME_LIMIT, memory_mb: int = DEFAULT_MEMORY_MB) -> None:
        self.time_limit = _validate.seconds("time_limit", time_limit, positive=True, maximum=MAX_TIME_LIMIT)
        self.memory_mb = _validate.count("memory_mb", memory_mb, minimum=MIN_MEMORY_MB, maximum=MAX_MEMORY_MB)

    def __repr__(self) -> str:
        return "ScriptLimits(time_limit=%g, memory_mb=%d)" % (self.time_limit, self.memory_mb)


class ScriptError(Exception):
    """A script or query failed (syntax, runtime error, time or memory limit): the task fails with this.

    ``retryable`` is True for the time limit, which conductor-oss reports with a NonTransientException
    (an INLINE task is then FAILED rather than FAILED_WITH_TERMINAL_ERROR).
    """

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class ScriptsStopped(Exception):
    """The server is stopping: the script was cut short, and the decide that asked for it is rolled back.

    Deliberately not an :class:`~.errors.EngineError`: no handler inside a decide may turn it into a
    task's failure; the HTTP layer answers 503.
    """


def javascript_available() -> bool:
    return importlib.util.find_spec("py_mini_racer") is not None


def jq_available() -> bool:
    return importlib.util.find_spec("jq") is not None


def constant(script: str) -> Optional[bool]:
    """``true`` / ``false`` (the usual loop condition of a DO_WHILE over ``items``): no engine needed."""
    text = (script or "").strip().rstrip(";").strip()
    return {"true": True, "false": False, "": False}.get(text)  # an empty script evaluates to null


def missing_engine(kind: str) -> Optional[str]:
    """None when ``kind`` ("javascript" or "jq") can run here, else the reason it cannot."""
    if kind == "javascript" and not javascript_available():
        return ("LocalConductor needs a JavaScript engine for this (GraalJS on conductor-oss): "
                "install it with %s (mini-racer, Python 3.10+)" % EXTRA_HINT)
    if kind == "jq" and not jq_available():
        return "LocalConductor needs jq for JSON_JQ_TRANSFORM: install it with %s" % EXTRA_HINT
    return None


class Scripts:
    """The script engines of one server: a pool of runner processes per engine."""

    def __init__(self, limits: Optional[ScriptLimits] = None) -> None:
        self.limits = limits or ScriptLimits()
        self._pools = {kind: _Pool(kind, self.limits) for kind in ("javascript", "jq")}

    def javascript(self, script: str, bindings: Any) -> Any:
        """Evaluate ``script`` with ``$`` bound to ``bindings``; its completion value, as JSON."""
        fixed = constant(script)
        if fixed is not None:
            return fixed
        reason = missing_engine("javascript")
        if reason is not None:
            raise ScriptError(reason)
        code, payload = self._pools["javascript"].evaluate(script, json.dumps(bindings))
        if code == "=":
            return json.loads(payload)
        if code == "!":
            raise ScriptError(_script_error(json.loads(payload)))
        if code == "T":
            raise ScriptError("Script not evaluated within %s seconds, interrupted." % _seconds(self.limits),
                              retryable=True)
        raise ScriptError("Error evaluating the script `Script %s`" % _memory(code, self.limits))

    def jq(self, query: str, data: Any) -> List[Any]:
        """Every value ``query`` gives for ``data``."""
        reason = missing_engine("jq")
        if reason is not None:
            raise ScriptError(reason)
        code, payload = self._pools["jq"].evaluate(query, json.dumps(data))
        if code == "=":
            values: List[Any] = json.loads(payload)
            return values
        if code == "!":
            raise ScriptError(_first_line(json.loads(payload)))
        if code == "T":
            raise ScriptError("Query not evaluated within %s seconds, interrupted." % _seconds(self.limits),
                              retryable=True)
        raise ScriptError("Query %s" % _memory(code, self.limits))

    def close(self) -> None:
        """Kill every runner now; evaluations under way raise :class:`ScriptsStopped`, later ones too."""
        for pool in self._pools.values():
            pool.close()


class _Pool:
    """Runner processes of one engine: at most :data:`POOL_SIZE`, started on demand."""

    def __init__(self, kind: str, limits: ScriptLimits) -> None:
        self._kind = kind
        self._limits = limits
        self._changed = threading.Condition(threading.Lock())  # guards the four fields below
        self._idle: List[_Runner] = []
        self._busy: List[_Runner] = []
        self._starting = 0
        self._closed = False

    def evaluate(self, source: str, data: str) -> Tuple[str, bytes]:
        """(code, payload) of the runner's answer (see :mod:`.script_child`); ``K`` a runner killed
        at the time limit, ``X`` one that died, ``L`` an answer over the size limit."""
        runner = self._take()
        keep = False
        try:
            code, payload = runner.evaluate(source, data)
            keep = code in ("=", "!", "T")
        finally:
            self._give_back(runner, keep)
        if self._closed:
            raise ScriptsStopped("LocalConductor is stopping")
        if code == "K":
            return "T", b""
        return code, payload

    def _take(self) -> "_Runner":
        with self._changed:
            while True:
                if self._closed:
                    raise ScriptsStopped("LocalConductor is stopping")
                if self._idle:
                    runner = self._idle.pop()
                    self._busy.append(runner)
                    return runner
                if len(self._busy) + self._starting < POOL_SIZE:
                    self._starting += 1
                    break
                self._changed.wait()
        try:
            runner = _Runner(self._kind, self._limits)
        except OSError as error:
            raise ScriptError("LocalConductor could not start a %s runner: %s" % (self._kind, error)) from error
        finally:
            with self._changed:
                self._starting -= 1
                self._changed.notify_all()
        with self._changed:
            self._busy.append(runner)
            if self._closed:
                runner.interrupt()
        return runner

    def _give_back(self, runner: "_Runner", keep: bool) -> None:
        with self._changed:
            self._busy.remove(runner)
            if keep and not self._closed:
                self._idle.append(runner)
            self._changed.notify_all()
        if not keep:
            runner.kill()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            idle, busy = self._idle, list(self._busy)
            self._idle = []
            self._changed.notify_all()
        for runner in busy:  # its evaluation sees the end of the pipe; its thread cleans up
            runner.interrupt()
        for runner in idle:
            runner.kill()


class _Runner:
    """One runner process (:mod:`.script_child`) and the pipes to it."""

    def __init__(self, kind: str, limits: ScriptLimits) -> None:
        self._limits = limits
        self._grace = _REPORT_GRACE if kind == "javascript" else 0.0
        self._max_answer = limits.memory_mb * 1024 * 1024  # no value the script held can be larger
        self._process = subprocess.Popen(
            [sys.executable, "-m", "conductor_workers.server.script_child", kind,
             str(max(1, int(limits.time_limit * 1000))), str(limits.memory_mb)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            cwd=_PACKAGE_ROOT, close_fds=True, start_new_session=True)
        assert self._process.stdout is not None
        self._answers = self._process.stdout.fileno()
        self._selector = selectors.DefaultSelector()  # owned by the thread evaluating
        self._selector.register(self._answers, selectors.EVENT_READ)
        log.debug("started %s runner %d", kind, self._process.pid)

    def evaluate(self, source: str, data: str) -> Tuple[str, bytes]:
        """Send one request and wait for its answer until the time limit (see :meth:`_Pool.evaluate`)."""
        assert self._process.stdin is not None and self._process.stdout is not None
        deadline = time.monotonic() + self._limits.time_limit + self._grace
        try:
            self._process.stdin.write(("%s\n%s\n" % (json.dumps(source), data)).encode("utf-8"))
            self._process.stdin.flush()
        except OSError:  # it died, or was killed by close()
            return self._died()
        received: List[bytes] = []
        size = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._selector.select(remaining):
                log.debug("script runner %d killed at the time limit", self._process.pid)
                return "K", b""
            chunk = os.read(self._answers, 65536)
            if not chunk:
                return self._died()
            received.append(chunk)
            size += len(chunk)
            if chunk.endswith(b"\n"):
                answer = b"".join(received)[:-1]
                return answer[:1].decode("ascii"), answer[1:]
            if size > self._max_answer:
                return "L", b""

    def _died(self) -> Tuple[str, bytes]:
        try:
            code = self._process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return "X", b""
        log.debug("script runner %d ended with %s", self._process.pid, code)
        return ("M" if code in _MEMORY_DEATHS else "X"), str(code).encode("ascii")

    def interrupt(self) -> None:
        """Kill the process, from any thread; the thread evaluating cleans up (:meth:`kill`)."""
        self._process.kill()

    def kill(self) -> None:
        """End the process and close its pipes (by the thread that owns the runner)."""
        if self._process.poll() is None:
            self._process.kill()
        try:
            self._process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            log.warning("script runner %d did not end after SIGKILL", self._process.pid)
        self._selector.close()
        for pipe in (self._process.stdin, self._process.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError as error:  # a broken pipe's buffered write
                log.debug("closing a script runner's pipe: %s", error)


def _seconds(limits: ScriptLimits) -> str:
    return "%d" % limits.time_limit if limits.time_limit == int(limits.time_limit) else "%g" % limits.time_limit


def _memory(code: str, limits: ScriptLimits) -> str:
    if code == "L":
        return "result larger than %d MB" % limits.memory_mb
    if code == "X":
        return "runner ended unexpectedly"
    return "used more than %d MB of memory" % limits.memory_mb


_V8_ERROR = re.compile(r"^[^:]*:(\d+): (.*)$")


def _script_error(message: str) -> str:
    """V8's ``undefined:1: TypeError: ...`` worded as conductor-oss words a GraalJS error."""
    line = _first_line(message)
    match = _V8_ERROR.match(line)
    if match:
        return "Error evaluating the script `%s` at line %s" % (match.group(2), match.group(1))
    return "Error evaluating the script `%s`" % line


def _first_line(message: str) -> str:
    text = message.strip() or "error"
    return text.splitlines()[0][:500]


__all__ = ["Scripts", "ScriptLimits", "ScriptError", "ScriptsStopped"]
