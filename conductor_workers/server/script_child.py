"""A script runner: the child process in which LocalConductor evaluates JavaScript or jq.

LocalConductor never runs a script in its own process: a jq query cannot be interrupted (it holds the
GIL until it ends) and V8 ends the whole process when it runs out of memory. A runner is started as
``python -m conductor_workers.server.script_child KIND TIME_LIMIT_MS MEMORY_MB`` (KIND is
``javascript`` or ``jq``) and serves one evaluation at a time, for as long as its parent wants:

* it limits itself first: jq's address space to ``MEMORY_MB`` plus the interpreter's own (malloc
  fails, jq aborts, the runner dies); V8's heap to ``MEMORY_MB`` (mini-racer stops the script with an
  out-of-memory error; the runner then exits, as V8 is left in no state to go on) with the data
  segment capped as a backstop;
* it reads a request: one line with the source as a JSON string, one line with the input as JSON
  text (JSON text never holds a raw newline);
* it answers one line: ``=`` and the result as JSON text (for jq, the list of every value the query
  gives), ``!`` and the engine's error message as a JSON string, ``T`` when V8 stopped the script at
  the time limit, or ``M`` when the script reached the memory limit;
* an alarm set to the time limit plus a second kills the runner by the kernel's default action,
  needing no lock or GIL: a runaway ends even if its parent is gone;
* at the end of its input (the parent closed the pipe or died) it exits.

The parent (:mod:`.scripts`) kills a runner that has not answered by the time limit and starts
another. This module imports only the standard library and the engine it runs.
"""

from __future__ import annotations

import importlib
import json
import mmap
import os
import signal
import sys
from types import ModuleType
from typing import Any, BinaryIO, Callable, Dict, Optional

resource: Optional[ModuleType]
try:
    import resource
except ImportError:  # not a POSIX system: the engines' own limits only
    resource = None

#: Address space jq may use beyond what the runner holds when it starts, for itself, in MB.
JQ_BASE_MB = 16
#: V8 reserves and commits about a gigabyte of writable mappings for itself before any script runs.
V8_BASE_MB = 1024
_CACHE_SIZE = 256  # compiled jq programs kept, by source


def _limit_memory(kind: str, memory_mb: int) -> None:
    if resource is None:
        return
    if kind == "jq":
        which, size = resource.RLIMIT_AS, _address_space() + (memory_mb + JQ_BASE_MB) * 1024 * 1024
    else:
        which, size = resource.RLIMIT_DATA, (memory_mb + V8_BASE_MB) * 1024 * 1024
    soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        size = min(size, hard)
    resource.setrlimit(which, (size, hard))


def _address_space() -> int:
    """The runner's address space now, in bytes (Linux; elsewhere an allowance for the interpreter)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[0]) * mmap.PAGESIZE
    except (OSError, ValueError, IndexError):
        return 256 * 1024 * 1024


def _alarm(seconds: float) -> None:
    if hasattr(signal, "setitimer"):
        signal.setitimer(signal.ITIMER_REAL, seconds)


GC_EVERY = 64  # evaluations between two full collections of a JavaScript runner's heap


class _JavaScript:
    """One V8 context evaluating programs; ``evaluate`` answers one evaluation (``=`` JSON, ``!`` error,
    ``T`` timeout, ``M`` memory)."""

    def __init__(self, time_limit_ms: int, memory_mb: int) -> None:
        self._racer = importlib.import_module("py_mini_racer")
        self._time_limit_ms = time_limit_ms
        self._limit = memory_mb * 1024 * 1024
        self._context = self._new_context()
        self._evaluations = 0

    def _new_context(self) -> Any:
        context = self._racer.MiniRacer()
        context.set_hard_memory_limit(self._limit)
        return context

    def _tidy(self) -> None:
        """Every program is new source text (its input is in it), and V8 keeps what it compiled until a
        full collection: ask for one now and then, and start a new context when the heap stays large,
        so that many evaluations never add up to the memory limit of one."""
        self._evaluations += 1
        if self._evaluations % GC_EVERY:
            return
        self._context.low_memory_notification()
        if self._context.heap_stats().get("used_heap_size", 0) > self._limit // 2:
            self._context.close()
            self._context = self._new_context()

    def evaluate(self, source: str, data: bytes) -> bytes:
        program = ("(function () { var $ = %s; var __value = eval(%s); "
                   "return __value === undefined ? 'null' : JSON.stringify(__value); })()") % (
                       data.decode("utf-8"), json.dumps(source))
        try:
            text = self._context.eval(program, timeout=self._time_limit_ms)
        except Exception as error:  # mini-racer's JSEvalException, JSTimeoutException, JSOOMException
            self._tidy()
            name = type(error).__name__
            if name == "JSOOMException":
                return b"M"
            if name == "JSTimeoutException":
                return b"T"
            return b"!" + json.dumps(str(error)).encode("ascii")
        self._tidy()
        return b"=" + ("null" if text is None else text).encode("utf-8")  # None: JSON.stringify(function)


def _jq() -> Callable[[str, bytes], bytes]:
    jq = importlib.import_module("jq")
    compiled: Dict[str, Any] = {}

    def evaluate(source: str, data: bytes) -> bytes:
        try:
            program = compiled.get(source)
            if program is None:
                if len(compiled) >= _CACHE_SIZE:
                    compiled.clear()
                program = compiled[source] = jq.compile(source)
            values = program.input_text(data.decode("utf-8")).all()
        except Exception as error:  # ValueError for syntax and runtime errors
            return b"!" + json.dumps(str(error)).encode("ascii")
        return b"=" + json.dumps(values).encode("ascii")

    return evaluate


def serve(kind: str, time_limit_ms: int, memory_mb: int, requests: BinaryIO, answers: BinaryIO) -> None:
    """Answer requests until the end of ``requests``."""
    _limit_memory(kind, memory_mb)
    evaluate = _JavaScript(time_limit_ms, memory_mb).evaluate if kind == "javascript" else _jq()
    while True:
        source_line = requests.readline()
        data = requests.readline()
        if not data.endswith(b"\n"):
            return  # the parent is gone
        _alarm(time_limit_ms / 1000.0 + 1.0)
        answer = evaluate(json.loads(source_line), data[:-1])
        _alarm(0)
        answers.write(answer + b"\n")
        answers.flush()
        if answer == b"M":
            return


def main() -> None:
    kind, time_limit_ms, memory_mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in the terminal is for the server to handle
    serve(kind, time_limit_ms, memory_mb, sys.stdin.buffer, sys.stdout.buffer)
    os._exit(0)  # V8 may hang in its teardown after running out of memory: skip it


if __name__ == "__main__":
    main()
