"""Polling and updating tasks (``client.tasks`` and ``WorkflowExecutor``)."""

from __future__ import annotations

import time

import attrs
import pytest
from _helpers import (
    complete,
    fail,
    finished,
    poll_none,
    poll_one,
    register_simple_workflow,
    status_of,
    tasks_by_ref,
    unique,
    wait_until,
)
from differences import expect_difference

from conductor_workers import NotFoundError, WorkflowExecutor
from conductor_workers.models import StartWorkflowRequest, TaskResult


def _queued(client, task_type, n=1):
    """Wait until ``n`` tasks of ``task_type`` are queued (pollable)."""
    wait_until(lambda: client.tasks.queue_sizes([task_type]).get(task_type, 0) >= n, timeout=10,
               message=f"{n} {task_type} queued")


# -- polling -----------------------------------------------------------------------------------


def test_poll_empty_queue(client):
    task_type = unique("cf_empty")
    assert client.tasks.poll(task_type) is None
    assert client.tasks.batch_poll(task_type, count=5, timeout_ms=0) == []


def test_single_poll_returns_the_task_in_progress(client):
    reg = register_simple_workflow(client, ["a"])
    workflow_id = client.workflows.start_by_name(reg.workflow, {"x": 5})
    task = wait_until(lambda: client.tasks.poll(reg.task_types[0], worker_id="single-1"), timeout=10,
                      message="single poll")
    assert task.workflow_instance_id == workflow_id
    assert status_of(task.status) == "IN_PROGRESS"
    assert task.poll_count == 1
    assert task.start_time > 0
    assert task.worker_id == "single-1"
    assert task.input_data == {"x": 5}
    assert client.tasks.poll(reg.task_types[0]) is None  # handed out once


def test_batch_poll_returns_several(client):
    reg = register_simple_workflow(client, ["a"])
    ids = {client.workflows.start_by_name(reg.workflow, {"x": i}) for i in range(3)}
    _queued(client, reg.task_types[0], 3)
    tasks = client.tasks.batch_poll(reg.task_types[0], count=3, timeout_ms=1000, worker_id="batch")
    assert len(tasks) == 3
    assert {t.workflow_instance_id for t in tasks} == ids
    assert len({t.task_id for t in tasks}) == 3
    assert all(status_of(t.status) == "IN_PROGRESS" for t in tasks)


def test_long_poll_returns_fewer_than_count_at_the_timeout(client):
    reg = register_simple_workflow(client, ["a"])
    workflow_id = client.workflows.start_by_name(reg.workflow, {})
    _queued(client, reg.task_types[0])
    started = time.monotonic()
    tasks = client.tasks.batch_poll(reg.task_types[0], count=2, timeout_ms=1000)
    elapsed = time.monotonic() - started
    assert [t.workflow_instance_id for t in tasks] == [workflow_id]
    assert elapsed <= 1.5


def test_empty_long_poll_waits_for_the_timeout(client):
    started = time.monotonic()
    assert client.tasks.batch_poll(unique("cf_empty"), count=1, timeout_ms=500) == []
    assert time.monotonic() - started >= 0.4


def test_long_poll_gets_a_task_queued_while_waiting(client, conductor):
    import threading

    reg = register_simple_workflow(client, ["a"])
    timer = threading.Timer(0.3, lambda: client.workflows.start_by_name(reg.workflow, {}))
    started = time.monotonic()
    timer.start()
    try:
        tasks = client.tasks.batch_poll(reg.task_types[0], count=1, timeout_ms=3000)
    finally:
        timer.join()
    assert len(tasks) == 1
    assert time.monotonic() - started <= 0.3 + expect_difference(conductor, "long_poll_wakeup")


def test_domain_isolation(client):
    reg = register_simple_workflow(client, ["a"])
    task_type = reg.task_types[0]
    domain = unique("dom")
    request = StartWorkflowRequest(name=reg.workflow, input={"x": 1}, task_to_domain={task_type: domain})
    workflow_id = client.workflows.start(request)
    assert client.workflows.get(workflow_id).task_to_domain == {task_type: domain}
    poll_none(client, task_type, timeout_ms=300)  # no domain: not seen
    poll_none(client, task_type, timeout_ms=100, domain=unique("other"))
    task = poll_one(client, task_type, domain=domain)
    assert task.workflow_instance_id == workflow_id
    assert task.domain == domain


def test_worker_id_in_task_and_poll_data(client):
    reg = register_simple_workflow(client, ["a"])
    task_type = reg.task_types[0]
    client.workflows.start_by_name(reg.workflow, {})
    task = poll_one(client, task_type, worker_id="worker-77")
    assert task.worker_id == "worker-77"
    assert client.tasks.get_task(task.task_id).worker_id == "worker-77"
    poll_data = wait_until(
        lambda: [p for p in client.tasks.poll_data(task_type) if p.worker_id == "worker-77"],
        timeout=10,
        message="poll data recorded",
    )
    assert poll_data[0].queue_name == task_type
    assert poll_data[0].last_poll_time > 0


# -- updates -----------------------------------------------------------------------------------


def test_completed_schedules_next_then_completes_workflow(client):
    reg = register_simple_workflow(client, ["a", "b"], output_parameters={"result": "${b.output.r}"})
    workflow_id = client.workflows.start_by_name(reg.workflow, {})
    task_a = poll_one(client, reg.task_type("a"))
    assert complete(client, task_a, {"r": 1}) == task_a.task_id
    workflow = client.workflows.get(workflow_id)
    assert status_of(workflow.status) == "RUNNING"
    assert status_of(workflow.task_by_ref("a").status) == "COMPLETED"
    assert workflow.task_by_ref("a").output_data == {"r": 1}
    assert workflow.task_by_ref("a").end_time > 0
    assert status_of(workflow.task_by_ref("b").status) == "SCHEDULED"
    task_b = poll_one(client, reg.task_type("b"))
    complete(client, task_b, {"r": 2})
    workflow = finished(client, workflow_id)
    assert status_of(workflow.status) == "COMPLETED"
    assert workflow.output == {"result": 2}


@pytest.mark.parametrize("delay", [0, 1])
def test_failed_is_retried_with_a_new_task(client, delay):
    reg = register_simple_workflow(client, ["a"], {"retryCount": 1, "retryDelaySeconds": delay})
    workflow_id = client.workflows.start_by_name(reg.workflow, {"x": 9})
    first = poll_one(client, reg.task_types[0])
    fail(client, first, "flaky")
    second = poll_one(client, reg.task_types[0], timeout_s=delay + 10)
    assert second.task_id != first.task_id
    assert second.retried_task_id == first.task_id
    assert second.retry_count == 1
    assert second.input_data == {"x": 9}
    workflow = client.workflows.get(workflow_id)
    assert status_of(workflow.status) == "RUNNING"
    old, new = tasks_by_ref(workflow, "a")
    assert status_of(old.status) == "FAILED" and old.retried
    assert old.reason_for_incompletion == "flaky"
    assert new.task_id == second.task_id


def test_failed_without_retries_fails_the_workflow(client):
    reg = register_simple_workflow(client, ["a", "b"], {"retryCount": 0})
    workflow_id = client.workflows.start_by_name(reg.workflow, {})
    task = poll_one(client, reg.task_type("a"))
    fail(client, task, "disk full")
    workflow = finished(client, workflow_id)
    assert status_of(workflow.status) == "FAILED"
    assert "disk full" in workflow.reason_for_incompletion
    assert workflow.failed_reference_task_names == ["a"]
    assert workflow.failed_task_names == [reg.task_type("a")]
    assert [t.reference_task_name for t in workflow.tasks] == ["a"]
    assert status_of(workflow.tasks[0].status) == "FAILED"


def test_failed_with_terminal_error_is_not_retried(client):
    reg = register_simple_workflow(client, ["a"], {"retryCount": 2})
    workflow_id = client.workflows.start_by_name(reg.workflow, {})
    task = poll_one(client, reg.task_types[0])
    fail(client, task, "fatal", terminal=True)
    workflow = finished(client, workflow_id)
    assert status_of(workflow.status) == "FAILED"
    assert "fatal" in workflow.reason_for_incompletion
    (only,) = workflow.tasks
    assert status_of(only.status) == "FAILED_WITH_TERMINAL_ERROR"
    poll_none(client, reg.task_types[0])


def test_in_progress_with_callback_is_handed_out_again_later(client):
    reg = register_simple_workflow(client, ["a"])
    workflow_id = client.workflows.start_by_name(reg.workflow, {})
    first = poll_one(client, reg.task_types[0])
    sent = time.monotonic()
    client.tasks.update_task(TaskResult.in_progress(1, {"step": 1}, task_id=first.task_id,
                                                    workflow_instance_id=workflow_id))
    stored = client.tasks.get_task(first.task_id)
    assert status_of(stored.status) == "SCHEDULED"
    assert stored.output_data == {"step": 1}
    assert stored.callback_after_seconds == 1
    poll_none(client, reg.task_types[0], timeout_ms=0)
    again = poll_one(client, reg.task_types[0], timeout_s=10)
    assert time.monotonic() - sent >= 0.8
    assert again.task_id == first.task_id
    assert again.poll_count == 2
    assert again.start_time == first.start_time
    assert status_of(again.status) == "IN_PROGRESS"


def test_update_v2_returns_the_next_task_of_the_same_type(client):
    reg = register_simple_workflow(client, ["a"])
    task_type = reg.task_types[0]

    def v2(task, result):
        return client.tasks.update_task_v2(attrs.evolve(result, task_id=task.task_id,
                                                        workflow_instance_id=task.workflow_instance_id,
                                                        worker_id="v2-worker"))

    ids = {client.workflows.start_by_name(reg.workflow, {"n": i}) for i in range(3)}
    first = poll_one(client, task_type, worker_id="v2-worker")
    _queued(client, task_type, 2)
    second = v2(first, TaskResult.complete({"ok": 1}))
    assert second is not None
    assert second.task_id != first.task_id
    assert status_of(second.status) == "IN_PROGRESS"
    assert second.worker_id == "v2-worker"
    assert status_of(client.tasks.get_task(first.task_id).status) == "COMPLETED"
    # an IN_PROGRESS update gets no next task (3.32+), even with one queued
    assert v2(second, TaskResult.in_progress(60)) is None
    third = v2(second, TaskResult.complete())  # completing the SCHEDULED task by id works too
    assert third is not None
    assert {first.workflow_instance_id, second.workflow_instance_id, third.workflow_instance_id} == ids
    assert v2(third, TaskResult.complete()) is None  # nothing left
    for workflow_id in ids:
        assert status_of(finished(client, workflow_id).status) == "COMPLETED"


def test_update_by_ref_name_merges_output_and_advances(client):
    reg = register_simple_workflow(client, ["a", "b"])
    executor = WorkflowExecutor(client)
    workflow_id = client.workflows.start_by_name(reg.workflow, {})
    task = poll_one(client, reg.task_type("a"))
    client.tasks.update_task(TaskResult.in_progress(60, {"kept": 1, "over": "old"}, task_id=task.task_id,
                                                    workflow_instance_id=workflow_id))
    task_id = executor.update_task_by_ref_name("a", workflow_id, "COMPLETED", {"over": "new", "added": True})
    assert task_id == task.task_id
    done = client.tasks.get_task(task.task_id)
    assert status_of(done.status) == "COMPLETED"
    assert done.output_data == {"kept": 1, "over": "new", "added": True}
    workflow = client.workflows.get(workflow_id)
    assert status_of(workflow.task_by_ref("b").status) == "SCHEDULED"


def test_update_by_ref_name_with_worker_id_low_level(client):
    reg = register_simple_workflow(client, ["a"])
    workflow_id = client.workflows.start_by_name(reg.workflow, {})
    task_id = client.tasks.update_task_by_ref_name(
        workflow_id=workflow_id, ref_name="a", status="COMPLETED", output={"v": 1}, worker_id="by-ref"
    )
    task = client.tasks.get_task(task_id)
    assert task.worker_id == "by-ref"
    assert task.output_data == {"v": 1}
    assert status_of(finished(client, workflow_id).status) == "COMPLETED"


def test_update_by_ref_name_sync_returns_the_workflow(client):
    reg = register_simple_workflow(client, ["a", "b"])
    executor = WorkflowExecutor(client)
    workflow_id = client.workflows.start_by_name(reg.workflow, {})
    workflow = executor.update_task_by_ref_name_sync("a", workflow_id, "COMPLETED", {"v": 1})
    assert workflow.workflow_id == workflow_id
    assert status_of(workflow.status) == "RUNNING"
    assert status_of(workflow.task_by_ref("a").status) == "COMPLETED"
    assert workflow.task_by_ref("a").output_data == {"v": 1}
    assert status_of(workflow.task_by_ref("b").status) == "SCHEDULED"
    workflow = executor.update_task_by_ref_name_sync("b", workflow_id, "COMPLETED", {"v": 2})
    assert status_of(workflow.status) == "COMPLETED"
    assert workflow.output == {"v": 2}


def test_update_by_ref_name_with_nothing_pending_is_not_found(client):
    reg = register_simple_workflow(client, ["a"])
    executor = WorkflowExecutor(client)
    workflow_id = client.workflows.start_by_name(reg.workflow, {})
    executor.update_task_by_ref_name("a", workflow_id, "COMPLETED", {})
    executor.wait_for_workflow(workflow_id, timeout=10)
    with pytest.raises(NotFoundError):
        executor.update_task_by_ref_name("a", workflow_id, "COMPLETED", {})
    with pytest.raises(NotFoundError):
        executor.update_task_by_ref_name("no_such_ref", workflow_id, "COMPLETED", {})
    with pytest.raises(NotFoundError):
        executor.update_task_by_ref_name_sync("a", workflow_id, "COMPLETED", {})


def test_get_task(client):
    reg = register_simple_workflow(client, ["a"])
    workflow_id = client.workflows.start_by_name(reg.workflow, {"x": "v"})
    scheduled = client.workflows.get(workflow_id).tasks[0]
    task = WorkflowExecutor(client).get_task(scheduled.task_id)
    assert task.task_id == scheduled.task_id
    assert task.workflow_instance_id == workflow_id
    assert status_of(task.status) == "SCHEDULED"
    assert task.task_def_name == reg.task_types[0]
    assert task.workflow_type == reg.workflow
    assert task.input_data == {"x": "v"}
    assert task.scheduled_time > 0


def test_task_logs(client):
    reg = register_simple_workflow(client, ["a"])
    client.workflows.start_by_name(reg.workflow, {})
    task = poll_one(client, reg.task_types[0])
    client.tasks.append_log(task.task_id, "first line")
    client.tasks.append_log(task.task_id, "second line")
    logs = wait_until(
        lambda: [logs for logs in [client.tasks.get_logs(task.task_id)] if len(logs) >= 2],
        timeout=10,
        message="two log lines",
    )[0]
    assert sorted(entry.log for entry in logs) == ["first line", "second line"]
    assert all(entry.task_id == task.task_id and entry.created_time for entry in logs)
    assert client.tasks.get_logs(unique("no-such-task")) == []


def test_late_update_to_a_terminated_workflows_task_is_ignored(client):
    reg = register_simple_workflow(client, ["a"])
    workflow_id = client.workflows.start_by_name(reg.workflow, {})
    task = poll_one(client, reg.task_types[0])
    client.workflows.terminate(workflow_id, "cancelled")
    answer = complete(client, task, {"late": True})
    assert answer == task.task_id
    stored = client.tasks.get_task(task.task_id)
    assert status_of(stored.status) == "CANCELED"
    assert stored.output_data.get("late") is None
    assert status_of(client.workflows.get(workflow_id).status) == "TERMINATED"
