"""LocalConductor's workflow endpoints beyond start/get: execute, correlation, test runs, skiptask,
rerun and signals — the cases the conformance suite does not cover, and our client's methods for them.

(The behaviour shared with conductor-oss is checked against both servers in
tests/conformance/test_conformance_workflow_endpoints.py.)
"""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, List

import pytest
from lc_support import Api

from conductor_workers import ConductorClient, Configuration, WorkflowExecutor
from conductor_workers.errors import ConflictError, NotFoundError
from conductor_workers.models import StartWorkflowRequest
from conductor_workers.testing import LocalConductor


def define_ep(api: Api, name: str = "ep") -> None:
    api.task_def("ep_a", retryCount=0)
    api.task_def("ep_b", retryCount=0)
    api.workflow_def(name, [
        {"name": "ep_a", "taskReferenceName": "a", "type": "SIMPLE", "inputParameters": {"x": "${workflow.input.x}"}},
        {"name": "sv", "taskReferenceName": "sv", "type": "SET_VARIABLE", "inputParameters": {"v1": "${a.output.r}"}},
        {"name": "ep_b", "taskReferenceName": "b", "type": "SIMPLE"},
    ], outputParameters={"o": "${b.output.r}"})


def define_waits(api: Api, name: str = "waits") -> None:
    api.workflow_def(name, [
        {"name": "w1", "taskReferenceName": "w1", "type": "WAIT"},
        {"name": "w2", "taskReferenceName": "w2", "type": "WAIT"},
    ])


def refs(workflow: Dict[str, Any]) -> List[Any]:
    return [(t["referenceTaskName"], t["status"]) for t in workflow["tasks"]]


def name_of(status: Any) -> str:
    return str(getattr(status, "value", status))


def work(api: Api, task_type: str, output: Dict[str, Any], status: str = "COMPLETED") -> None:
    task = api.poll(task_type, timeout_ms=3000)
    assert task is not None, f"no {task_type} task"
    api.complete(task, status=status, outputData=output)


# -- execute --------------------------------------------------------------------------------------


def test_execute_does_not_hold_the_engine_while_it_waits(api: Api) -> None:
    define_ep(api)
    answer: Dict[str, Any] = {}

    def execute() -> None:
        response = api.post("/workflow/execute/ep/1", params={"waitUntilTaskRef": "b", "waitForSeconds": 8},
                            json={"input": {"x": 1}})
        answer["status"], answer["body"] = response.status_code, response.json()

    thread = threading.Thread(target=execute)
    thread.start()
    began = time.monotonic()
    work(api, "ep_a", {"r": 1})  # other requests are served while execute waits
    work(api, "ep_b", {"r": 2})
    assert time.monotonic() - began < 3
    thread.join(10)
    assert answer["status"] == 200
    body = answer["body"]
    assert (body["status"], body["signalTimeout"], body["output"]) == ("COMPLETED", False, {"o": 2})


def test_execute_query_parameters(api: Api) -> None:
    define_ep(api)
    define_waits(api)
    response = api.post("/workflow/execute/ep/1", params={"returnStrategy": "SOMETHING"}, json={})
    assert response.status_code == 400
    response = api.post("/workflow/execute/ep/one", json={})
    assert response.status_code == 400
    response = api.post("/workflow/execute/nope/1", json={})
    assert response.status_code == 404
    # several refs, comma separated: the first one done is enough
    thread = threading.Thread(target=work, args=(api, "ep_a", {"r": 5}))
    thread.start()
    response = api.post("/workflow/execute/ep/1", params={"waitUntilTaskRef": "zz, a", "waitForSeconds": 5},
                        json={"input": {"x": 2}})
    thread.join()
    body = response.json()
    assert body["signalTimeout"] is False and refs(body)[0] == ("a", "COMPLETED")
    # version 0 is the latest; a task strategy with nothing blocking: an empty 200 (the real server 500s)
    began = time.monotonic()
    response = api.post("/workflow/execute/ep/0", params={"waitForSeconds": 1, "returnStrategy": "BLOCKING_TASK"},
                        json={"input": {"x": 1}})
    assert (response.status_code, response.text) == (200, "")
    assert 0.9 <= time.monotonic() - began < 4
    # a WAIT blocks: the task strategies describe it
    response = api.post("/workflow/execute/waits/1", params={"returnStrategy": "BLOCKING_TASK_INPUT"}, json={})
    body = response.json()
    assert (body["responseType"], body["referenceTaskName"], body["taskType"]) == ("BLOCKING_TASK_INPUT", "w1", "WAIT")


def test_execute_of_an_inline_definition_marks_its_input_dynamic(api: Api) -> None:
    definition = {"name": "inl_def", "version": 1, "tasks": [
        {"name": "n", "taskReferenceName": "n", "type": "NOOP"}]}
    response = api.post("/workflow/execute/inl_def/1", json={"workflowDef": definition, "input": {"k": 1}})
    body = response.json()
    assert body["status"] == "COMPLETED"
    assert body["input"] == {"k": 1, "_systemMetadata": {"dynamic": True}}


# -- correlation and status -------------------------------------------------------------------------


def test_correlated_excludes_paused_unless_closed_included(api: Api) -> None:
    define_ep(api)
    workflow_id = api.start("ep", {"x": 1}, correlationId="c1")
    assert api.put(f"/workflow/{workflow_id}/pause").status_code == 200
    assert api.get("/workflow/ep/correlated/c1").json() == []
    closed = api.get("/workflow/ep/correlated/c1", params={"includeClosed": "true"}).json()
    assert [w["status"] for w in closed] == ["PAUSED"]
    assert api.get("/workflow/other/correlated/c1", params={"includeClosed": "true"}).json() == []
    assert api.post("/workflow/ep/correlated", json={"c1": 1}).status_code == 400
    assert api.post("/workflow/ep/correlated", json=[]).json() == {}


def test_status_of_an_unknown_workflow(api: Api) -> None:
    response = api.get("/workflow/nope/status")
    assert response.status_code == 404
    assert response.json()["message"] == "No such workflow found by id: nope"


# -- test runs -------------------------------------------------------------------------------------


def test_test_run_with_operators_and_timing_mocks(api: Api) -> None:
    api.task_def("t_a", retryCount=1)
    api.workflow_def("tst", [
        {"name": "fork", "taskReferenceName": "fork", "type": "FORK_JOIN", "forkTasks": [
            [{"name": "t_a", "taskReferenceName": "x", "type": "SIMPLE"}],
            [{"name": "t_a", "taskReferenceName": "y", "type": "SIMPLE"}]]},
        {"name": "join", "taskReferenceName": "join", "type": "JOIN", "joinOn": ["x", "y"]},
    ])
    mocks = {"x": [{"status": "FAILED", "output": {}}, {"status": "COMPLETED", "output": {"n": 2}}],
             "y": [{"status": "COMPLETED", "output": {"n": 3}, "executionTime": 5000, "queueWaitTime": 1000}]}
    response = api.post("/workflow/test", json={"name": "tst", "taskRefToMockOutput": mocks})
    assert response.status_code == 200, response.text
    workflow = response.json()
    assert workflow["status"] == "COMPLETED"
    assert [(ref, status) for ref, status in refs(workflow)] == [
        ("fork", "COMPLETED"), ("x", "FAILED"), ("y", "COMPLETED"), ("join", "COMPLETED"), ("x", "COMPLETED")]
    y = [t for t in workflow["tasks"] if t["referenceTaskName"] == "y"][0]
    assert 4000 <= y["endTime"] - y["startTime"] <= 7000  # the mock's execution time
    assert workflow["tasks"][3]["outputData"] == {"x": {"n": 2}, "y": {"n": 3}}


def test_test_run_of_a_sub_workflow_and_bad_requests(api: Api) -> None:
    api.task_def("t_c", retryCount=0)
    api.workflow_def("child", [{"name": "t_c", "taskReferenceName": "c", "type": "SIMPLE"}])
    api.workflow_def("parent", [{"name": "sub", "taskReferenceName": "sub", "type": "SUB_WORKFLOW",
                                 "subWorkflowParam": {"name": "child", "version": 1}}])
    body = {"name": "parent", "taskRefToMockOutput": {},
            "subWorkflowTestRequest": {"sub": {"name": "child", "taskRefToMockOutput": {
                "c": [{"output": {"v": 1}}]}}}}
    answered = api.post("/workflow/test", json=body).json()
    # as WorkflowTestService does, the answer is the parent as the last round saw it (before its child
    # was run); the store has the end of the run
    assert answered["status"] == "RUNNING"
    workflow = api.get("/workflow/" + answered["workflowId"]).json()
    assert workflow["status"] == "COMPLETED"
    assert workflow["output"]["v"] == 1
    bad = api.post("/workflow/test", json={"name": "parent", "taskRefToMockOutput": {"sub": [{"status": "NOPE"}]}})
    assert bad.status_code == 400
    assert api.post("/workflow/test", json={"name": "nope"}).status_code == 404
    assert api.post("/workflow/test", json=[]).status_code == 400


def test_test_run_stops_at_an_unmocked_wait(api: Api) -> None:
    define_waits(api)
    workflow = api.post("/workflow/test", json={"name": "waits", "taskRefToMockOutput": {
        "w1": [{"status": "COMPLETED", "output": {"m": 1}}]}}).json()
    assert workflow["status"] == "RUNNING"
    assert refs(workflow) == [("w1", "COMPLETED"), ("w2", "IN_PROGRESS")]


# -- skiptask ----------------------------------------------------------------------------------------


def test_skiptask_of_a_task_in_the_middle_and_unknown_workflow(api: Api) -> None:
    api.task_def("s1")
    api.workflow_def("skip3", [
        {"name": "s1", "taskReferenceName": "one", "type": "SIMPLE"},
        {"name": "s1", "taskReferenceName": "two", "type": "SIMPLE"},
        {"name": "s1", "taskReferenceName": "three", "type": "SIMPLE"},
    ])
    workflow_id = api.start("skip3")
    assert api.put(f"/workflow/{workflow_id}/skiptask/two").status_code == 200
    work(api, "s1", {"k": 1})
    task = api.poll("s1", timeout_ms=2000)
    assert task is not None and task["referenceTaskName"] == "three"
    api.complete(task)
    workflow = api.get(f"/workflow/{workflow_id}").json()
    assert workflow["status"] == "COMPLETED"
    assert refs(workflow) == [("two", "SKIPPED"), ("one", "COMPLETED"), ("three", "COMPLETED")]
    assert api.put("/workflow/nope/skiptask/two").status_code == 404


# -- rerun -------------------------------------------------------------------------------------------


def test_rerun_from_a_task_of_a_sub_workflow(api: Api) -> None:
    api.task_def("t_c", retryCount=0)
    api.workflow_def("child", [{"name": "t_c", "taskReferenceName": "c", "type": "SIMPLE"}])
    api.workflow_def("parent", [{"name": "sub", "taskReferenceName": "sub", "type": "SUB_WORKFLOW",
                                 "subWorkflowParam": {"name": "child", "version": 1}}])
    parent_id = api.start("parent")
    task = api.poll("t_c", timeout_ms=2000)
    assert task is not None
    api.complete(task, status="FAILED", reasonForIncompletion="boom")
    parent = api.get(f"/workflow/{parent_id}").json()
    assert parent["status"] == "FAILED"
    child_id = parent["tasks"][0]["subWorkflowId"]

    response = api.post(f"/workflow/{parent_id}/rerun", json={"reRunFromTaskId": task["taskId"]})
    assert (response.status_code, response.text) == (200, parent_id)
    assert refs(api.get(f"/workflow/{parent_id}").json()) == [("sub", "IN_PROGRESS")]
    assert refs(api.get(f"/workflow/{child_id}").json()) == [("c", "SCHEDULED")]
    work(api, "t_c", {"v": 9})
    parent = api.get(f"/workflow/{parent_id}").json()
    assert parent["status"] == "COMPLETED" and parent["output"]["v"] == 9


def test_rerun_body_is_checked(api: Api) -> None:
    define_ep(api)
    workflow_id = api.start("ep", {"x": 1})
    api.delete(f"/workflow/{workflow_id}")
    assert api.post(f"/workflow/{workflow_id}/rerun").status_code == 400  # a body is required
    assert api.post(f"/workflow/{workflow_id}/rerun", json={"taskInput": [1]}).status_code == 400
    assert api.post("/workflow/nope/rerun", json={}).status_code == 404


# -- signals ---------------------------------------------------------------------------------------------


def test_signal_routes_do_not_shadow_update_by_ref(api: Api) -> None:
    api.workflow_def("refs", [{"name": "signal", "taskReferenceName": "signal", "type": "WAIT"},
                              {"name": "w", "taskReferenceName": "w", "type": "WAIT"}])
    workflow_id = api.start("refs")
    # /tasks/{id}/signal/COMPLETED: a task whose reference name is "signal", updated by reference name
    response = api.post(f"/tasks/{workflow_id}/signal/COMPLETED", json={"by": "ref"})
    assert response.status_code == 200 and response.text
    # /tasks/{id}/COMPLETED/signal: the signal endpoint
    response = api.post(f"/tasks/{workflow_id}/COMPLETED/signal", json={"by": "signal"})
    assert (response.status_code, response.text) == (200, "")
    workflow = api.get(f"/workflow/{workflow_id}").json()
    assert [(t["referenceTaskName"], t["status"], t["outputData"]) for t in workflow["tasks"]] == [
        ("signal", "COMPLETED", {"by": "ref"}), ("w", "COMPLETED", {"by": "signal"})]


def test_signal_sync_times_out(api: Api) -> None:
    api.task_def("after")
    api.workflow_def("then_simple", [{"name": "w", "taskReferenceName": "w", "type": "WAIT"},
                                     {"name": "after", "taskReferenceName": "after", "type": "SIMPLE"}])
    workflow_id = api.start("then_simple")
    began = time.monotonic()
    response = api.post(f"/tasks/{workflow_id}/COMPLETED/signal/sync", params={"timeoutMillis": 300}, json={})
    assert 0.25 <= time.monotonic() - began < 3
    body = response.json()
    assert (body["signalTimeout"], body["status"]) == (True, "RUNNING")
    assert refs(body) == [("w", "COMPLETED"), ("after", "SCHEDULED")]


# -- our client -----------------------------------------------------------------------------------------


@pytest.fixture
def executor(server: LocalConductor) -> Any:
    with ConductorClient(Configuration(server_url=server.url)) as client:
        yield WorkflowExecutor(client)


def test_client_methods(api: Api, executor: WorkflowExecutor) -> None:
    define_ep(api)
    define_waits(api)
    run = executor.execute_workflow(StartWorkflowRequest(name="waits"), wait_for_seconds=2)
    assert run is not None and not run.is_task_run and run.status == "RUNNING"
    workflow_id = run.workflow_id or ""
    executor.signal(workflow_id, "COMPLETED", {"one": 1})
    last = executor.signal_sync(workflow_id, "COMPLETED", {"two": 2}, return_strategy="BLOCKING_WORKFLOW")
    assert last is not None and last.status == "COMPLETED"
    with pytest.raises(NotFoundError):
        executor.signal_sync(workflow_id, "COMPLETED")

    summary = executor.get_workflow_status(workflow_id, include_output=True)
    assert (summary.workflow_id, name_of(summary.status), summary.output) == (workflow_id, "COMPLETED", {"two": 2})

    tested = executor.test_workflow(StartWorkflowRequest(name="ep", input={"x": 1}, correlation_id="cc"),
                                    {"a": [{"output": {"r": 1}}], "b": [{"output": {"r": 2}}]})
    assert (name_of(tested.status), tested.output) == ("COMPLETED", {"o": 2})
    assert [w.workflow_id for w in executor.get_by_correlation_id("ep", "cc", include_closed=True)] == [
        tested.workflow_id]
    assert list(executor.get_by_correlation_ids("ep", ["cc", "dd"])) == ["cc", "dd"]

    started = executor.start_workflow("ep", {"x": 3})
    executor.skip_task(started, "b")
    with pytest.raises(ConflictError):
        executor.skip_task(started, "a")
    work(api, "ep_a", {"r": 0})
    done = executor.wait_for_workflow(started, timeout=5)
    assert [t.reference_task_name for t in done.tasks] == ["b", "a", "sv"]

    assert executor.rerun(started, workflow_input={"x": 4}) == started
    again = executor.get_workflow(started)
    assert again.input == {"x": 4} and [t.reference_task_name for t in again.tasks] == ["a"]
