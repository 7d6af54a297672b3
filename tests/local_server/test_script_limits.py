"""Scripts (INLINE and SWITCH JavaScript, JSON_JQ_TRANSFORM) cannot freeze, kill or outlive the server.

A script runs in a runner process with a time limit and a memory limit: a runaway fails its own task
with conductor-oss's status and reason, the server keeps answering, and SIGTERM stops it at once.

The hostile cases run the server as ``python -m conductor_workers server`` in a process of its own: a
script that kills or freezes the server must not take the test process with it (a jq query holds the
GIL, so not even pytest-timeout could end an in-process run).
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from typing import Any, Dict, Iterator, List, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lc_support import Api, ServerProcess, simple, unique

from conductor_workers.server import LocalConductor, ScriptLimits
from conductor_workers.server.scripts import Scripts, javascript_available, jq_available

needs_js = pytest.mark.skipif(not javascript_available(), reason="mini-racer is not installed")
needs_jq = pytest.mark.skipif(not jq_available(), reason="jq is not installed")


@pytest.fixture
def make_server() -> Iterator[Any]:
    servers: List[ServerProcess] = []

    def make(*flags: str, address_space_mb: int = 0) -> ServerProcess:
        servers.append(ServerProcess(*flags, address_space_mb=address_space_mb))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def script_task(kind: str, source: str, ref: str = "script", **inputs: Any) -> Dict[str, Any]:
    if kind == "jq":
        return {"name": ref, "taskReferenceName": ref, "type": "JSON_JQ_TRANSFORM",
                "inputParameters": dict(inputs, queryExpression=source)}
    return {"name": ref, "taskReferenceName": ref, "type": "INLINE",
            "inputParameters": dict(inputs, evaluatorType="javascript", expression=source)}


def start_in_background(api: Api, name: str, workflow_input: Optional[Dict[str, Any]] = None) -> List[Any]:
    """Start ``name`` on a thread (a start decides at once, so it waits for the script); the answer lands
    in the list returned (the workflow id, or the exception)."""
    answers: List[Any] = []

    def start() -> None:
        try:
            answers.append(api.start(name, workflow_input))
        except Exception as error:  # the test reads it
            answers.append(error)

    threading.Thread(target=start, daemon=True).start()
    return answers


def wait_for(answers: List[Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not answers and time.monotonic() < deadline:
        time.sleep(0.02)
    assert answers, "no answer within %.1f s" % timeout
    assert isinstance(answers[0], str), answers[0]
    return answers[0]


def health_latencies(api: Api, seconds: float) -> List[float]:
    """GET /health for ``seconds``; how long each call took."""
    latencies = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        began = time.monotonic()
        assert api.session.get(api.url + "/health", timeout=2).status_code == 200
        latencies.append(time.monotonic() - began)
        time.sleep(0.05)
    return latencies


def still_serving(server: ServerProcess, kind: str) -> None:
    """The server process is alive, answers, and runs a new workflow with a ``kind`` script to the end."""
    assert server.alive()
    api = server.api
    name = unique("after")
    api.workflow_def(name, [script_task(kind, ".a + 1" if kind == "jq" else "$.a + 1", a=1),
                            simple(unique("after_worker"), "work")])
    workflow_id = api.start(name)
    task = api.poll(api.workflow(workflow_id)["tasks"][-1]["taskType"])
    assert task is not None
    api.complete(task)
    done = api.wait_status(workflow_id, "COMPLETED")
    assert done["tasks"][0]["outputData"]["result"] == 2
    assert server.alive()


# -- time limit ----------------------------------------------------------------------------------------

@needs_jq
@pytest.mark.timeout(40)
def test_an_endless_jq_query_fails_its_task_at_the_time_limit_and_health_keeps_answering(make_server):
    server = make_server("--script-time-limit", "1", address_space_mb=4096)
    name = unique("endless_jq")
    server.api.workflow_def(name, [script_task("jq", "last(range(1e12))")])
    answers = start_in_background(server.api, name)
    latencies = health_latencies(server.api, 0.8)
    workflow_id = wait_for(answers, 5)
    assert max(latencies) < 0.5, latencies
    done = server.api.wait_status(workflow_id, "FAILED")
    task = done["tasks"][0]
    assert task["status"] == "FAILED"  # as any jq failure on conductor-oss
    assert task["reasonForIncompletion"] == "Query not evaluated within 1 seconds, interrupted."
    assert task["outputData"] == {"error": task["reasonForIncompletion"]}
    still_serving(server, "jq")


@needs_js
@pytest.mark.timeout(30)
def test_an_inline_timeout_fails_the_task_retryably_as_conductor_oss_does():
    # conductor-oss: NonTransientException("Script not evaluated within 4 seconds, interrupted.") -> FAILED
    with LocalConductor(script_limits=ScriptLimits(time_limit=1)) as conductor:
        api = Api(conductor.url)
        name = unique("busy_inline")
        task = script_task("js", "while (true) {}")
        task["taskDefinition"] = {"name": task["name"], "retryCount": 1, "retryDelaySeconds": 0,
                                  "timeoutSeconds": 0, "responseTimeoutSeconds": 60}
        api.workflow_def(name, [task])
        done = api.wait_status(api.start(name), "FAILED", timeout=10)
        api.session.close()
    reason = "Script not evaluated within 1 seconds, interrupted."
    assert [(t["status"], t["retryCount"], t["reasonForIncompletion"]) for t in done["tasks"]] == [
        ("FAILED", 0, reason), ("FAILED", 1, reason)]  # FAILED is retried, FAILED_WITH_TERMINAL_ERROR would not be
    assert done["tasks"][0]["outputData"] == {"error": reason}


@needs_js
@pytest.mark.timeout(30)
def test_a_busy_switch_script_fails_the_switch_at_the_time_limit():
    with LocalConductor(script_limits=ScriptLimits(time_limit=0.5)) as conductor:
        api = Api(conductor.url)
        name = unique("busy_switch")
        api.workflow_def(name, [{"name": "sw", "taskReferenceName": "sw", "type": "SWITCH",
                                 "evaluatorType": "javascript", "expression": "while (true) {}",
                                 "decisionCases": {}, "defaultCase": []}])
        began = time.monotonic()
        done = api.wait_status(api.start(name), "FAILED", timeout=10)
        elapsed = time.monotonic() - began
        api.session.close()
    assert done["tasks"][0]["reasonForIncompletion"] == "Script not evaluated within 0.5 seconds, interrupted."
    assert elapsed < 3


# -- memory limit --------------------------------------------------------------------------------------

@needs_js
@pytest.mark.timeout(60)
def test_an_inline_script_allocating_without_bound_fails_its_task_not_the_server(make_server):
    server = make_server("--script-time-limit", "20", "--script-memory-limit", "128")
    name = unique("greedy_inline")
    server.api.workflow_def(name, [script_task("js", "var a = []; for (;;) { a.push(new Array(1e6).fill(1.5)); }")])
    answers = start_in_background(server.api, name)
    workflow_id = wait_for(answers, 30)
    done = server.api.wait_status(workflow_id, "FAILED")
    task = done["tasks"][0]
    # a script error on conductor-oss: TerminateWorkflowException -> FAILED_WITH_TERMINAL_ERROR
    assert task["status"] == "FAILED_WITH_TERMINAL_ERROR"
    assert task["reasonForIncompletion"] == "Error evaluating the script `Script used more than 128 MB of memory`"
    still_serving(server, "js")


@needs_jq
@pytest.mark.timeout(60)
def test_a_recursive_jq_query_fails_its_task_not_the_server(make_server):
    server = make_server("--script-time-limit", "20", "--script-memory-limit", "128", address_space_mb=2048)
    name = unique("recursive_jq")
    server.api.workflow_def(name, [script_task("jq", "def f: [f]; f")])
    workflow_id = wait_for(start_in_background(server.api, name), 30)
    done = server.api.wait_status(workflow_id, "FAILED")
    task = done["tasks"][0]
    assert task["status"] == "FAILED"
    assert task["reasonForIncompletion"] == "Query used more than 128 MB of memory"
    still_serving(server, "jq")


# -- stopping ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, source", [
    pytest.param("js", "while (true) {}", marks=needs_js),
    pytest.param("jq", "last(range(1e12))", marks=needs_jq),
])
@pytest.mark.timeout(40)
def test_sigterm_stops_the_server_within_a_second_while_a_script_runs(make_server, kind, source):
    server = make_server("--script-time-limit", "30", address_space_mb=4096 if kind == "jq" else 0)
    name = unique("stop_" + kind)
    server.api.workflow_def(name, [script_task(kind, source)])
    start_in_background(server.api, name)
    time.sleep(0.5)  # the script is running now
    began = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    try:
        code = server.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail("the server did not stop within 5 s of SIGTERM")
    assert time.monotonic() - began < 1.5
    assert code == 0


# -- the runner protocol -------------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 53), 2 ** 53)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(st.characters(blacklist_categories=("Cs",))),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(st.characters(blacklist_categories=("Cs",)), max_size=8), inner, max_size=4),
    max_leaves=12)


@pytest.fixture(scope="module")
def scripts() -> Iterator[Scripts]:
    engines = Scripts(ScriptLimits(time_limit=5))
    yield engines
    engines.close()


@needs_jq
@settings(max_examples=60, deadline=None)
@given(value=_JSON)
def test_any_json_value_crosses_a_jq_runner_unchanged(scripts, value):
    assert scripts.jq(".v", {"v": value}) == [value]


@needs_js
@settings(max_examples=60, deadline=None)
@given(value=_JSON)
def test_any_json_value_crosses_a_javascript_runner_unchanged(scripts, value):
    assert numbers_as_floats(scripts.javascript("$.v", {"v": value})) == numbers_as_floats(value)


def numbers_as_floats(value: Any) -> Any:
    """JavaScript has one number type: 4.5e16 comes back as the int 45000000000000000."""
    if isinstance(value, dict):
        return {key: numbers_as_floats(item) for key, item in value.items()}
    if isinstance(value, list):
        return [numbers_as_floats(item) for item in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


@needs_jq
@pytest.mark.timeout(30)
def test_a_closed_engine_refuses_scripts_at_once():
    engines = Scripts(ScriptLimits(time_limit=5))
    assert engines.jq(".", 1) == [1]
    engines.close()
    began = time.monotonic()
    with pytest.raises(Exception) as caught:
        engines.jq(".", 1)
    assert "stopping" in str(caught.value)
    assert time.monotonic() - began < 0.5


def test_script_limits_are_checked():
    for bad in ({"time_limit": 0}, {"time_limit": float("inf")}, {"memory_mb": 0}, {"memory_mb": 1.5},
                {"time_limit": float("nan")}, {"memory_mb": 10 ** 9}):
        with pytest.raises(ValueError):
            ScriptLimits(**bad)


@needs_js
@pytest.mark.timeout(30)
def test_stopping_while_a_script_runs_rolls_its_decide_back(tmp_path):
    db = str(tmp_path / "state.db")
    conductor = LocalConductor(db_path=db, script_limits=ScriptLimits(time_limit=30)).start()
    api = Api(conductor.url)
    name = unique("stopped_inline")
    api.workflow_def(name, [script_task("js", "while (true) {}")])
    answers: List[Any] = []
    thread = threading.Thread(target=lambda: answers.append(api.post("/workflow/" + name, json={})), daemon=True)
    thread.start()
    time.sleep(0.5)  # the script is running now
    began = time.monotonic()
    conductor.stop()
    assert time.monotonic() - began < 1.0
    thread.join(5)
    assert answers and answers[0].status_code == 503, answers
    api.session.close()
    with LocalConductor(db_path=db) as again:  # the start was rolled back whole: no half-run workflow
        api = Api(again.url)
        assert api.get("/workflow/running/" + name).json() == []
        api.session.close()
