"""Differential property test: generated request sequences, sent to LocalConductor and conductor-oss.

Hypothesis generates a short sequence of raw REST requests per example — the endpoints our client
uses (poll, batch poll, update, update-v2, update by reference name, start / get / terminate / pause /
resume / retry / restart workflow, task and workflow definitions, task logs, queue sizes, workflow and
task search, event handlers), with valid
and invalid input (wrong JSON types, numbers outside their Java type, negative numbers, missing
fields, unknown ids, bad statuses, non-JSON bodies). Every request goes to both servers, and the
example checks after each one:

* LocalConductor never answers 5xx (whatever the real server does);
* both answer the same status code, or the pair is listed in ``differential_differences.py``;
* the 2xx bodies agree once ids and times are normalised (polled tasks, update answers, logs, queue
  sizes, workflow views, search hits, the example's event handlers);
* every workflow the example started is in the same state on both servers (workflow status, input,
  output, and each task's type, reference name, status, attempt, poll count, input and output).

Ids differ between the servers, so requests name workflows and tasks symbolically (``Wf(0)``: the
example's first workflow; ``TaskOf(0, "r1")``: its latest ``r1`` task), and each server resolves
them against its own state. Each example uses names with a fresh uuid prefix, so the long-lived
servers do not carry state from one example to the next. Nothing waits for a timer: batch polls use
``timeout=0``, retry delays are 0 or 10 minutes, response timeouts at least 10 minutes.

``CONDUCTOR_DIFFERENTIAL_EXAMPLES`` sets the number of examples (default 40; e.g. 500 locally).
Under ``CI=true`` the examples are derandomised so that a CI run is reproducible.
``CONDUCTOR_DIFFERENTIAL_SHRINK=1`` turns Hypothesis' shrinking on (slow: every replay talks to both
servers). Differences that are deliberate are listed, with their reasons, in
``differential_differences.py``; the suite accepts nothing else.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple
from urllib.parse import quote

import attrs
import pytest
import requests
from differential_differences import (IGNORED_FIELDS, UNORDERED_ANSWERS, UNORDERED_MAP_STRINGS,
                                      always_diverges, find_difference)
from hypothesis import HealthCheck, Phase, currently_in_test_context, event, given, note, settings
from hypothesis import strategies as st

from conductor_workers.testing import LocalConductor

log = logging.getLogger(__name__)

pytestmark = pytest.mark.real_server

EXAMPLES = int(os.environ.get("CONDUCTOR_DIFFERENTIAL_EXAMPLES", "40"))
IN_CI = os.environ.get("CI", "").lower() == "true"
#: Shrinking replays examples against both servers for minutes: off unless asked for. A failure
#: report names the request where the servers parted, with both answers, either way.
SHRINK = os.environ.get("CONDUCTOR_DIFFERENTIAL_SHRINK", "") not in ("", "0")
MAX_STEPS = 20
REQUEST_TIMEOUT = 20.0

TASK_TYPES = ("t0", "t1", "t2")
WORKFLOWS = ("w0", "w1")
REFS = ("r0", "r1", "r2")
RESULT_STATUSES = ("IN_PROGRESS", "FAILED", "FAILED_WITH_TERMINAL_ERROR", "COMPLETED", "CANCELED")
OWNER = "differential@example.com"
EVENT_HANDLERS = ("eh0", "eh1")
#: What of each search hit both servers must agree on (ids become symbols; times are left out).
SEARCH_FIELDS: Dict[str, Tuple[str, ...]] = {
    "search_workflows": ("workflowId", "workflowType", "version", "status", "correlationId", "input",
                         "output"),
    "search_workflows_v2": ("workflowId", "workflowName", "workflowVersion", "status", "correlationId",
                            "input", "output"),
    "search_tasks": ("taskId", "workflowId", "taskType", "status", "input", "output"),
}
#: The real server's SQLite store sometimes reports lock contention on a loaded machine (in a 5xx or
#: inside a 200 bulk answer); such an answer says nothing about behaviour, so the example ends there.
REAL_SERVER_TRANSIENT = ("SQLITE_BUSY", "database is locked")


# -- symbolic values (each server resolves them against its own state) ----------------------------------


@attrs.frozen
class Name:
    """A per-example name: ``<prefix>_<key>`` (the same on both servers)."""

    key: str


@attrs.frozen
class Wf:
    """The id of the example's ``index``-th started workflow (modulo how many; unknown if none)."""

    index: int


@attrs.frozen
class TaskOf:
    """The id of workflow ``Wf(wf)``'s latest (or first) task with reference name ``ref``.

    ``ref=None``: the workflow's current task (its latest SCHEDULED / IN_PROGRESS one, else its last).
    """

    wf: int
    ref: Optional[str] = None
    first: bool = False


@attrs.frozen
class Missing:
    """An id that exists on neither server."""

    what: str


@attrs.frozen
class Text:
    """A string made of symbolic values: ``template.format(*args)`` with each arg resolved first."""

    template: str
    args: Tuple[Any, ...] = ()


@attrs.frozen
class Raw:
    """A body sent as it is (not JSON-encoded)."""

    text: str
    content_type: str = "application/json"


NO_BODY = None


@attrs.frozen
class Op:
    """One request: its kind and input variant (see differential_differences.py), path and body."""

    kind: str
    variant: str
    method: str
    path: Tuple[Any, ...]
    params: Tuple[Tuple[str, Any], ...] = ()
    body: Any = NO_BODY

    def __repr__(self) -> str:
        path = "/".join(str(part) if isinstance(part, str) else repr(part) for part in self.path)
        extra = f" params={dict(self.params)}" if self.params else ""
        body = "" if self.body is NO_BODY else f" body={self.body!r}"
        return f"<{self.kind}:{self.variant} {self.method} /api/{path}{extra}{body}>"


# -- one server's view of an example -------------------------------------------------------------------


class ServerRun:
    """The per-server state of one example: the workflows it started and their latest snapshots."""

    def __init__(self, label: str, url: str, session: requests.Session, prefix: str) -> None:
        self.label = label
        self.url = url
        self.session = session
        self.prefix = prefix
        self.started: List[str] = []
        self.snapshots: List[Dict[str, Any]] = []
        self.symbols: Dict[str, str] = {}

    # Resolution --------------------------------------------------------------------------------------
    def resolve(self, value: Any) -> Any:
        if isinstance(value, Name):
            return f"{self.prefix}_{value.key}"
        if isinstance(value, Missing):
            return f"{self.prefix}-missing-{value.what}"
        if isinstance(value, Wf):
            if not self.started:
                return f"{self.prefix}-missing-wf"
            return self.started[value.index % len(self.started)]
        if isinstance(value, TaskOf):
            return self._task_id(value)
        if isinstance(value, Text):
            return value.template.format(*(self.resolve(arg) for arg in value.args))
        if isinstance(value, dict):
            return {self.resolve(key): self.resolve(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.resolve(item) for item in value]
        return value

    def _task_id(self, ref: TaskOf) -> str:
        if not self.snapshots:
            return f"{self.prefix}-missing-task"
        tasks = sorted(self.snapshots[ref.wf % len(self.snapshots)].get("tasks", []), key=lambda t: t.get("seq", 0))
        if ref.ref is None:
            pending = [t for t in tasks if t.get("status") in ("SCHEDULED", "IN_PROGRESS")]
            tasks = pending or tasks
        else:
            tasks = [t for t in tasks if t.get("referenceTaskName") == ref.ref]
        if not tasks:
            return f"{self.prefix}-missing-task"
        return (tasks[0] if ref.first else tasks[-1])["taskId"]

    # Requests ----------------------------------------------------------------------------------------
    def send(self, op: Op) -> requests.Response:
        path = "/".join(quote(str(self.resolve(part)), safe="") for part in op.path)
        params = [(key, self.resolve(value)) for key, value in op.params]
        kwargs: Dict[str, Any] = {"params": params, "timeout": REQUEST_TIMEOUT}
        if isinstance(op.body, Raw):
            kwargs["data"] = op.body.text.encode("utf-8")
            kwargs["headers"] = {"Content-Type": op.body.content_type}
        elif op.body is not NO_BODY:
            kwargs["data"] = json.dumps(self.resolve(op.body)).encode("utf-8")
            kwargs["headers"] = {"Content-Type": "application/json"}
        return self.session.request(op.method, f"{self.url}/{path}", **kwargs)

    def observe(self, op: Op, response: requests.Response) -> None:
        if op.kind == "start_workflow" and response.status_code == 200:
            self.started.append(response.text)

    def refresh(self) -> None:
        """Fetch every started workflow (with tasks) and rebuild the id -> symbol table."""
        self.snapshots = []
        self.symbols = {self.prefix: "P"}
        for index, workflow_id in enumerate(self.started):
            response = self.session.get(f"{self.url}/workflow/{workflow_id}", timeout=REQUEST_TIMEOUT)
            assert response.status_code == 200, (self.label, workflow_id, response.status_code, response.text)
            snapshot = response.json()
            self.snapshots.append(snapshot)
            self.symbols[workflow_id] = f"wf{index}"
            seen: Dict[str, int] = {}
            for task in sorted(snapshot.get("tasks", []), key=lambda t: t.get("seq", 0)):
                ref = task.get("referenceTaskName", "?")
                self.symbols[task["taskId"]] = f"wf{index}/{ref}[{seen.get(ref, 0)}]"
                seen[ref] = seen.get(ref, 0) + 1

    # Normalisation ----------------------------------------------------------------------------------
    def symbolise(self, value: Any) -> Any:
        """``value`` with every known id (and the name prefix) replaced by its symbol."""
        if isinstance(value, str):
            if value in self.symbols:
                return self.symbols[value]
            for known, symbol in self.symbols.items():
                if known in value:
                    value = value.replace(known, symbol)
            return value
        if isinstance(value, dict):
            return {self.symbolise(key): self.symbolise(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.symbolise(item) for item in value]
        return value

    def task_state(self, task: Dict[str, Any]) -> Dict[str, Any]:
        fields = ("taskId", "workflowInstanceId", "taskType", "referenceTaskName", "status", "retryCount",
                  "pollCount", "workerId", "inputData", "outputData", "reasonForIncompletion",
                  "callbackAfterSeconds", "retried", "retriedTaskId", "startDelayInSeconds",
                  "responseTimeoutSeconds", "workflowPriority", "correlationId")
        return self.symbolise({key: task.get(key) for key in fields if key not in IGNORED_FIELDS})

    def workflow_state(self, workflow: Dict[str, Any]) -> Dict[str, Any]:
        fields = ("status", "input", "output", "correlationId", "priority", "reasonForIncompletion",
                  "workflowVersion")
        state = {key: workflow.get(key) for key in fields if key not in IGNORED_FIELDS}
        for key in ("failedReferenceTaskNames", "failedTaskNames"):
            if key not in IGNORED_FIELDS:
                state[key] = sorted(workflow.get(key) or [])
        state["tasks"] = [self.task_state(task) for task in sorted(workflow.get("tasks", []),
                                                                  key=lambda t: t.get("seq", 0))]
        return self.symbolise(state)

    def polled(self, task_id: str) -> bool:
        """Whether the latest snapshots show task ``task_id`` polled at least once."""
        return any(task.get("taskId") == task_id and (task.get("pollCount") or 0) > 0
                   for snapshot in self.snapshots for task in snapshot.get("tasks", []))

    def search_hit(self, kind: str, item: Dict[str, Any]) -> Dict[str, Any]:
        hit = self.symbolise({key: item.get(key) for key in SEARCH_FIELDS[kind]})
        for key in UNORDERED_MAP_STRINGS.get(kind, ()):
            if isinstance(hit.get(key), str):
                hit[key] = "".join(sorted(hit[key]))  # key order differs (see differential_differences.py)
        return hit

    def summary(self, op: Op, response: requests.Response) -> Any:
        """What of a 2xx answer both servers must agree on (ids and times normalised)."""
        status = response.status_code
        if status // 100 != 2:
            return None
        kind = op.kind
        if kind in ("poll", "batch_poll", "update_v2", "get_task"):
            if status == 204 or not response.content:
                return []
            data = response.json()
            tasks = [self.task_state(task) for task in (data if isinstance(data, list) else [data])]
            if kind in UNORDERED_ANSWERS:
                tasks.sort(key=lambda task: (str(task.get("workflowInstanceId")), str(task.get("taskId"))))
            return tasks
        if kind in ("update", "update_by_ref"):
            return self.symbolise(response.text)
        if kind == "get_workflow":
            data = response.json()
            state = self.workflow_state(data)
            state["has_tasks"] = bool(data.get("tasks"))
            return state
        if kind == "get_logs":
            return [] if status == 204 else [entry.get("log") for entry in response.json()]
        if kind == "queue_sizes":
            return self.symbolise(response.json())
        if kind == "register_workflow_def" and op.method == "PUT":
            return self.symbolise(response.json().get("bulkSuccessfulResults"))
        if kind in SEARCH_FIELDS:
            data = response.json()
            items = data.get("results", [])
            total = data.get("totalHits")
            if kind == "search_tasks":  # see NEVER_POLLED_TASK_HITS (task searches are not paged here)
                items = [item for item in items
                         if item.get("status") != "SCHEDULED" or self.polled(item["taskId"])]
                total = len(items)
            found = [self.search_hit(kind, item) for item in items]
            if not any(key == "sort" for key, _ in op.params):
                found.sort(key=lambda item: json.dumps(item, sort_keys=True))
            return {"totalHits": total, "results": found}
        if kind in ("list_event_handlers", "event_handlers_for_event"):
            mine = [handler for handler in response.json()
                    if str(handler.get("name", "")).startswith(self.prefix)]
            return sorted(self.symbolise(mine), key=lambda handler: handler["name"])
        return None


# -- strategies ------------------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70),
    st.sampled_from([0, -1, 2 ** 31, 2 ** 63 - 1, 2 ** 63, 1e16, 1.5, -0.25, 1e300]),
    st.text(alphabet="abcé ${}.\"\\\n", max_size=8),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "b", "v", "x"]), inner, max_size=3)),
    max_leaves=6)
outputs = st.dictionaries(st.sampled_from(["v", "x", "out", "n"]), json_values, max_size=3)
wf_index = st.integers(0, 3)
task_ref = st.one_of(st.builds(TaskOf, wf_index), st.builds(TaskOf, wf_index),
                     st.builds(TaskOf, wf_index, st.sampled_from(REFS), st.booleans()))


def _op(kind: str, variant: str, method: str, path: Sequence[Any], params: Sequence[Tuple[str, Any]] = (),
        body: Any = NO_BODY) -> Op:
    return Op(kind, variant, method, tuple(path), tuple(params), body)


# Definitions ---------------------------------------------------------------------------------------------

@st.composite
def valid_task_def(draw: Callable[..., Any], index: Optional[int] = None) -> Dict[str, Any]:
    name = TASK_TYPES[index] if index is not None else draw(st.sampled_from(TASK_TYPES))
    task_def: Dict[str, Any] = {
        "name": Name(name), "ownerEmail": OWNER,
        "retryCount": draw(st.integers(0, 2)),
        "retryDelaySeconds": draw(st.sampled_from([0, 0, 600])),
        # up to 10**15: above ~9.2e15 the real server's "1000 * responseTimeoutSeconds" overflows (listed)
        "responseTimeoutSeconds": draw(st.sampled_from([600, 3600, 2 ** 31 - 1, 10 ** 15])),
        "timeoutSeconds": 0,
        "retryLogic": draw(st.sampled_from(["FIXED", "EXPONENTIAL_BACKOFF", "LINEAR_BACKOFF"])),
        "timeoutPolicy": draw(st.sampled_from(["RETRY", "TIME_OUT_WF", "ALERT_ONLY"])),
    }
    if draw(st.booleans()):
        task_def["inputTemplate"] = {"tpl": draw(json_scalars)}
    if draw(st.booleans()):
        task_def["backoffScaleFactor"] = draw(st.integers(1, 3))
    return task_def


def register_task_defs(task_defs: Any, variant: str = "valid") -> Op:
    return _op("register_task_defs", variant, "POST", ["metadata", "taskdefs"], body=task_defs)


@st.composite
def task_def_ops(draw: Callable[..., Any]) -> Op:
    base = draw(valid_task_def())
    variant = draw(st.sampled_from([
        "valid", "valid", "non_json", "wrong_json_type", "string_for_object", "empty_list", "missing_name",
        "negative",
        "int_overflow", "bool_for_int", "string_for_int", "float_for_int", "bad_enum", "timeout_constraint",
        "huge_response_timeout"]))
    if variant == "valid":
        return register_task_defs([base])
    if variant == "non_json":
        return _op("register_task_defs", variant, "POST", ["metadata", "taskdefs"], body=Raw('[{"name": "x",'))
    if variant == "wrong_json_type":
        return register_task_defs(draw(st.sampled_from([base, [None], [7.5], 7])), variant)
    if variant == "string_for_object":  # the real server makes a TaskDef of that name from the string
        return register_task_defs([Name("t_from_string")], variant)
    if variant == "empty_list":
        return register_task_defs([], variant)
    if variant == "missing_name":
        return register_task_defs([{k: v for k, v in base.items() if k != "name"}], variant)
    one_field: Dict[str, List[Tuple[str, Any]]] = {
        "negative": [("retryCount", -1), ("responseTimeoutSeconds", 0), ("retryDelaySeconds", -5),
                     ("pollTimeoutSeconds", -1), ("backoffScaleFactor", 0)],
        "int_overflow": [("retryCount", 2 ** 31), ("retryCount", 1e16), ("responseTimeoutSeconds", 2 ** 63),
                         ("retryDelaySeconds", 2 ** 40), ("responseTimeoutSeconds", 1e19)],
        "bool_for_int": [("retryCount", True), ("responseTimeoutSeconds", False)],
        "string_for_int": [("retryCount", "2"), ("responseTimeoutSeconds", "600")],
        "float_for_int": [("retryCount", 1.5), ("responseTimeoutSeconds", 600.5)],
        "bad_enum": [("timeoutPolicy", "NOPE"), ("retryLogic", "RANDOM")],
        "timeout_constraint": [("timeoutSeconds", 60)],
        "huge_response_timeout": [("responseTimeoutSeconds", 10 ** 16), ("responseTimeoutSeconds", 2 ** 63 - 1)],
    }
    field, value = draw(st.sampled_from(one_field[variant]))
    return register_task_defs([dict(base, **{field: value})], variant)


@st.composite
def workflow_body(draw: Callable[..., Any], name: Optional[str] = None, version: int = 1) -> Dict[str, Any]:
    count = draw(st.integers(1, 3))
    tasks = []
    for position in range(count):
        task: Dict[str, Any] = {
            "name": Name(draw(st.sampled_from(TASK_TYPES + ("t_unregistered",)))),
            "taskReferenceName": REFS[position], "type": "SIMPLE",
            "inputParameters": {"x": "${workflow.input.x}"},
        }
        if position:
            task["inputParameters"]["prev"] = "${%s.output.v}" % REFS[position - 1]
        if draw(st.integers(0, 4)) == 0:
            task["optional"] = True
        if draw(st.integers(0, 5)) == 0:
            task["retryCount"] = draw(st.integers(0, 1))
        tasks.append(task)
    body: Dict[str, Any] = {
        "name": Name(name or draw(st.sampled_from(WORKFLOWS))), "version": version, "schemaVersion": 2,
        "ownerEmail": OWNER, "tasks": tasks, "timeoutSeconds": 0,
    }
    if draw(st.booleans()):
        body["outputParameters"] = {"out": "${r0.output.v}", "in": "${workflow.input.x}"}
    return body


def register_workflow(body: Any, variant: str = "valid", method: str = "PUT",
                      params: Sequence[Tuple[str, Any]] = ()) -> Op:
    return _op("register_workflow_def", variant, method, ["metadata", "workflow"], params,
               [body] if method == "PUT" and not isinstance(body, Raw) else body)


@st.composite
def workflow_def_ops(draw: Callable[..., Any]) -> Op:
    body = draw(workflow_body(version=draw(st.sampled_from([1, 2]))))
    variant = draw(st.sampled_from([
        "valid", "valid", "valid_post", "non_json", "wrong_json_type", "empty_tasks", "duplicate_ref",
        "missing_field", "int_overflow", "bad_schema", "system_task"]))
    if variant == "valid":
        return register_workflow(body)
    if variant == "valid_post":
        return register_workflow(body, variant, "POST", [("overwrite", draw(st.sampled_from(["true", "false"])))])
    if variant == "non_json":
        return register_workflow(Raw('{"name": '), variant, draw(st.sampled_from(["PUT", "POST"])))
    if variant == "wrong_json_type":
        shape = draw(st.integers(0, 1))
        if shape == 0:  # an object where PUT wants an array
            return _op("register_workflow_def", variant, "PUT", ["metadata", "workflow"], body=body)
        return register_workflow(dict(body, tasks="r0"), variant)
    if variant == "empty_tasks":
        return register_workflow(dict(body, tasks=[]), variant)
    if variant == "duplicate_ref":
        first = body["tasks"][0]
        return register_workflow(dict(body, tasks=[first, dict(first)]), variant)
    if variant == "missing_field":
        tasks = [{k: v for k, v in task.items() if k != "taskReferenceName"} for task in body["tasks"]]
        return register_workflow(dict(body, tasks=tasks), variant)
    if variant == "int_overflow":
        return register_workflow(dict(body, version=draw(st.sampled_from([2 ** 31, 1e16]))), variant)
    if variant == "bad_schema":
        return register_workflow(dict(body, schemaVersion=1), variant)
    tasks = [dict(body["tasks"][0], type="WAIT")]  # system_task
    return register_workflow(dict(body, tasks=tasks), variant)


# Workflows -----------------------------------------------------------------------------------------------

@st.composite
def start_ops(draw: Callable[..., Any]) -> Op:
    name: Any = Name(draw(st.sampled_from(WORKFLOWS)))
    workflow_input = {"x": draw(json_values)}
    variant = draw(st.sampled_from([
        "valid", "valid", "valid", "valid_request", "unknown_name", "unknown_version", "out_of_range",
        "bad_query_int", "int_overflow", "non_json", "wrong_json_type", "null_input", "missing_name",
        "string_for_int"]))
    params: List[Tuple[str, Any]] = []
    if draw(st.booleans()):
        params.append(("priority", draw(st.integers(0, 99))))
    if draw(st.booleans()):
        params.append(("correlationId", draw(st.sampled_from(["c1", "c 2", "ü"]))))
    path = ["workflow", name]
    if variant == "valid":
        return _op("start_workflow", variant, "POST", path, params, workflow_input)
    request: Dict[str, Any] = {"name": name, "input": workflow_input, **dict(params)}
    if variant == "valid_request":
        if draw(st.booleans()):  # one domain only: with several, the choice depends on recent polls
            request["taskToDomain"] = draw(st.sampled_from([{"*": "d1"}, {Name("t0"): "d1"}, {"*": "NO_DOMAIN"}]))
        return _op("start_workflow", variant, "POST", ["workflow"], body=request)
    if variant == "unknown_name":
        return _op("start_workflow", variant, "POST", ["workflow", Name("w_unknown")], params, workflow_input)
    if variant == "unknown_version":
        return _op("start_workflow", variant, "POST", path, [*params, ("version", 7)], workflow_input)
    if variant == "out_of_range":
        priority = draw(st.sampled_from([100, -1]))
        if draw(st.booleans()):
            return _op("start_workflow", variant, "POST", path, [("priority", priority)], workflow_input)
        return _op("start_workflow", variant, "POST", ["workflow"], body=dict(request, priority=priority))
    if variant == "bad_query_int":
        key, value = draw(st.sampled_from([("priority", "x"), ("version", "1.5"), ("priority", "1e1")]))
        return _op("start_workflow", variant, "POST", path, [(key, value)], workflow_input)
    if variant == "int_overflow":
        if draw(st.booleans()):
            return _op("start_workflow", variant, "POST", path, [("version", 2 ** 31)], workflow_input)
        return _op("start_workflow", variant, "POST", ["workflow"], body=dict(request, priority=2 ** 63))
    if variant == "non_json":
        return _op("start_workflow", variant, "POST", draw(st.sampled_from([path, ["workflow"]])),
                   body=Raw("{'x': 1}"))
    if variant == "wrong_json_type":
        if draw(st.booleans()):
            return _op("start_workflow", variant, "POST", path, body=[workflow_input])
        return _op("start_workflow", variant, "POST", ["workflow"], body=dict(request, input=[1]))
    if variant == "null_input":
        return _op("start_workflow", variant, "POST", ["workflow"], body=dict(request, input=None))
    if variant == "missing_name":
        return _op("start_workflow", variant, "POST", ["workflow"], body={"input": workflow_input})
    return _op("start_workflow", variant, "POST", ["workflow"], body=dict(request, priority="5"))  # string_for_int


def _target(draw: Callable[..., Any]) -> Tuple[Any, str]:
    if draw(st.integers(0, 7)) == 0:
        return Missing("wf"), "unknown_workflow"
    return Wf(draw(wf_index)), "valid"


@st.composite
def workflow_ops(draw: Callable[..., Any]) -> Op:
    target, variant = _target(draw)
    action = draw(st.sampled_from(["get", "get", "terminate", "pause", "pause", "resume", "resume", "retry",
                                   "restart"]))
    if action == "get":
        params: List[Tuple[str, Any]] = []
        choice = draw(st.integers(0, 5))
        if choice == 0:
            params, variant = [("includeTasks", "maybe")], "bad_query_bool"
        elif choice == 1:
            params = [("includeTasks", "false")]
        return _op("get_workflow", variant, "GET", ["workflow", target], params)
    if action == "terminate":
        params = [("reason", "because")] if draw(st.booleans()) else []
        return _op("terminate", variant, "DELETE", ["workflow", target], params)
    if action in ("pause", "resume"):
        return _op(action, variant, "PUT", ["workflow", target, action])
    params = [("useLatestDefinitions", "true")] if action == "restart" and draw(st.booleans()) else []
    return _op(action, variant, "POST", ["workflow", target, action], params)


# Tasks ---------------------------------------------------------------------------------------------------

def _task_type(draw: Callable[..., Any]) -> Name:
    return Name(draw(st.sampled_from(TASK_TYPES + ("t_unregistered",))))


@st.composite
def poll_ops(draw: Callable[..., Any]) -> Op:
    task_type = _task_type(draw)
    params: List[Tuple[str, Any]] = []
    if draw(st.booleans()):
        params.append(("workerid", draw(st.sampled_from(["w-1", "w-2"]))))
    if draw(st.integers(0, 4)) == 0:
        params.append(("domain", "d1"))
    if draw(st.integers(0, 3)) == 0:
        return _op("poll", "valid", "GET", ["tasks", "poll", task_type], params)
    variant = draw(st.sampled_from(["valid", "valid", "valid", "valid", "negative", "negative_count",
                                    "bad_query_int", "timeout_too_long"]))
    count: Any = draw(st.sampled_from([1, 1, 2, 5]))
    timeout: Any = 0
    if variant == "negative":
        count, timeout = draw(st.sampled_from([(0, 0), (1, -1), (3, -100)]))
    elif variant == "negative_count":
        count = draw(st.sampled_from([-1, -5]))
    elif variant == "bad_query_int":
        count, timeout = draw(st.sampled_from([("abc", 0), (2 ** 31, 0), ("1.5", 0), (1, "1e3"), (2 ** 63, 0)]))
    elif variant == "timeout_too_long":
        timeout = 5001
    params += [("count", count), ("timeout", timeout)]
    return _op("batch_poll", variant, "GET", ["tasks", "poll", "batch", task_type], params)


@st.composite
def task_result(draw: Callable[..., Any]) -> Tuple[str, Any]:
    """A TaskResult body (with symbolic ids) and its variant."""
    task = draw(task_ref)
    body: Dict[str, Any] = {
        "taskId": task, "workflowInstanceId": Wf(task.wf),
        "status": draw(st.sampled_from(RESULT_STATUSES + ("COMPLETED", "COMPLETED", "COMPLETED", "IN_PROGRESS"))),
    }
    if draw(st.booleans()):
        body["outputData"] = draw(outputs)
    if draw(st.integers(0, 2)) == 0:
        body["callbackAfterSeconds"] = draw(st.sampled_from([0, 3600, 1e16]))
    if draw(st.integers(0, 3)) == 0:
        body["reasonForIncompletion"] = draw(st.sampled_from(["boom", "x" * 600, ""]))
    if draw(st.integers(0, 3)) == 0:
        body["workerId"] = "w-upd"
    if draw(st.integers(0, 4)) == 0:
        body["logs"] = [{"log": "line", "createdTime": 5}]
    if draw(st.integers(0, 9)) == 0:
        body["extendLease"] = True
    variant = draw(st.sampled_from(
        ["valid"] * 16 + ["unknown_task", "unknown_workflow", "mismatched_workflow", "missing_field",
                         "number_for_string", "bad_enum", "non_json", "wrong_json_type", "int_overflow",
                         "negative_callback", "empty_body", "bool_for_int"]))
    if variant == "unknown_task":
        body["taskId"] = Missing("task")
    elif variant == "unknown_workflow":
        body["workflowInstanceId"] = Missing("wf")
    elif variant == "mismatched_workflow":
        body["workflowInstanceId"] = Wf(task.wf + 1)
    elif variant == "missing_field":
        del body[draw(st.sampled_from(["taskId", "workflowInstanceId"]))]
    elif variant == "number_for_string":
        body["taskId"] = 12345
    elif variant == "bad_enum":
        body["status"] = draw(st.sampled_from(["BOGUS", "SCHEDULED", "completed"]))
    elif variant == "non_json":
        return variant, Raw('{"taskId": ')
    elif variant == "empty_body":
        return variant, Raw("")
    elif variant == "wrong_json_type":
        return variant, draw(st.sampled_from([[body], "text", dict(body, outputData=[1, 2])]))
    elif variant == "int_overflow":
        body["callbackAfterSeconds"] = draw(st.sampled_from([2 ** 63, 1e19]))
    elif variant == "negative_callback":
        body["status"] = "IN_PROGRESS"
        body["callbackAfterSeconds"] = -5
    elif variant == "bool_for_int":
        body["callbackAfterSeconds"] = True
    return variant, body


@st.composite
def update_ops(draw: Callable[..., Any]) -> Op:
    variant, body = draw(task_result())
    if draw(st.booleans()):
        return _op("update", variant, "POST", ["tasks"], body=body)
    return _op("update_v2", variant, "POST", ["tasks", "update-v2"], body=body)


@st.composite
def update_by_ref_ops(draw: Callable[..., Any]) -> Op:
    target, variant = _target(draw)
    ref = draw(st.sampled_from(REFS))
    status = draw(st.sampled_from(RESULT_STATUSES + ("COMPLETED",)))
    body: Any = draw(outputs)
    choice = draw(st.integers(0, 9))
    if choice == 0:
        ref, variant = "zz", "unknown_ref"
    elif choice == 1:
        status, variant = "BOGUS", "bad_path_status"
    elif choice == 2:
        body, variant = [body], "wrong_json_type"
    elif choice == 3:
        body, variant = Raw(draw(st.sampled_from(["{nope", ""]))), "non_json"
        if not body.text:
            variant = "empty_body"
    params = [("workerid", "w-ref")] if draw(st.booleans()) else []
    return _op("update_by_ref", variant, "POST", ["tasks", target, ref, status], params, body)


@st.composite
def task_query_ops(draw: Callable[..., Any]) -> Op:
    task: Any = draw(task_ref)
    variant = "valid"
    if draw(st.integers(0, 5)) == 0:
        task, variant = Missing("task"), "unknown_task"
    action = draw(st.sampled_from(["add_log", "add_log", "get_logs", "get_task", "queue_sizes"]))
    if action == "add_log":
        text = draw(st.sampled_from(["hello", "two words", '"quoted"', "{\"json\": 1}", "é", ""]))
        if not text:
            variant = "empty_body"
        return _op("add_log", variant, "POST", ["tasks", task, "log"], body=Raw(text, "text/plain"))
    if action == "get_logs":
        return _op("get_logs", variant, "GET", ["tasks", task, "log"])
    if action == "get_task":
        return _op("get_task", variant, "GET", ["tasks", task])
    names = draw(st.lists(st.sampled_from(TASK_TYPES + ("t_unregistered",)), max_size=3, unique=True))
    return _op("queue_sizes", "valid" if names else "missing_param", "GET", ["tasks", "queue", "sizes"],
               [("taskType", Name(name)) for name in names])


# Search --------------------------------------------------------------------------------------------------

@st.composite
def workflow_search_ops(draw: Callable[..., Any]) -> Op:
    """Workflow search (summaries or whole workflows), always scoped to this example's names or ids."""
    kind, path = draw(st.sampled_from([("search_workflows", "search"), ("search_workflows_v2", "search-v2")]))
    workflow = Name(draw(st.sampled_from(WORKFLOWS)))
    form = draw(st.sampled_from(["type", "type_in", "type_status", "status_in", "workflow_id", "correlation",
                                 "time_range", "unknown_type", "not_a_condition"]))
    variant = "not_a_condition" if form == "not_a_condition" else "valid"
    both = (Name("w0"), Name("w1"))
    query: Any = "just words"  # not_a_condition
    if form == "type":
        query = Text('workflowType="{}"', (workflow,))
    elif form == "type_in":
        query = Text("workflowType IN ({},{})", both)
    elif form == "type_status":
        status = draw(st.sampled_from(["RUNNING", "COMPLETED", "FAILED", "TERMINATED", "PAUSED"]))
        query = Text('workflowType="{}" AND status="%s"' % status, (workflow,))
    elif form == "status_in":
        query = Text("status IN (RUNNING,PAUSED) AND workflowType IN ({},{})", both)
    elif form == "workflow_id":
        query = Text('workflowId="{}"', (Wf(draw(wf_index)),))
    elif form == "correlation":
        query = Text("correlationId='c1' AND workflowType=\"{}\"", (workflow,))
    elif form == "time_range":
        query = Text('workflowType="{}" AND startTime%s1000' % draw(st.sampled_from([">", "<"])), (workflow,))
    elif form == "unknown_type":
        query = Text('workflowType="{}"', (Name("w_unknown"),))
    params: List[Tuple[str, Any]] = [("query", query), ("freeText", "*")]
    if draw(st.booleans()):  # a page is the same on both servers only in a defined order
        params += [("sort", draw(st.sampled_from(["startTime:ASC", "startTime:DESC"]))),
                   ("start", draw(st.integers(0, 2))), ("size", draw(st.integers(1, 3)))]
    return _op(kind, variant, "GET", ["workflow", path], params)


@st.composite
def task_search_ops(draw: Callable[..., Any]) -> Op:
    """Task search by type, by type and status, by a list of types."""
    task_type = _task_type(draw)
    form = draw(st.sampled_from(["type", "type_status", "types_in"]))
    if form == "type":
        query = Text('taskType="{}"', (task_type,))
    elif form == "type_status":
        status = draw(st.sampled_from(["SCHEDULED", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELED"]))
        query = Text('taskType="{}" AND status="%s"' % status, (task_type,))
    else:
        query = Text("taskType IN ({},{},{})", tuple(Name(name) for name in TASK_TYPES))
    return _op("search_tasks", "valid", "GET", ["tasks", "search"], [("query", query), ("freeText", "*")])


# Event handlers ------------------------------------------------------------------------------------------

@st.composite
def event_handler_body(draw: Callable[..., Any]) -> Dict[str, Any]:
    action = draw(st.sampled_from(["start_workflow", "complete_task", "fail_task"]))
    if action == "start_workflow":
        detail: Dict[str, Any] = {"name": Name(draw(st.sampled_from(WORKFLOWS))), "version": 1,
                                  "input": {"x": "${payload}"}}
    else:
        detail = {"workflowId": "${workflowId}", "taskRefName": draw(st.sampled_from(REFS)),
                  "output": {"v": 1}}
    handler: Dict[str, Any] = {
        "name": Name(draw(st.sampled_from(EVENT_HANDLERS))),
        "event": draw(st.sampled_from([Name("ev0"), Text("conductor:{}", (Name("ev1"),))])),
        "active": draw(st.booleans()),
        "actions": [{"action": action, action: detail}],
    }
    if draw(st.booleans()):
        handler["condition"] = draw(st.sampled_from(["$.ok == true", "true"]))
        handler["evaluatorType"] = "javascript"
    if draw(st.integers(0, 3)) == 0:
        handler["actions"][0]["expandInlineJSON"] = True
    return handler


@st.composite
def event_handler_ops(draw: Callable[..., Any]) -> Op:
    action = draw(st.sampled_from(["add", "add", "update", "list", "for_event", "remove"]))
    if action in ("add", "update"):
        kind, method = ("add_event_handler", "POST") if action == "add" else ("update_event_handler", "PUT")
        body: Any = draw(event_handler_body())
        variant = draw(st.sampled_from(["valid"] * 6 + ["missing_field", "non_json", "wrong_json_type"]))
        if variant == "missing_field":
            body = dict(body, **dict([draw(st.sampled_from([("name", ""), ("event", ""), ("actions", [])]))]))
        elif variant == "non_json":
            body = Raw('{"name": ')
        elif variant == "wrong_json_type":
            body = [body]
        return _op(kind, variant, method, ["event"], body=body)
    if action == "list":
        return _op("list_event_handlers", "valid", "GET", ["event"])
    if action == "for_event":
        event = draw(st.sampled_from([Name("ev0"), Text("conductor:{}", (Name("ev1"),)), Name("ev_none")]))
        params = [("activeOnly", draw(st.sampled_from(["true", "false"])))] if draw(st.booleans()) else []
        return _op("event_handlers_for_event", "valid", "GET", ["event", event], params)
    handler = Name(draw(st.sampled_from(EVENT_HANDLERS)))
    return _op("remove_event_handler", "valid", "DELETE", ["event", handler])


operations = st.one_of(
    poll_ops(), poll_ops(), update_ops(), update_ops(), update_ops(), start_ops(), workflow_ops(),
    workflow_ops(), update_by_ref_ops(), task_query_ops(), task_def_ops(), workflow_def_ops(),
    workflow_search_ops(), workflow_search_ops(), task_search_ops(), event_handler_ops(), event_handler_ops(),
)


@st.composite
def scenarios(draw: Callable[..., Any]) -> List[Op]:
    """Valid set-up (task definitions, one or two workflows, a first start, maybe an event handler), then
    generated requests."""
    registered = draw(st.lists(st.booleans(), min_size=3, max_size=3))
    task_defs = [draw(valid_task_def(index)) for index, keep in enumerate(registered) if keep]
    setup = [register_task_defs(task_defs)] if task_defs else []
    setup.append(register_workflow(draw(workflow_body("w0"))))
    if draw(st.booleans()):
        setup.append(register_workflow(draw(workflow_body("w1"))))
    setup.append(_op("start_workflow", "valid", "POST", ["workflow", Name("w0")], body={"x": 1}))
    if draw(st.booleans()):
        setup.append(_op("add_event_handler", "valid", "POST", ["event"], body=draw(event_handler_body())))
    return setup + draw(st.lists(operations, min_size=4, max_size=MAX_STEPS))


# -- the comparison ------------------------------------------------------------------------------------


def _diff(local: Any, real: Any, path: str = "") -> List[str]:
    """Readable paths where two normalised values differ."""
    if isinstance(local, dict) and isinstance(real, dict):
        lines = []
        for key in sorted(set(local) | set(real), key=str):
            lines += _diff(local.get(key, "<absent>"), real.get(key, "<absent>"), f"{path}.{key}")
        return lines
    if isinstance(local, list) and isinstance(real, list) and len(local) == len(real):
        return [line for index, (a, b) in enumerate(zip(local, real)) for line in _diff(a, b, f"{path}[{index}]")]
    both_numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (local, real))
    if local != real or (type(local) is not type(real) and not both_numbers):  # 1 == 1.0, but True != 1
        return [f"{path or '<value>'}: local={local!r} real={real!r}"]
    return []


def _note(text: str) -> None:
    if currently_in_test_context():
        note(text)


def _event(text: str) -> None:
    log.debug("%s", text)
    if currently_in_test_context():
        event(text)


def _describe(step: int, op: Op, local: requests.Response, real: requests.Response) -> str:
    return (f"step {step}: {op!r}\n  local: {local.status_code} {local.text[:300]!r}\n"
            f"  real:  {real.status_code} {real.text[:300]!r}")


def run_scenario(ops: Sequence[Op], local_url: str, real_url: str, session: requests.Session) -> None:
    """Send ``ops`` to both servers, comparing answers and state after every request."""
    prefix = "df" + uuid.uuid4().hex[:10]
    local = ServerRun("local", local_url, session, prefix)
    real = ServerRun("real", real_url, session, prefix)
    for step, op in enumerate(ops):
        local_response, real_response = local.send(op), real.send(op)
        where = _describe(step, op, local_response, real_response)
        _note(where)
        assert local_response.status_code < 500, f"LocalConductor answered 5xx\n{where}"
        if any(marker in real_response.text for marker in REAL_SERVER_TRANSIENT):
            log.warning("real server transient error, example ends: %s", real_response.text[:200])
            _event("real server: transient SQLite lock error")
            return
        local.observe(op, local_response)
        real.observe(op, real_response)
        stop = False
        if local_response.status_code != real_response.status_code:
            found = find_difference(op.kind, op.variant, local_response.status_code, real_response.status_code)
            assert found is not None, f"the servers disagree (not listed in differential_differences.py)\n{where}"
            name, difference = found
            _event(f"accepted difference: {name}")
            stop = difference.diverges or (local_response.status_code // 100 == 2) != (
                real_response.status_code // 100 == 2)
        diverging = always_diverges(op.kind, op.variant)
        if diverging is not None:
            _event(f"accepted difference: {diverging}")
            stop = True
        if stop:
            return  # from here on the servers legitimately hold different state
        local.refresh()
        real.refresh()
        local_summary, real_summary = local.summary(op, local_response), real.summary(op, real_response)
        lines = _diff(local_summary, real_summary)
        assert not lines, "the answers differ\n" + where + "\n" + "\n".join(lines)
        if op.kind in SEARCH_FIELDS or op.kind in ("list_event_handlers", "event_handlers_for_event"):
            found = local_summary["results"] if isinstance(local_summary, dict) else local_summary
            _event(f"{op.kind}: {'something' if found else 'nothing'} found alike")
        assert len(local.snapshots) == len(real.snapshots), f"started workflows differ after step {step}"
        for index, (local_wf, real_wf) in enumerate(zip(local.snapshots, real.snapshots)):
            lines = _diff(local.workflow_state(local_wf), real.workflow_state(real_wf), f"wf{index}")
            assert not lines, f"workflow states differ after step {step}: {op!r}\n" + "\n".join(lines)


# -- fixtures and the test -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def differential_local() -> Iterator[str]:
    with LocalConductor(sweep_interval=0.1) as server:
        yield server.url


@pytest.fixture(scope="session")
def differential_session() -> Iterator[requests.Session]:
    session = requests.Session()
    session.trust_env = False
    yield session
    session.close()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=IN_CI,  # reproducible in CI, random (with the example database) locally
    phases=tuple(Phase) if SHRINK else (Phase.explicit, Phase.reuse, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@pytest.mark.timeout(max(300, 3 * EXAMPLES))
@given(ops=scenarios())
def test_local_conductor_answers_like_the_real_server(
    ops: List[Op], differential_local: str, real_server_url: str, differential_session: requests.Session
) -> None:
    run_scenario(ops, differential_local, real_server_url, differential_session)


def test_the_comparison_can_fail(differential_local: str, real_server_url: str,
                                 differential_session: requests.Session) -> None:
    """A request both servers refuse differently must fail the comparison (no vacuous pass)."""
    unlisted = _op("batch_poll", "valid", "GET", ["tasks", "poll", "batch", Name("t0")],
                   [("count", "abc"), ("timeout", 0)])  # 400 vs 500, but tagged as a valid request
    with pytest.raises(AssertionError, match="not listed"):
        run_scenario([unlisted], differential_local, real_server_url, differential_session)


def test_the_comparison_helpers_report_what_differs() -> None:
    """The normalised comparison and the difference lookup are strict where they must be."""
    assert _diff({"a": 1, "b": [1, 2]}, {"a": 1.0, "b": [1, 2]}) == []
    assert _diff({"a": True}, {"a": 1}) == [".a: local=True real=1"]
    assert _diff({"tasks": [{"status": "FAILED"}]}, {"tasks": [{"status": "COMPLETED_WITH_ERRORS"}]}) == [
        ".tasks[0].status: local='FAILED' real='COMPLETED_WITH_ERRORS'"]
    assert _diff([1], [1, 2]) == ["<value>: local=[1] real=[1, 2]"]
    assert find_difference("update", "non_json", 400, 500) is not None
    assert find_difference("update", "valid", 400, 500) is None  # a valid request may not 500
    assert find_difference("update", "non_json", 500, 500) is None  # nor may LocalConductor
    assert always_diverges("update", "negative_callback") == "negative_callback_after_seconds"
    assert always_diverges("update", "valid") is None
