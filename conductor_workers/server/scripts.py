"""JavaScript and jq for LocalConductor's system tasks, from the optional ``server`` extra.

conductor-oss evaluates ``SWITCH``/``DECISION`` javascript cases, ``DO_WHILE`` loop conditions and
``INLINE`` scripts with GraalJS, and ``JSON_JQ_TRANSFORM`` queries with jq. Neither engine is in
the standard library: ``pip install conductor_workers[server]`` brings ``mini-racer`` (V8, the
ECMAScript that GraalJS also implements; Python 3.10+) and ``jq`` (the C library's bindings).
Without them, a workflow definition that needs one is refused at registration with a 400 that
names the extra, and everything else works.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import re
import threading
from typing import Any, List, Optional

log = logging.getLogger(__name__)

EXTRA_HINT = "pip install 'conductor_workers[server]'"
#: Longest a script may run, in ms (conductor-oss's GraalJS evaluator stops scripts after 4 s).
SCRIPT_TIMEOUT_MS = 4000


class ScriptError(Exception):
    """A script or query failed (syntax, runtime error or time limit): the task fails with this."""


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
    """One V8 context for every JavaScript evaluation of an engine (serialised by a lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._context: Any = None

    def javascript(self, script: str, bindings: Any) -> Any:
        """Evaluate ``script`` with ``$`` bound to ``bindings``; its completion value, as JSON."""
        fixed = constant(script)
        if fixed is not None:
            return fixed
        reason = missing_engine("javascript")
        if reason is not None:
            raise ScriptError(reason)
        program = "(function () { var $ = %s; var __value = eval(%s); " \
                  "return __value === undefined ? 'null' : JSON.stringify(__value); })()" % (
                      json.dumps(bindings), json.dumps(script))
        with self._lock:
            if self._context is None:
                self._context = importlib.import_module("py_mini_racer").MiniRacer()
            try:
                text = self._context.eval(program, timeout=SCRIPT_TIMEOUT_MS)
            except Exception as error:  # mini-racer's JSEvalException, JSTimeoutException, ...
                raise ScriptError(_script_error(error)) from error
        if text is None:  # JSON.stringify(function) and the like
            return None
        return json.loads(text)

    def jq(self, query: str, data: Any) -> List[Any]:
        """Every value ``query`` gives for ``data``."""
        reason = missing_engine("jq")
        if reason is not None:
            raise ScriptError(reason)
        jq = importlib.import_module("jq")
        try:
            return list(jq.compile(query).input_value(data).all())
        except Exception as error:  # ValueError for syntax and runtime errors
            raise ScriptError(_first_line(error)) from error


_V8_ERROR = re.compile(r"^[^:]*:(\d+): (.*)$")


def _script_error(error: BaseException) -> str:
    """V8's ``undefined:1: TypeError: ...`` worded as conductor-oss words a GraalJS error."""
    if "timeout" in type(error).__name__.lower() or "timed out" in str(error).lower():
        return "Script not evaluated within %d seconds, interrupted." % (SCRIPT_TIMEOUT_MS // 1000)
    line = _first_line(error)
    match = _V8_ERROR.match(line)
    if match:
        return "Error evaluating the script `%s` at line %s" % (match.group(2), match.group(1))
    return "Error evaluating the script `%s`" % line


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:500]
