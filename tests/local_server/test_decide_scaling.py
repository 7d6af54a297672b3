"""One workflow's decide never holds LocalConductor: its cost per scheduled task stays the same however
large the workflow grows, and a workflow whose system tasks never stop (an endless DO_WHILE) is
decided in slices, with the engine free for every other call in between (issue 22, cases 3 and 4).

The tests compare costs (late iterations against early ones, a large fork against a small one)
rather than absolute times: the machine is shared. Where the old engine would hold a call for
minutes, the call has a short client timeout so that the test fails fast.
"""

from __future__ import annotations

import signal
import subprocess
import time
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import requests
from lc_support import Api, ServerProcess, unique

from conductor_workers.server.scripts import javascript_available

needs_js = pytest.mark.skipif(not javascript_available(), reason="mini-racer is not installed")


def endless_loop(name: str, condition: str = "true", **loop_input: Any) -> List[Dict[str, Any]]:
    """A DO_WHILE of one SET_VARIABLE that records the iteration in the workflow's variables."""
    counter = {"name": "count", "taskReferenceName": "count", "type": "SET_VARIABLE",
               "inputParameters": {"i": "${loop.output.iteration}"}}
    return [{"name": "loop", "taskReferenceName": "loop", "type": "DO_WHILE", "inputParameters": loop_input,
             "loopCondition": condition, "loopOver": [counter]}]


def start(api: Api, name: str, body: Any = None, timeout: float = 5.0) -> Tuple[str, float]:
    """Start ``name``; its id and how long the start took (fails the test past ``timeout``)."""
    began = time.monotonic()
    try:
        response = api.session.post(api.url + "/workflow/" + name, json=body or {}, timeout=timeout)
    except requests.Timeout:
        pytest.fail("starting %s did not answer within %.1f s" % (name, timeout))
    assert response.status_code == 200, response.text
    return response.text, time.monotonic() - began


def timed_get(api: Api, path: str, limit: float) -> Tuple[Dict[str, Any], float]:
    began = time.monotonic()
    try:
        response = api.session.get(api.url + path, timeout=limit + 5)
    except requests.Timeout:
        pytest.fail("GET %s did not answer within %.1f s" % (path, limit + 5))
    took = time.monotonic() - began
    assert response.status_code == 200, response.text
    return response.json(), took


def iteration_of(api: Api, workflow_id: str, limit: float = 1.0) -> Tuple[int, str, float]:
    """The loop's iteration (from the workflow's variables: no task is loaded), the status and how
    long the call took."""
    workflow, took = timed_get(api, "/workflow/%s?includeTasks=false" % workflow_id, limit)
    return int((workflow.get("variables") or {}).get("i") or 0), workflow["status"], took


# -- case 3: a DO_WHILE of system tasks --------------------------------------------------------------

@needs_js
@pytest.mark.timeout(90)
def test_late_loop_iterations_cost_what_early_ones_cost_and_the_server_answers_meanwhile(api):
    name = unique("loop_cost")
    iterations = 1000
    api.workflow_def(name, endless_loop(name, "$.loop['iteration'] < $.n", n=iterations))
    workflow_id, _ = start(api, name, timeout=5.0)  # the old engine decided all 1,000 iterations first
    reached: List[Tuple[float, int]] = []  # (when, iteration)
    slowest_call = 0.0
    deadline = time.monotonic() + 60
    status = "RUNNING"
    while status == "RUNNING" and time.monotonic() < deadline:
        iteration, status, took = iteration_of(api, workflow_id)
        _, health_took = timed_get(api, "/health", 1.0)
        slowest_call = max(slowest_call, took, health_took)
        reached.append((time.monotonic(), iteration))
    assert status == "COMPLETED", status
    assert slowest_call < 1.0, "a call waited %.2f s for the loop" % slowest_call

    def when(iteration: int) -> float:
        return next(moment for moment, done in reached if done >= iteration)

    early = when(300) - when(100)
    late = when(1000) - when(800)
    # linear: about the same (the condition's input grows a little with the loop's output); the old
    # engine's late iterations cost 4 to 5 times its early ones
    assert late < 2.5 * early + 0.3, "iterations 800-1000 took %.2f s, 100-300 took %.2f s" % (late, early)


@pytest.fixture
def server_process() -> Iterator[ServerProcess]:
    server = ServerProcess()
    try:
        yield server
    finally:
        server.close()


@pytest.mark.timeout(90)
def test_an_endless_loop_of_system_tasks_runs_on_like_conductor_oss_and_never_holds_the_server(server_process):
    api = server_process.api
    name, other = unique("endless"), unique("beside")
    api.workflow_def(name, endless_loop(name))
    api.workflow_def(other, [{"name": "noop", "taskReferenceName": "noop", "type": "NOOP"}])
    endless_id, took = start(api, name, timeout=5.0)
    assert took < 2.0
    # conductor-oss 3.32.1 has no iteration limit: the loop goes on, in slices, and the rest answers
    first, status, _ = iteration_of(api, endless_id)
    assert status == "RUNNING"
    slowest = 0.0
    for _ in range(10):
        _, took = timed_get(api, "/health", 1.0)
        other_id, start_took = start(api, other, timeout=5.0)
        slowest = max(slowest, took, start_took)
        assert api.workflow(other_id)["status"] == "COMPLETED"
    assert slowest < 1.0, "a call waited %.2f s for the loop" % slowest
    deadline = time.monotonic() + 30
    while iteration_of(api, endless_id)[0] < first + 300:
        assert time.monotonic() < deadline, "the loop stopped going on"
    # it ends when told to
    began = time.monotonic()
    response = api.session.delete(api.url + "/workflow/%s?reason=enough" % endless_id, timeout=5)
    assert response.status_code == 200, response.text
    assert time.monotonic() - began < 1.0
    stopped_at, status, _ = iteration_of(api, endless_id)
    assert status == "TERMINATED"
    time.sleep(0.3)
    assert iteration_of(api, endless_id)[0] == stopped_at
    # and SIGTERM stops the server while another endless loop runs
    start(api, name, timeout=5.0)
    time.sleep(0.3)
    began = time.monotonic()
    server_process.process.send_signal(signal.SIGTERM)
    try:
        code = server_process.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail("the server did not stop within 5 s of SIGTERM")
    assert time.monotonic() - began < 1.5
    assert code == 0


# -- case 4: FORK_JOIN_DYNAMIC -------------------------------------------------------------------------

def dynamic_fork(task_name: str) -> List[Dict[str, Any]]:
    return [{"name": "fork", "taskReferenceName": "fork", "type": "FORK_JOIN_DYNAMIC",
             "inputParameters": {"forkTaskName": task_name, "forkTaskInputs": "${workflow.input.items}"}},
            {"name": "join", "taskReferenceName": "join", "type": "JOIN"}]


@pytest.mark.timeout(60)
def test_starting_a_dynamic_fork_costs_the_same_per_forked_task_whatever_its_size(api):
    name, task_name = unique("wide"), unique("branch")
    api.task_def(task_name)
    api.workflow_def(name, dynamic_fork(task_name))
    small, large = 250, 2000
    start(api, name, {"items": [{"i": i} for i in range(small)]})  # warm up
    _, small_took = start(api, name, {"items": [{"i": i} for i in range(small)]})
    # the old engine took 13 s for 2,000 forks (the cost of each forked task grew with the fork)
    large_id, large_took = start(api, name, {"items": [{"i": i} for i in range(large)]},
                                 timeout=max(3.0, 30 * small_took))
    per_task_small, per_task_large = small_took / small, large_took / large
    assert per_task_large < 3 * per_task_small + 0.0002, (
        "%.2f ms per forked task at %d, %.2f ms at %d" % (per_task_small * 1e3, small, per_task_large * 1e3, large))
    workflow = api.workflow(large_id)
    assert len(workflow["tasks"]) == large + 2
    assert workflow["tasks"][-1]["inputData"]["joinOn"] == ["_%s_%d" % (task_name, i) for i in range(large)]


def test_the_join_of_a_dynamic_fork_completes_when_its_last_branch_does(api):
    name, task_name = unique("join_end"), unique("branch")
    api.task_def(task_name)
    api.workflow_def(name, dynamic_fork(task_name))
    workflow_id, _ = start(api, name, {"items": [{"i": i} for i in range(50)]})
    for _ in range(50):
        task = api.poll(task_name)
        assert task is not None
        assert api.workflow(workflow_id)["tasks"][-1]["status"] == "IN_PROGRESS"
        api.complete(task, outputData={"double": task["inputData"]["i"] * 2})
    workflow = api.wait_status(workflow_id, "COMPLETED")
    join = workflow["tasks"][-1]
    assert join["status"] == "COMPLETED"
    assert join["outputData"]["_%s_7" % task_name] == {"double": 14}


def test_a_decide_cut_short_goes_on_from_where_it_stopped(server, api, monkeypatch):
    """A decide that runs out of time leaves the rest to the sweeper; what it did is kept, nothing twice."""
    from conductor_workers.server import decider

    monkeypatch.setattr(decider, "DECIDE_SLICE_SECONDS", 0.0)  # one round per slice
    name = unique("sliced")
    api.workflow_def(name, endless_loop(name, "if ($.loop['iteration'] < 20) { true; } else { false; }"
                                        if javascript_available() else "false"))
    workflow_id, _ = start(api, name)
    workflow = api.wait_status(workflow_id, "COMPLETED", timeout=30)
    loops = 20 if javascript_available() else 1
    counts = [task for task in workflow["tasks"] if task["referenceTaskName"].startswith("count__")]
    assert [task["referenceTaskName"] for task in counts] == ["count__%d" % i for i in range(1, loops + 1)]
    assert workflow["variables"]["i"] == loops
    assert workflow["tasks"][0]["outputData"]["iteration"] == loops
    assert sorted(int(key) for key in workflow["tasks"][0]["outputData"] if key.isdigit()) == list(
        range(1, loops + 1))


@pytest.mark.timeout(60)
def test_many_loops_at_once_share_the_server(server_process):
    """Several endless loops beside each other: each goes on, and a short workflow still completes."""
    api = server_process.api
    name, other = unique("crowd"), unique("quick")
    api.workflow_def(name, endless_loop(name))
    api.workflow_def(other, [{"name": "noop", "taskReferenceName": "noop", "type": "NOOP"}])
    ids = [start(api, name)[0] for _ in range(3)]
    deadline = time.monotonic() + 20
    while any(iteration_of(api, workflow_id)[0] < 50 for workflow_id in ids):
        assert time.monotonic() < deadline, [iteration_of(api, workflow_id) for workflow_id in ids]
    quick_id, took = start(api, other)
    assert took < 1.0
    assert api.workflow(quick_id)["status"] == "COMPLETED"
    for workflow_id in ids:
        assert api.delete("/workflow/%s?reason=done" % workflow_id).status_code == 200
