"""Retries with back-off, response timeouts and optional tasks."""

from __future__ import annotations

import time

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
    wait_until,
)
from differences import expect_difference

from conductor_workers.models import TaskResult

# Delay (s) of the 1st, 2nd and 3rd retry with retryDelaySeconds=1 (backoffScaleFactor=1).
BACKOFFS = {
    "FIXED": [1, 1, 1],
    "LINEAR_BACKOFF": [1, 2, 3],  # retryDelaySeconds * backoffScaleFactor * (retryCount + 1)
    "EXPONENTIAL_BACKOFF": [1, 2, 4],  # retryDelaySeconds * 2 ** retryCount
}


@pytest.mark.parametrize("logic", sorted(BACKOFFS))
def test_retry_delays_follow_the_retry_logic(client, logic):
    expected = BACKOFFS[logic]
    reg = register_simple_workflow(
        client, ["a"], {"retryCount": 3, "retryDelaySeconds": 1, "retryLogic": logic, "backoffScaleFactor": 1}
    )
    task_type = reg.task_types[0]
    workflow_id = client.workflows.start_by_name(reg.workflow, {})
    task = poll_one(client, task_type)
    for attempt, delay in enumerate(expected):
        failed_at = time.monotonic()
        before_ms = int(time.time() * 1000)
        client.tasks.update_task(TaskResult.failed(f"attempt {attempt}", task_id=task.task_id,
                                                   workflow_instance_id=workflow_id))
        retry = tasks_by_ref(client.workflows.get(workflow_id), "a")[-1]
        assert retry.retried_task_id == task.task_id
        assert retry.retry_count == attempt + 1
        assert status_of(retry.status) == "SCHEDULED"
        assert retry.start_delay_in_seconds == delay
        assert retry.callback_after_seconds == delay
        assert retry.scheduled_time >= before_ms - 1000  # scheduled now, due `delay` later
        if attempt == len(expected) - 1:
            break
        poll_none(client, task_type, timeout_ms=0)  # not yet due
        task = poll_one(client, task_type, timeout_s=delay + 10)
        assert task.task_id == retry.task_id
        assert time.monotonic() - failed_at >= delay - 0.25
    client.workflows.terminate(workflow_id, "enough")


def test_response_timeout_times_out_and_retries(client, conductor):
    reg = register_simple_workflow(client, ["a"], {"retryCount": 1, "retryDelaySeconds": 0,
                                                   "responseTimeoutSeconds": 2})
    workflow_id = client.workflows.start_by_name(reg.workflow, {"x": 1})
    first = poll_one(client, reg.task_types[0])
    limit = expect_difference(conductor, "response_timeout_detection")
    started = time.monotonic()
    timed_out = wait_until(
        lambda: status_of(client.tasks.get_task(first.task_id).status) == "TIMED_OUT",
        timeout=limit, interval=0.2, message="response timeout")
    assert timed_out
    assert time.monotonic() - started >= 1.5
    stale = client.tasks.get_task(first.task_id)
    assert "responseTimeout" in (stale.reason_for_incompletion or "")
    second = poll_one(client, reg.task_types[0], timeout_s=10)
    assert second.task_id != first.task_id
    assert second.retried_task_id == first.task_id
    assert second.retry_count == 1
    # the worker's late answer for the timed-out attempt is ignored
    assert client.tasks.update_task(TaskResult.complete(task_id=first.task_id,
                                                        workflow_instance_id=workflow_id)) == first.task_id
    assert status_of(client.tasks.get_task(first.task_id).status) == "TIMED_OUT"
    complete(client, second, {"ok": True})
    workflow = finished(client, workflow_id)
    assert status_of(workflow.status) == "COMPLETED"
    assert workflow.output == {"ok": True}


def test_extend_lease_keeps_the_task_alive(client, conductor):
    reg = register_simple_workflow(client, ["a"], {"retryCount": 0, "responseTimeoutSeconds": 2})
    workflow_id = client.workflows.start_by_name(reg.workflow, {})
    task = poll_one(client, reg.task_types[0])
    client.tasks.update_task(TaskResult(task_id=task.task_id, workflow_instance_id=workflow_id,
                                        status="IN_PROGRESS", extend_lease=True))
    stored = client.tasks.get_task(task.task_id)
    assert status_of(stored.status) == "IN_PROGRESS"  # extendLease changes nothing but the clock
    assert stored.update_time >= task.update_time


def test_optional_task_failure_completes_with_errors_and_continues(client):
    reg = register_simple_workflow(client, ["a", "b"], {"retryCount": 0}, optional=["a"])
    workflow_id = client.workflows.start_by_name(reg.workflow, {})
    task_a = poll_one(client, reg.task_type("a"))
    fail(client, task_a, "not needed")
    task_b = poll_one(client, reg.task_type("b"))
    workflow = client.workflows.get(workflow_id)
    assert status_of(workflow.status) == "RUNNING"
    assert status_of(workflow.task_by_ref("a").status) == "COMPLETED_WITH_ERRORS"
    complete(client, task_b, {"b": 1})
    workflow = finished(client, workflow_id)
    assert status_of(workflow.status) == "COMPLETED"
    assert workflow.output == {"b": 1}
