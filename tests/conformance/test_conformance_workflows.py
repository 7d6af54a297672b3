"""Starting, inspecting and steering workflows (``client.workflows`` and ``WorkflowExecutor``)."""

from __future__ import annotations

import pytest
from _helpers import (
    complete,
    fail,
    finished,
    poll_one,
    register_simple_workflow,
    status_of,
    tasks_by_ref,
    unique,
    wait_until,
)

from conductor_workers import APIError, ConflictError, NotFoundError, WorkflowExecutor
from conductor_workers.models import StartWorkflowRequest


def test_start_by_name_with_correlation_id_priority_and_input(client):
    reg = register_simple_workflow(client, ["a"])
    correlation = unique("corr")
    workflow_id = client.workflows.start_by_name(
        reg.workflow, {"x": 7, "y": [1, 2]}, correlation_id=correlation, priority=5
    )
    workflow = client.workflows.get(workflow_id)
    assert workflow.workflow_id == workflow_id
    assert status_of(workflow.status) == "RUNNING"
    assert workflow.workflow_name == reg.workflow
    assert workflow.workflow_version == 1
    assert workflow.correlation_id == correlation
    assert workflow.priority == 5
    assert workflow.input == {"x": 7, "y": [1, 2]}
    (task,) = workflow.tasks
    assert status_of(task.status) == "SCHEDULED"
    assert task.task_type == reg.task_types[0]
    assert task.reference_task_name == "a"
    assert task.input_data == {"x": 7}
    assert task.correlation_id == correlation
    assert task.workflow_priority == 5
    assert task.workflow_instance_id == workflow_id
    assert task.retry_count == 0 and task.poll_count == 0


def test_start_with_request_through_the_executor(client):
    reg = register_simple_workflow(client, ["a"])
    executor = WorkflowExecutor(client)
    correlation = unique("corr")
    request = StartWorkflowRequest(
        name=reg.workflow, version=1, input={"x": "hi"}, correlation_id=correlation, priority=3
    )
    workflow_id = executor.start_workflow(request)
    workflow = executor.get_workflow(workflow_id)
    assert workflow.correlation_id == correlation
    assert workflow.priority == 3
    assert workflow.input == {"x": "hi"}
    polled = poll_one(client, reg.task_types[0])
    assert polled.workflow_instance_id == workflow_id
    assert polled.input_data == {"x": "hi"}
    executor.update_task(polled.task_id, workflow_id, "COMPLETED", {"done": True})
    done = executor.wait_for_workflow(workflow_id, timeout=10)
    assert status_of(done.status) == "COMPLETED"
    assert done.output == {"done": True}


def test_start_by_name_through_the_executor(client):
    reg = register_simple_workflow(client, ["a"])
    executor = WorkflowExecutor(client)
    workflow_id = executor.start_workflow(reg.workflow, {"x": 1}, version=1, correlation_id="c-1")
    assert executor.get_workflow(workflow_id).correlation_id == "c-1"


def test_input_parameters_resolution(client):
    reg = register_simple_workflow(
        client,
        ["a", "b"],
        input_parameters={
            "a": {
                "x": "${workflow.input.x}",
                "nested": {"list": ["${workflow.input.x}", "const"], "text": "hello ${workflow.input.name}"},
                "missing": "${workflow.input.nope}",
            },
            "b": {
                "y": "${a.output.y}",
                "deep": "${a.output.obj.inner}",
                "second": "${a.output.arr[1]}",
                "nested": {"from_input": "${a.input.x}", "whole": "${a.output.obj}"},
                "wf": "${workflow.input.name}",
            },
        },
    )
    workflow_id = client.workflows.start_by_name(reg.workflow, {"x": 42, "name": "Ada"})
    task_a = poll_one(client, reg.task_type("a"))
    assert task_a.input_data["x"] == 42
    assert task_a.input_data["nested"] == {"list": [42, "const"], "text": "hello Ada"}
    assert task_a.input_data.get("missing") is None
    complete(client, task_a, {"y": "why", "obj": {"inner": [1, {"k": "v"}]}, "arr": ["zero", "one"]})
    task_b = poll_one(client, reg.task_type("b"))
    assert task_b.workflow_instance_id == workflow_id
    assert task_b.input_data == {
        "y": "why",
        "deep": [1, {"k": "v"}],
        "second": "one",
        "nested": {"from_input": 42, "whole": {"inner": [1, {"k": "v"}]}},
        "wf": "Ada",
    }


def test_get_without_tasks(client):
    reg = register_simple_workflow(client, ["a"])
    workflow_id = client.workflows.start_by_name(reg.workflow, {})
    assert client.workflows.get(workflow_id, include_tasks=False).tasks == []
    assert len(client.workflows.get(workflow_id, include_tasks=True).tasks) == 1


def test_output_from_output_parameters(client):
    reg = register_simple_workflow(
        client,
        ["a", "b"],
        output_parameters={"first": "${a.output.v}", "second": "${b.output.v}", "k": "const"},
    )
    workflow_id = client.workflows.start_by_name(reg.workflow, {"x": 1})
    complete(client, poll_one(client, reg.task_type("a")), {"v": 1, "ignored": True})
    complete(client, poll_one(client, reg.task_type("b")), {"v": 2})
    workflow = finished(client, workflow_id)
    assert status_of(workflow.status) == "COMPLETED"
    assert workflow.output == {"first": 1, "second": 2, "k": "const"}
    assert workflow.end_time > 0


def test_output_is_the_last_tasks_output_without_output_parameters(client):
    reg = register_simple_workflow(client, ["a", "b"])
    workflow_id = client.workflows.start_by_name(reg.workflow, {"x": 1})
    complete(client, poll_one(client, reg.task_type("a")), {"from": "a"})
    complete(client, poll_one(client, reg.task_type("b")), {"from": "b", "n": [1, 2]})
    workflow = finished(client, workflow_id)
    assert status_of(workflow.status) == "COMPLETED"
    assert workflow.output == {"from": "b", "n": [1, 2]}


def test_running_lists_running_workflows_of_a_version(client):
    reg = register_simple_workflow(client, ["a"])
    first = client.workflows.start_by_name(reg.workflow, {})
    second = client.workflows.start_by_name(reg.workflow, {})
    assert set(client.workflows.running(reg.workflow, version=1)) == {first, second}
    # conductor-oss 3.32 (SQLite store) ignores `version` here: every running execution of the name.
    assert set(client.workflows.running(reg.workflow, version=2)) == {first, second}
    client.workflows.terminate(first, "done")
    wait_until(lambda: client.workflows.running(reg.workflow, version=1) == [second], timeout=10,
               message="terminated workflow leaves running()")


def test_terminate_running_workflow_cancels_its_pending_task(client):
    reg = register_simple_workflow(client, ["a", "b"])
    workflow_id = client.workflows.start_by_name(reg.workflow, {})
    polled = poll_one(client, reg.task_type("a"))
    WorkflowExecutor(client).terminate(workflow_id, "stop it")
    workflow = client.workflows.get(workflow_id)
    assert status_of(workflow.status) == "TERMINATED"
    assert "stop it" in (workflow.reason_for_incompletion or "")
    assert workflow.end_time > 0
    (task,) = workflow.tasks
    assert task.task_id == polled.task_id
    assert status_of(task.status) == "CANCELED"
    assert status_of(client.tasks.get_task(polled.task_id).status) == "CANCELED"
    # terminating again is a no-op
    client.workflows.terminate(workflow_id, "again")
    assert status_of(client.workflows.get(workflow_id).status) == "TERMINATED"


def test_terminate_completed_workflow_is_a_conflict(client):
    reg = register_simple_workflow(client, ["a"])
    workflow_id = client.workflows.start_by_name(reg.workflow, {})
    complete(client, poll_one(client, reg.task_type("a")))
    finished(client, workflow_id)
    with pytest.raises(ConflictError) as info:
        client.workflows.terminate(workflow_id, "too late")
    assert info.value.status_code == 409
    assert status_of(client.workflows.get(workflow_id).status) == "COMPLETED"


def test_pause_and_resume(client):
    reg = register_simple_workflow(client, ["a", "b"])
    executor = WorkflowExecutor(client)
    workflow_id = client.workflows.start_by_name(reg.workflow, {})
    task_a = poll_one(client, reg.task_type("a"))
    executor.pause(workflow_id)
    assert status_of(client.workflows.get(workflow_id).status) == "PAUSED"
    complete(client, task_a, {"v": 1})
    paused = client.workflows.get(workflow_id)
    assert status_of(paused.status) == "PAUSED"
    assert status_of(paused.task_by_ref("a").status) == "COMPLETED"
    assert paused.task_by_ref("b") is None  # nothing is scheduled while paused
    executor.resume(workflow_id)
    task_b = poll_one(client, reg.task_type("b"))
    assert task_b.workflow_instance_id == workflow_id
    assert status_of(client.workflows.get(workflow_id).status) == "RUNNING"
    complete(client, task_b)
    assert status_of(executor.wait_for_workflow(workflow_id, timeout=10).status) == "COMPLETED"


def test_retry_failed_workflow(client):
    reg = register_simple_workflow(client, ["a", "b"])
    executor = WorkflowExecutor(client)
    workflow_id = client.workflows.start_by_name(reg.workflow, {"x": 1})
    complete(client, poll_one(client, reg.task_type("a")), {"v": 1})
    failed = poll_one(client, reg.task_type("b"))
    fail(client, failed, "broken")
    assert status_of(executor.wait_for_workflow(workflow_id, timeout=10).status) == "FAILED"
    executor.retry(workflow_id)
    workflow = client.workflows.get(workflow_id)
    assert status_of(workflow.status) == "RUNNING"
    retried = poll_one(client, reg.task_type("b"))
    assert retried.task_id != failed.task_id
    assert retried.reference_task_name == "b"
    assert retried.workflow_instance_id == workflow_id
    complete(client, retried, {"v": 2})
    done = executor.wait_for_workflow(workflow_id, timeout=10)
    assert status_of(done.status) == "COMPLETED"
    assert [status_of(t.status) for t in tasks_by_ref(done, "a")] == ["COMPLETED"]
    assert status_of(tasks_by_ref(done, "b")[-1].status) == "COMPLETED"


def test_restart_completed_workflow(client):
    reg = register_simple_workflow(client, ["a"])
    executor = WorkflowExecutor(client)
    workflow_id = client.workflows.start_by_name(reg.workflow, {"x": 3})
    first = poll_one(client, reg.task_type("a"))
    complete(client, first, {"run": 1})
    assert status_of(executor.wait_for_workflow(workflow_id, timeout=10).status) == "COMPLETED"
    executor.restart(workflow_id)
    restarted = client.workflows.get(workflow_id)
    assert status_of(restarted.status) == "RUNNING"
    again = poll_one(client, reg.task_type("a"))
    assert again.workflow_instance_id == workflow_id
    assert again.task_id != first.task_id
    assert again.input_data == {"x": 3}
    complete(client, again, {"run": 2})
    done = executor.wait_for_workflow(workflow_id, timeout=10)
    assert status_of(done.status) == "COMPLETED"
    assert done.output == {"run": 2}


def test_remove_workflow(client):
    reg = register_simple_workflow(client, ["a"])
    workflow_id = client.workflows.start_by_name(reg.workflow, {})
    client.workflows.terminate(workflow_id, "bye")
    client.workflows.remove(workflow_id)
    with pytest.raises(NotFoundError):
        client.workflows.get(workflow_id)


def test_remove_running_workflow_with_archive_is_rejected(client):
    reg = register_simple_workflow(client, ["a"])
    workflow_id = client.workflows.start_by_name(reg.workflow, {})
    with pytest.raises(APIError) as info:
        client.workflows.remove(workflow_id, archive=True)
    assert info.value.status_code == 400
    assert status_of(client.workflows.get(workflow_id).status) == "RUNNING"
