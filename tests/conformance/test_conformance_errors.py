"""Error answers, as our client reports them (``conductor_workers.errors``)."""

from __future__ import annotations

import pytest
from _helpers import poll_one, register_simple_workflow, unique

from conductor_workers import APIError, NotFoundError
from conductor_workers.models import StartWorkflowRequest, TaskResult


def test_unknown_workflow_id(client):
    with pytest.raises(NotFoundError) as info:
        client.workflows.get(unique("no-such-workflow"))
    assert info.value.status_code == 404
    assert info.value.server_message


def test_start_unknown_workflow_name(client):
    name = unique("cf_missing")
    with pytest.raises(NotFoundError) as info:
        client.workflows.start_by_name(name, {})
    assert name in str(info.value)
    assert info.value.server_message == f"No such workflow found by name: {name}, version: null"
    with pytest.raises(NotFoundError):
        client.workflows.start(StartWorkflowRequest(name=name, input={}))


def test_start_unknown_version(client):
    reg = register_simple_workflow(client, ["a"])
    with pytest.raises(NotFoundError) as info:
        client.workflows.start_by_name(reg.workflow, {}, version=5)
    assert info.value.server_message == f"No such workflow found by name: {reg.workflow}, version: 5"


def test_unknown_task_id(client):
    with pytest.raises(NotFoundError) as info:
        client.tasks.get_task(unique("no-such-task"))
    assert info.value.status_code == 404


def test_batch_poll_timeout_above_5_seconds_is_rejected(client):
    with pytest.raises(APIError) as info:
        client.tasks.batch_poll(unique("cf_t"), count=1, timeout_ms=6000)
    assert info.value.status_code == 400
    assert "5 seconds" in str(info.value)


def test_update_unknown_task_id(client):
    reg = register_simple_workflow(client, ["a"])
    workflow_id = client.workflows.start_by_name(reg.workflow, {})
    missing = unique("no-such-task")
    with pytest.raises(NotFoundError) as info:
        client.tasks.update_task(TaskResult.complete(task_id=missing, workflow_instance_id=workflow_id))
    assert missing in str(info.value)


def test_update_with_unknown_workflow_id(client):
    reg = register_simple_workflow(client, ["a"])
    client.workflows.start_by_name(reg.workflow, {})
    task = poll_one(client, reg.task_types[0])
    missing = unique("no-such-workflow")
    with pytest.raises(NotFoundError) as info:
        client.tasks.update_task(TaskResult.complete(task_id=task.task_id, workflow_instance_id=missing))
    assert missing in str(info.value)


def test_update_without_ids_is_a_bad_request(client):
    with pytest.raises(APIError) as info:
        client.tasks.update_task(TaskResult.complete())
    assert info.value.status_code == 400
    assert info.value.validation_errors


def test_operations_on_unknown_workflows(client):
    missing = unique("no-such-workflow")
    for call in (client.workflows.terminate, client.workflows.pause, client.workflows.resume,
                 client.workflows.retry, client.workflows.restart):
        with pytest.raises(NotFoundError):
            call(missing)
