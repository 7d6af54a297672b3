"""Task and workflow definitions (``client.metadata``) on both servers."""

from __future__ import annotations

import pytest
import requests
from _helpers import OWNER, register_simple_workflow, task_def, unique
from differences import expect_difference

from conductor_workers import APIError, ConflictError, NotFoundError
from conductor_workers.models import WorkflowDef


def _workflow_def(name: str, task_name: str, version: int = 1, description: str = "") -> WorkflowDef:
    return WorkflowDef.from_json(
        {
            "name": name,
            "version": version,
            "description": description or f"v{version}",
            "schemaVersion": 2,
            "ownerEmail": OWNER,
            "tasks": [{"name": task_name, "taskReferenceName": "a", "type": "SIMPLE", "inputParameters": {}}],
        }
    )


def test_register_and_get_task_defs(client):
    names = [unique("cf_td"), unique("cf_td")]
    client.metadata.register_task_defs(
        [task_def(names[0], retryCount=2, description="first"), task_def(names[1])]
    )
    got = client.metadata.get_task_def(names[0])
    assert got.name == names[0]
    assert got.retry_count == 2
    assert got.description == "first"
    assert got.response_timeout_seconds == 300
    listed = {td.name for td in client.metadata.get_task_defs()}
    assert set(names) <= listed


def test_register_task_def_again_is_an_upsert(client):
    name = unique("cf_td")
    client.metadata.register_task_defs([task_def(name, description="one")])
    client.metadata.register_task_defs([task_def(name, description="two")])  # no 409 for task defs
    assert client.metadata.get_task_def(name).description == "two"


def test_update_and_unregister_task_def(client):
    name = unique("cf_td")
    client.metadata.register_task_defs([task_def(name, retryCount=1)])
    client.metadata.update_task_def(task_def(name, retryCount=5))
    assert client.metadata.get_task_def(name).retry_count == 5
    client.metadata.unregister_task_def(name)
    with pytest.raises(NotFoundError):
        client.metadata.get_task_def(name)


def test_update_unknown_task_def_is_not_found(client):
    with pytest.raises(NotFoundError):
        client.metadata.update_task_def(task_def(unique("cf_missing")))


def test_task_def_validation_error_carries_the_server_message(client):
    name = unique("cf_td")
    with pytest.raises(APIError) as info:
        client.metadata.register_task_defs([task_def(name, timeoutSeconds=60, responseTimeoutSeconds=120)])
    exc = info.value
    assert exc.status_code == 400
    assert exc.server_message  # the ErrorResponse's message
    assert exc.server_message in str(exc)
    assert "responseTimeoutSeconds" in str(exc)
    assert "must be less than timeoutSeconds" in str(exc)
    with pytest.raises(NotFoundError):
        client.metadata.get_task_def(name)


def test_register_workflow_def_conflict_and_overwrite(client):
    name, task_name = unique("cf_wfd"), unique("cf_t")
    client.metadata.register_workflow_def(_workflow_def(name, task_name, description="original"))
    with pytest.raises(ConflictError) as info:
        client.metadata.register_workflow_def(_workflow_def(name, task_name, description="again"))
    assert info.value.status_code == 409
    assert client.metadata.get_workflow_def(name).description == "original"
    replacement = _workflow_def(name, task_name, description="replaced")
    client.metadata.register_workflow_def(replacement, overwrite=True)
    got = client.metadata.get_workflow_def(name)
    assert got.description == "replaced"
    assert got.version == 1
    assert got.tasks[0].name == task_name
    assert got.tasks[0].task_reference_name == "a"


def test_get_workflow_def_latest_and_by_version(client):
    name, task_name = unique("cf_wfd"), unique("cf_t")
    client.metadata.register_workflow_def(_workflow_def(name, task_name, version=1))
    client.metadata.register_workflow_def(_workflow_def(name, task_name, version=2))
    assert client.metadata.get_workflow_def(name).version == 2
    assert client.metadata.get_workflow_def(name, version=1).description == "v1"
    assert client.metadata.get_workflow_def(name, version=2).description == "v2"
    with pytest.raises(NotFoundError):
        client.metadata.get_workflow_def(name, version=3)


def test_update_workflow_defs_bulk(client):
    task_name = unique("cf_t")
    existing, new = unique("cf_wfd"), unique("cf_wfd")
    client.metadata.register_workflow_def(_workflow_def(existing, task_name, description="before"))
    response = client.metadata.update_workflow_defs(
        [
            _workflow_def(existing, task_name, description="after"),
            _workflow_def(new, task_name, description="new"),
        ]
    )
    assert set(response["bulkSuccessfulResults"]) == {existing, new}
    assert not response.get("bulkErrorResults")
    assert client.metadata.get_workflow_def(existing).description == "after"
    assert client.metadata.get_workflow_def(new).description == "new"


def test_unregister_workflow_def(client):
    name, task_name = unique("cf_wfd"), unique("cf_t")
    client.metadata.register_workflow_def(_workflow_def(name, task_name, version=1))
    client.metadata.register_workflow_def(_workflow_def(name, task_name, version=2))
    client.metadata.unregister_workflow_def(name, 2)
    assert client.metadata.get_workflow_def(name).version == 1
    client.metadata.unregister_workflow_def(name, 1)
    with pytest.raises(NotFoundError):
        client.metadata.get_workflow_def(name)


def test_unknown_workflow_def_is_not_found(client):
    with pytest.raises(NotFoundError):
        client.metadata.get_workflow_def(unique("cf_missing"))


def test_register_simple_workflow_helper(client):
    registered = register_simple_workflow(client, ["a", "b"])
    wf_def = client.metadata.get_workflow_def(registered.workflow)
    assert [t.task_reference_name for t in wf_def.tasks] == ["a", "b"]
    assert [t.name for t in wf_def.tasks] == registered.task_types


@pytest.mark.parametrize("path", ["/metadata/taskdefs/{name}", "/metadata/workflow/{name}/1"])
def test_unregister_unknown_definition(conductor, path):
    response = requests.delete(conductor.url + path.format(name=unique("cf_missing")), timeout=20)
    assert response.status_code == expect_difference(conductor, "unknown_definition_delete_status")
