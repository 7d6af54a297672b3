"""Workflow endpoints beyond start/get on both servers: status, execute (sync start), correlation
lookups, the test endpoint (mocked outputs), skiptask, rerun and signals.

Expectations are what conductor-oss 3.32.1 was measured to do (notes: system_tasks.md §10). Each test
uses the client library where it has a method for the endpoint, and plain HTTP where the status code
or the raw body is the point.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import pytest
import requests
from _helpers import OWNER, complete, fail, finished, poll_one, status_of, task_def, unique, wait_until
from differences import expect_difference

from conductor_workers.errors import APIError, NotFoundError
from conductor_workers.models import StartWorkflowRequest, Workflow, WorkflowDef


# -- helpers ---------------------------------------------------------------------------------------


def register_ep(client: Any) -> Tuple[str, str, str]:
    """``a`` (SIMPLE) → ``sv`` (SET_VARIABLE v1=a.r) → ``b`` (SIMPLE); output ``o = b.r``. Names."""
    type_a, type_b = unique("we_a"), unique("we_b")
    client.metadata.register_task_defs([task_def(type_a), task_def(type_b)])
    name = unique("we_wf")
    definition = {
        "name": name, "version": 1, "schemaVersion": 2, "ownerEmail": OWNER, "timeoutSeconds": 0,
        "tasks": [
            {"name": type_a, "taskReferenceName": "a", "type": "SIMPLE",
             "inputParameters": {"x": "${workflow.input.x}"}},
            {"name": "sv", "taskReferenceName": "sv", "type": "SET_VARIABLE",
             "inputParameters": {"v1": "${a.output.r}"}},
            {"name": type_b, "taskReferenceName": "b", "type": "SIMPLE"},
        ],
        "outputParameters": {"o": "${b.output.r}"},
    }
    client.metadata.register_workflow_def(WorkflowDef.from_json(definition))
    return name, type_a, type_b


def register_waits(client: Any) -> str:
    """``w1`` (WAIT) → ``w2`` (WAIT) → ``inl`` (INLINE value-param, result 1)."""
    name = unique("we_sig")
    definition = {
        "name": name, "version": 1, "schemaVersion": 2, "ownerEmail": OWNER, "timeoutSeconds": 0,
        "tasks": [
            {"name": "w1", "taskReferenceName": "w1", "type": "WAIT"},
            {"name": "w2", "taskReferenceName": "w2", "type": "WAIT"},
            {"name": "inl", "taskReferenceName": "inl", "type": "INLINE",
             "inputParameters": {"evaluatorType": "value-param", "expression": "v", "v": 1}},
        ],
    }
    client.metadata.register_workflow_def(WorkflowDef.from_json(definition))
    return name


def rows(workflow: Workflow) -> List[Tuple[Any, ...]]:
    """(referenceTaskName, status, seq) per task, in the server's order."""
    return [(t.reference_task_name, status_of(t.status), t.seq) for t in workflow.tasks]


def by_ref(workflow: Workflow, ref: str) -> Any:
    task = workflow.task_by_ref(ref)
    assert task is not None, f"no task {ref} in {rows(workflow)}"
    return task


def raw(conductor: Any) -> requests.Session:
    """A plain HTTP session (for status codes and raw bodies)."""
    session = requests.Session()
    session.trust_env = False
    return session


def started(
    client: Any, name: str, inputs: Optional[Dict[str, Any]] = None, correlation_id: Optional[str] = None
) -> str:
    return client.workflows.start_by_name(name, inputs or {}, correlation_id=correlation_id)


def wait_for_task(client: Any, workflow_id: str, ref: str, status: str = "IN_PROGRESS") -> Workflow:
    def ready() -> Optional[Workflow]:
        workflow = client.workflows.get(workflow_id)
        task = workflow.task_by_ref(ref)
        return workflow if task is not None and status_of(task.status) == status else None

    found = wait_until(ready, timeout=10, message=f"task {ref} of {workflow_id} to be {status}")
    assert found is not None
    return found


def cleanup(client: Any, *workflow_ids: str) -> None:
    for workflow_id in workflow_ids:
        try:
            client.workflows.terminate(workflow_id, "test over")
        except APIError:
            pass


# -- GET /workflow/{id}/status ---------------------------------------------------------------------


def test_status_summary(client: Any) -> None:
    name, type_a, type_b = register_ep(client)
    correlation_id = unique("cid")
    workflow_id = started(client, name, {"x": 1}, correlation_id)

    plain = client.workflows.get_status(workflow_id)
    assert (plain.workflow_id, plain.correlation_id) == (workflow_id, correlation_id)
    assert status_of(plain.status) == "RUNNING"
    assert plain.output is None and plain.variables is None  # absent unless asked for
    full = client.workflows.get_status(workflow_id, include_output=True, include_variables=True)
    assert (full.output, full.variables) == ({}, {})

    complete(client, poll_one(client, type_a), {"r": 11})
    complete(client, poll_one(client, type_b), {"r": 22})
    finished(client, workflow_id)
    done = client.workflows.get_status(workflow_id, include_output=True, include_variables=True)
    assert status_of(done.status) == "COMPLETED"
    assert (done.output, done.variables) == ({"o": 22}, {"v1": 11})


def test_status_raw_keys(conductor: Any, client: Any) -> None:
    name, _, _ = register_ep(client)
    workflow_id = started(client, name, {"x": 1}, unique("cid"))
    try:
        body = raw(conductor).get(conductor.url + f"/workflow/{workflow_id}/status", timeout=10).json()
        assert sorted(body) == ["correlationId", "status", "workflowId"]
        no_cid = started(client, name, {"x": 1})
        body = raw(conductor).get(conductor.url + f"/workflow/{no_cid}/status", timeout=10).json()
        assert sorted(body) == ["status", "workflowId"]
        cleanup(client, no_cid)
        unknown = raw(conductor).get(conductor.url + "/workflow/%s/status" % unique("nope"), timeout=10)
        assert unknown.status_code == 404
    finally:
        cleanup(client, workflow_id)


# -- correlation ---------------------------------------------------------------------------------


def test_correlated_lookups(conductor: Any, client: Any) -> None:
    name, type_a, type_b = register_ep(client)
    correlation_id = unique("cid")
    first = started(client, name, {"x": 1}, correlation_id)
    complete(client, poll_one(client, type_a), {"r": 1})
    complete(client, poll_one(client, type_b), {"r": 2})
    finished(client, first)
    second = started(client, name, {"x": 2}, correlation_id)
    try:
        running = client.workflows.get_by_correlation_id(name, correlation_id)
        assert [(w.workflow_id, status_of(w.status), w.tasks) for w in running] == [(second, "RUNNING", [])]

        everything = client.workflows.get_by_correlation_id(
            name, correlation_id, include_closed=True, include_tasks=True)
        assert sorted((w.workflow_id, status_of(w.status)) for w in everything) == sorted(
            [(first, "COMPLETED"), (second, "RUNNING")])
        tasks = {w.workflow_id: [t.reference_task_name for t in w.tasks] for w in everything}
        assert tasks == {first: ["a", "sv", "b"], second: ["a"]}

        batch = client.workflows.get_by_correlation_ids(name, [correlation_id, "nope-" + correlation_id],
                                                        include_closed=True)
        assert sorted(batch) == sorted([correlation_id, "nope-" + correlation_id])
        assert sorted(w.workflow_id for w in batch[correlation_id]) == sorted([first, second])
        assert all(w.tasks == [] for w in batch[correlation_id])
        assert batch["nope-" + correlation_id] == []
        default = client.workflows.get_by_correlation_ids(name, [correlation_id])
        assert [w.workflow_id for w in default[correlation_id]] == [second]

        response = raw(conductor).post(conductor.url + f"/workflow/{name}/correlated/{correlation_id}", json={},
                                       timeout=10)
        assert response.status_code == 405
        assert response.json()["message"] == "Request method 'POST' is not supported"
    finally:
        cleanup(client, second)


# -- POST /workflow/execute/{name}/{version} ----------------------------------------------------


def test_execute_until_task_ref(client: Any) -> None:
    name, type_a, _ = register_ep(client)

    def work() -> None:
        complete(client, poll_one(client, type_a, timeout_s=10), {"r": 5})

    worker = threading.Thread(target=work)
    worker.start()
    began = time.monotonic()
    run = client.workflows.execute(StartWorkflowRequest(name=name, version=1, input={"x": 3}),
                                   wait_until_task_ref="a", wait_for_seconds=8, request_id="r1")
    took = time.monotonic() - began
    worker.join()
    assert run is not None
    try:
        assert took < 7
        assert (run.response_type, run.request_id, run.signal_timeout) == ("TARGET_WORKFLOW", "r1", False)
        assert run.target_workflow_id == run.workflow_id and run.status == run.target_workflow_status == "RUNNING"
        assert run.input == {"x": 3} and run.output == {}
        assert [(t.reference_task_name, status_of(t.status)) for t in run.tasks] == [
            ("a", "COMPLETED"), ("sv", "COMPLETED"), ("b", "SCHEDULED")]
        assert run.variables == {"v1": 5}
    finally:
        cleanup(client, run.workflow_id or "")


def test_execute_times_out_with_200(client: Any) -> None:
    name, _, _ = register_ep(client)
    began = time.monotonic()
    run = client.workflows.execute(StartWorkflowRequest(name=name, input={"x": 4}), wait_for_seconds=1)
    took = time.monotonic() - began
    assert run is not None
    try:
        assert 0.9 <= took < 5
        assert run.signal_timeout is True and run.status == "RUNNING"
        assert len(run.request_id or "") == 36  # a random UUID when none is given
        assert [(t.reference_task_name, status_of(t.status)) for t in run.tasks] == [("a", "SCHEDULED")]
    finally:
        cleanup(client, run.workflow_id or "")


def test_execute_fast_workflow_completes(conductor: Any, client: Any) -> None:
    name = unique("we_fast")
    client.metadata.register_workflow_def(WorkflowDef.from_json({
        "name": name, "version": 1, "schemaVersion": 2, "ownerEmail": OWNER,
        "tasks": [{"name": "inl", "taskReferenceName": "inl", "type": "INLINE",
                   "inputParameters": {"evaluatorType": "value-param", "expression": "v", "v": 7}}],
    }))
    response = raw(conductor).post(conductor.url + f"/workflow/execute/{name}/1", json={"name": name, "input": {}},
                                   timeout=15)
    assert response.status_code == 200
    body = response.json()
    assert sorted(body) == sorted([
        "createTime", "input", "output", "priority", "requestId", "responseType", "signalTimeout", "status",
        "targetWorkflowId", "targetWorkflowStatus", "tasks", "updateTime", "variables", "workflowId"])
    assert (body["status"], body["targetWorkflowStatus"], body["output"]) == ("COMPLETED", "COMPLETED", {"result": 7})
    assert body["signalTimeout"] is False


def test_execute_returns_when_a_wait_is_reached(client: Any) -> None:
    name = register_waits(client)
    run = client.workflows.execute(StartWorkflowRequest(name=name), wait_until_task_ref="w1", wait_for_seconds=5)
    assert run is not None
    try:
        assert run.signal_timeout is False and run.status == "RUNNING"
        assert [(t.reference_task_name, status_of(t.status)) for t in run.tasks] == [("w1", "IN_PROGRESS")]
    finally:
        cleanup(client, run.workflow_id or "")


# -- POST /workflow/test -------------------------------------------------------------------------


def test_test_endpoint_runs_with_mocks(client: Any) -> None:
    name, type_a, type_b = register_ep(client)
    mocks = {"a": [{"status": "COMPLETED", "output": {"r": "mocked"}}],
             "b": [{"status": "FAILED", "output": {"e": 1}}, {"status": "COMPLETED", "output": {"r": "m2"}}]}
    workflow = client.workflows.test(StartWorkflowRequest(name=name, version=1, input={"x": 9}), mocks)
    assert status_of(workflow.status) == "FAILED"  # b's retryCount is 0: its first mock fails the workflow
    b = by_ref(workflow, "b")
    assert workflow.reason_for_incompletion == f"Task {b.task_id} failed with status: FAILED and reason: 'null'"
    assert (workflow.variables, workflow.output) == ({"v1": "mocked"}, {"o": None})
    assert workflow.failed_reference_task_names == ["b"]
    assert [(t.reference_task_name, status_of(t.status), t.output_data) for t in workflow.tasks] == [
        ("a", "COMPLETED", {"r": "mocked"}), ("sv", "COMPLETED", {}), ("b", "FAILED", {"e": 1})]
    a = by_ref(workflow, "a")
    assert (a.start_time, a.executed, a.poll_count) == (0, True, 0)
    domain = workflow.task_to_domain.get("*")
    assert domain and len(domain) == 36  # a random domain: no worker gets the test's tasks
    assert (a.domain, b.domain) == (domain, domain)


def test_test_endpoint_stops_at_an_unmocked_task(client: Any) -> None:
    name, _, type_b = register_ep(client)
    workflow = client.workflows.test(StartWorkflowRequest(name=name, version=1, input={"x": 9}),
                                     {"a": [{"status": "COMPLETED", "output": {"r": "mocked"}}]})
    try:
        assert status_of(workflow.status) == "RUNNING"
        assert [(t.reference_task_name, status_of(t.status)) for t in workflow.tasks] == [
            ("a", "COMPLETED"), ("sv", "COMPLETED"), ("b", "SCHEDULED")]
        assert status_of(client.workflows.get(workflow.workflow_id).status) == "RUNNING"  # it stays in the store
    finally:
        cleanup(client, workflow.workflow_id)


# -- PUT /workflow/{id}/skiptask/{ref} -----------------------------------------------------------


def test_skiptask_of_a_future_task(conductor: Any, client: Any) -> None:
    name, type_a, _ = register_ep(client)
    workflow_id = started(client, name, {"x": 5})
    response = raw(conductor).put(conductor.url + f"/workflow/{workflow_id}/skiptask/b",
                                  json={"taskOutput": {"skipped": True}}, timeout=10)
    assert (response.status_code, response.text) == (200, "")
    complete(client, poll_one(client, type_a), {"r": 1})
    workflow = finished(client, workflow_id)
    assert status_of(workflow.status) == "COMPLETED"
    assert workflow.output == {"o": None}
    assert rows(workflow) == [("b", "SKIPPED", 0), ("a", "COMPLETED", 1), ("sv", "COMPLETED", 2)]
    skipped = workflow.tasks[0]
    assert (skipped.input_data, skipped.output_data) == ({}, {})  # the body is not read
    assert skipped.end_time > 0 and skipped.start_time == 0


def test_skiptask_of_a_scheduled_task_is_refused(conductor: Any, client: Any) -> None:
    name, _, _ = register_ep(client)
    workflow_id = started(client, name, {"x": 6})
    try:
        response = raw(conductor).put(conductor.url + f"/workflow/{workflow_id}/skiptask/a", timeout=10)
        assert response.status_code == expect_difference(conductor, "skiptask_refusal_status")
        assert response.json()["message"] == "The task referenced a has already been processed, cannot be skipped"
        with pytest.raises(APIError) as caught:
            client.workflows.skip_task(workflow_id, "a")
        assert caught.value.status_code == expect_difference(conductor, "skiptask_refusal_status")
        assert rows(client.workflows.get(workflow_id)) == [("a", "SCHEDULED", 1)]

        response = raw(conductor).put(conductor.url + f"/workflow/{workflow_id}/skiptask/zz", timeout=10)
        assert response.status_code == expect_difference(conductor, "skiptask_refusal_status")
        assert response.json()["message"] == (
            f"The task referenced by zz does not exist in the WorkflowDefinition {name}")
        client.workflows.terminate(workflow_id, "done")
        response = raw(conductor).put(conductor.url + f"/workflow/{workflow_id}/skiptask/b", timeout=10)
        assert response.status_code == expect_difference(conductor, "skiptask_refusal_status")
        assert response.json()["message"] == (
            f"The workflow {workflow_id} is not running so the task referenced by b cannot be skipped")
    finally:
        cleanup(client, workflow_id)


# -- POST /workflow/{id}/rerun -------------------------------------------------------------------


def test_rerun_from_a_task_and_from_the_start(conductor: Any, client: Any) -> None:
    name, type_a, type_b = register_ep(client)
    workflow_id = started(client, name, {"x": 7})
    complete(client, poll_one(client, type_a), {"r": 1})
    fail(client, poll_one(client, type_b), "no")
    failed = finished(client, workflow_id)
    assert status_of(failed.status) == "FAILED"
    old_b = by_ref(failed, "b")

    rerun_id = client.workflows.rerun(workflow_id, old_b.task_id, task_input={"new": 1}, workflow_input={"x": 70})
    assert rerun_id == workflow_id
    again = client.workflows.get(workflow_id)
    assert status_of(again.status) == "RUNNING"
    assert again.input == {"x": 70} and again.reason_for_incompletion is None
    assert rows(again) == [("a", "COMPLETED", 1), ("sv", "COMPLETED", 2), ("b", "SCHEDULED", 3)]
    b = by_ref(again, "b")
    assert b.task_id == old_b.task_id  # the same task, reset (not a new one)
    assert b.input_data == {"new": 1}  # as given, not resolved again
    assert b.start_time == 0 and b.end_time == 0 and b.output_data == {}

    polled = poll_one(client, type_b)
    assert polled.task_id == b.task_id
    complete(client, polled, {"r": "second"})
    done = finished(client, workflow_id)
    assert status_of(done.status) == "COMPLETED" and done.output == {"o": "second"}

    response = raw(conductor).post(conductor.url + f"/workflow/{workflow_id}/rerun",
                                   json={"reRunFromWorkflowId": workflow_id}, timeout=10)
    assert (response.status_code, response.text) == (200, workflow_id)
    assert response.headers["Content-Type"].startswith("text/plain")
    whole = client.workflows.get(workflow_id)
    assert status_of(whole.status) == "RUNNING"
    assert rows(whole) == [("a", "SCHEDULED", 1)]
    assert by_ref(whole, "a").input_data == {"x": 70}
    assert whole.output == {"o": "second"}  # kept until it completes again
    cleanup(client, workflow_id)


def test_rerun_refusals(conductor: Any, client: Any) -> None:
    name, _, _ = register_ep(client)
    workflow_id = started(client, name, {"x": 1})
    response = raw(conductor).post(conductor.url + f"/workflow/{workflow_id}/rerun", json={}, timeout=10)
    assert response.status_code == 409
    assert response.json()["message"] == (
        f"Workflow: {name}.1/{workflow_id}.RUNNING is not in terminal state, unable to rerun.")
    client.workflows.terminate(workflow_id, "done")
    response = raw(conductor).post(conductor.url + f"/workflow/{workflow_id}/rerun",
                                   json={"reRunFromTaskId": "no-such-task"}, timeout=10)
    assert response.status_code == 400
    assert response.json()["message"] == "Task no-such-task not found"


# -- POST /tasks/{workflowId}/{status}/signal[/sync] ------------------------------------------------


def test_signal_without_a_blocked_task(conductor: Any, client: Any) -> None:
    name, _, _ = register_ep(client)
    workflow_id = started(client, name, {"x": 8})
    try:
        response = raw(conductor).post(conductor.url + f"/tasks/{workflow_id}/COMPLETED/signal", json={"r": 1},
                                       timeout=10)
        assert (response.status_code, response.text) == (200, "")
        assert rows(client.workflows.get(workflow_id)) == [("a", "SCHEDULED", 1)]  # a SIMPLE is not signalable
        with pytest.raises(NotFoundError) as caught:
            client.tasks.signal_sync(workflow_id, "COMPLETED", {"r": 2})
        assert caught.value.server_message == f"Found no blocked task in workflow {workflow_id} to signal"
    finally:
        cleanup(client, workflow_id)


def test_signal_with_an_unknown_status_or_workflow(conductor: Any, client: Any) -> None:
    name = register_waits(client)
    workflow_id = started(client, name)
    try:
        wait_for_task(client, workflow_id, "w1")
        for suffix in ("signal", "signal/sync"):
            response = raw(conductor).post(conductor.url + f"/tasks/{workflow_id}/BOGUS/{suffix}", json={}, timeout=10)
            assert response.status_code == expect_difference(conductor, "unknown_task_status_in_path"), suffix
        response = raw(conductor).post(conductor.url + f"/tasks/{unique('nope')}/COMPLETED/signal", json={},
                                       timeout=10)
        assert response.status_code == 404
        # the update-by-reference-name route still takes the paths that are not signals
        response = raw(conductor).post(conductor.url + f"/tasks/{workflow_id}/w1/COMPLETED", json={"k": 1},
                                       timeout=10)
        assert response.status_code == 200 and response.text == by_ref(client.workflows.get(workflow_id), "w1").task_id
    finally:
        cleanup(client, workflow_id)


def test_signal_completes_the_waits_in_turn(client: Any) -> None:
    name = register_waits(client)
    workflow_id = started(client, name)
    wait_for_task(client, workflow_id, "w1")
    client.tasks.signal(workflow_id, "COMPLETED", {"r": "sig"})
    workflow = wait_for_task(client, workflow_id, "w2")
    assert [(t.reference_task_name, status_of(t.status), t.output_data) for t in workflow.tasks] == [
        ("w1", "COMPLETED", {"r": "sig"}), ("w2", "IN_PROGRESS", {})]

    run = client.tasks.signal_sync(workflow_id, "COMPLETED", {"r": "sig2"})
    assert run is not None
    assert (run.response_type, run.status, run.target_workflow_status) == ("TARGET_WORKFLOW", "COMPLETED", "COMPLETED")
    assert run.output == {"result": 1} and run.signal_timeout is False
    assert [(t.reference_task_name, status_of(t.status)) for t in run.tasks] == [
        ("w1", "COMPLETED"), ("w2", "COMPLETED"), ("inl", "COMPLETED")]


@pytest.mark.parametrize("strategy", ["TARGET_WORKFLOW", "BLOCKING_WORKFLOW", "BLOCKING_TASK", "BLOCKING_TASK_INPUT"])
def test_signal_sync_return_strategies(conductor: Any, client: Any, strategy: str) -> None:
    name = register_waits(client)
    workflow_id = started(client, name)
    wait_for_task(client, workflow_id, "w1")
    response = raw(conductor).post(conductor.url + f"/tasks/{workflow_id}/COMPLETED/signal/sync",
                                   params={"returnStrategy": strategy}, json={"r": strategy}, timeout=15)
    assert response.status_code == 200, response.text
    body = response.json()
    try:
        assert body["responseType"] == strategy
        assert body["targetWorkflowId"] == body["workflowId"] == workflow_id
        assert body["targetWorkflowStatus"] == "RUNNING" and body["signalTimeout"] is False
        if strategy.startswith("BLOCKING_TASK"):
            assert sorted(body) == sorted([
                "createTime", "input", "output", "priority", "referenceTaskName", "requestId", "responseType",
                "retryCount", "signalTimeout", "status", "targetWorkflowId", "targetWorkflowStatus", "taskDefName",
                "taskId", "taskType", "updateTime", "workflowId", "workflowType"])
            assert (body["referenceTaskName"], body["taskType"], body["status"]) == ("w2", "WAIT", "IN_PROGRESS")
            assert (body["taskDefName"], body["workflowType"], body["input"], body["output"]) == ("w2", name, {}, {})
        else:
            assert "tasks" in body and body["status"] == "RUNNING"
            assert [(t["referenceTaskName"], t["status"], t["outputData"]) for t in body["tasks"]] == [
                ("w1", "COMPLETED", {"r": strategy}), ("w2", "IN_PROGRESS", {})]
    finally:
        cleanup(client, workflow_id)


def test_signal_sync_with_a_task_strategy_once_nothing_blocks(conductor: Any, client: Any) -> None:
    name = register_waits(client)
    workflow_id = started(client, name)
    wait_for_task(client, workflow_id, "w1")
    client.tasks.signal(workflow_id, "COMPLETED", {})
    wait_for_task(client, workflow_id, "w2")
    response = raw(conductor).post(conductor.url + f"/tasks/{workflow_id}/COMPLETED/signal/sync",
                                   params={"returnStrategy": "BLOCKING_TASK"}, json={}, timeout=15)
    assert response.status_code == expect_difference(conductor, "signal_sync_task_strategy_without_blocking_task")
    if response.status_code == 200:
        assert response.text == ""
    assert status_of(finished(client, workflow_id).status) == "COMPLETED"


def test_signal_reaches_a_wait_in_a_sub_workflow(client: Any) -> None:
    child = register_waits(client)
    parent = unique("we_parent")
    client.metadata.register_workflow_def(WorkflowDef.from_json({
        "name": parent, "version": 1, "schemaVersion": 2, "ownerEmail": OWNER,
        "tasks": [{"name": "sub", "taskReferenceName": "sub", "type": "SUB_WORKFLOW",
                   "subWorkflowParam": {"name": child, "version": 1}}],
    }))
    workflow_id = started(client, parent)
    sub = by_ref(wait_for_task(client, workflow_id, "sub"), "sub")
    child_id = sub.sub_workflow_id or sub.output_data.get("subWorkflowId")
    wait_for_task(client, child_id, "w1")

    run = client.tasks.signal_sync(workflow_id, "COMPLETED", {"r": "p"})
    assert run is not None
    assert (run.workflow_id, run.target_workflow_id, run.status) == (workflow_id, workflow_id, "RUNNING")
    assert [(t.reference_task_name, status_of(t.status)) for t in run.tasks] == [("sub", "IN_PROGRESS")]
    inner = client.workflows.get(child_id)
    assert [(t.reference_task_name, status_of(t.status)) for t in inner.tasks] == [
        ("w1", "COMPLETED"), ("w2", "IN_PROGRESS")]

    last = client.tasks.signal_sync(workflow_id, "COMPLETED", {"r": "p"}, return_strategy="BLOCKING_WORKFLOW")
    assert last is not None
    assert (last.response_type, last.workflow_id, last.status) == ("BLOCKING_WORKFLOW", workflow_id, "COMPLETED")
    assert last.output == {"result": 1, "subWorkflowId": child_id}
