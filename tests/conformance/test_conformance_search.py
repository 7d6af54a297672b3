"""Workflow and task search (``/workflow/search``, ``/workflow/search-v2``, ``/tasks/search``,
``/tasks/search-v2``) on both servers.

The query language is the subset conductor-oss's SQLite index understands and the SDKs send:
``field=value``, ``field IN (a,b)``, ``field>ms`` / ``field<ms`` on the time fields, joined by
`` AND ``; ``freeText`` is ``*`` or a word looked for anywhere in the summary; ``sort`` is
``field:ASC|DESC``; ``start``/``size`` page. Indexing is synchronous on both servers, so a
workflow is found as soon as its start has answered and a task as soon as it has been polled.
"""

from __future__ import annotations

import re
import time
from typing import Any, Dict, List

import pytest
import requests
from _helpers import complete, poll_one, register_simple_workflow, unique

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _get(conductor: Any, path: str, **params: Any) -> requests.Response:
    return requests.get(conductor.url + path, params=params, timeout=20)


def _search(conductor: Any, path: str = "/workflow/search", **params: Any) -> Dict[str, Any]:
    params.setdefault("freeText", "*")
    response = _get(conductor, path, **params)
    assert response.status_code == 200, response.text
    return response.json()


def _ids(result: Dict[str, Any], key: str = "workflowId") -> List[str]:
    return [item[key] for item in result["results"]]


def test_search_by_workflow_id_answers_a_workflow_summary(conductor, client):
    reg = register_simple_workflow(client)
    workflow_id = client.workflows.start_by_name(reg.workflow, {"x": 1}, correlation_id="corr-1")
    found = _search(conductor, start=0, size=10, query=f'workflowId="{workflow_id}"')
    assert found["totalHits"] == 1
    [summary] = found["results"]
    assert {key: summary[key] for key in ("startTime", "updateTime")} == {
        "startTime": summary["startTime"], "updateTime": summary["updateTime"]}
    assert ISO_MS.match(summary.pop("startTime")) and ISO_MS.match(summary.pop("updateTime"))
    assert summary == {
        "workflowType": reg.workflow,
        "version": 1,
        "workflowId": workflow_id,
        "correlationId": "corr-1",
        "status": "RUNNING",
        "input": "{x=1}",
        "output": "{}",
        "executionTime": 0,
        "failedReferenceTaskNames": "",
        "priority": 0,
        "failedTaskNames": [],
        "taskToDomain": {},
        "parentWorkflowId": "",
        "classifier": "workflow",
        "inputSize": 5,
        "outputSize": 2,
    }


def test_search_by_type_status_in_sort_and_paging(conductor, client):
    reg = register_simple_workflow(client)
    ids = [client.workflows.start_by_name(reg.workflow, {"x": n}) for n in range(3)]
    task = poll_one(client, reg.task_type("a"))
    complete(client, task)
    done = task.workflow_instance_id
    assert _ids(_search(conductor, query=f'workflowType="{reg.workflow}" AND status="COMPLETED"')) == [done]
    query = f"workflowType IN ({reg.workflow}) AND status IN (RUNNING,COMPLETED)"
    every = _search(conductor, query=query, sort="workflowId:ASC")
    assert every["totalHits"] == 3 and _ids(every) == sorted(ids)
    descending = _search(conductor, query=query, sort="workflowId:DESC", start=1, size=1)
    assert descending["totalHits"] == 3 and _ids(descending) == [sorted(ids)[1]]
    running = _search(conductor, query=f'workflowType="{reg.workflow}" AND status="RUNNING"', sort="workflowId:ASC")
    assert _ids(running) == sorted(set(ids) - {done})


def test_search_by_correlation_id_time_range_and_free_text(conductor, client):
    reg = register_simple_workflow(client)
    word = unique("needle").lower()
    before = int(time.time() * 1000) - 1000
    wanted = client.workflows.start_by_name(reg.workflow, {"x": word}, correlation_id=word)
    other = client.workflows.start_by_name(reg.workflow, {"x": "hay"})
    assert _ids(_search(conductor, query=f"correlationId='{word}'")) == [wanted]
    in_range = _search(conductor, query=f'workflowType="{reg.workflow}" AND startTime>{before}', sort="workflowId:ASC")
    assert _ids(in_range) == sorted([wanted, other])
    assert _search(conductor, query=f'workflowType="{reg.workflow}" AND startTime<{before}')["totalHits"] == 0
    later = int(time.time() * 1000) + 60_000
    assert _search(conductor, query=f'workflowType="{reg.workflow}" AND updateTime<{later}')["totalHits"] == 2
    by_text = _search(conductor, freeText=word, query=f'workflowType="{reg.workflow}"')
    assert by_text["totalHits"] == 1 and _ids(by_text) == [wanted]


def test_search_v2_answers_whole_workflows_without_tasks(conductor, client):
    reg = register_simple_workflow(client)
    workflow_id = client.workflows.start_by_name(reg.workflow, {"x": 2})
    found = _search(conductor, "/workflow/search-v2", query=f'workflowId="{workflow_id}"')
    assert found["totalHits"] == 1
    [workflow] = found["results"]
    assert workflow["workflowId"] == workflow_id
    assert workflow["workflowName"] == reg.workflow and workflow["workflowVersion"] == 1
    assert workflow["status"] == "RUNNING" and workflow["input"] == {"x": 2}
    assert workflow["tasks"] == []
    assert workflow["workflowDefinition"]["name"] == reg.workflow


def test_client_search_works(conductor, client):
    reg = register_simple_workflow(client)
    workflow_id = client.workflows.start_by_name(reg.workflow, {})
    found = client.workflows.search(query=f'workflowId="{workflow_id}"', size=5)
    assert found["totalHits"] == 1
    assert found["results"][0]["workflowId"] == workflow_id


def test_search_with_nothing_found(conductor):
    found = _search(conductor, query=f'workflowId="{unique("none")}"')
    assert found == {"totalHits": 0, "results": []}


def test_task_search_answers_task_summaries(conductor, client):
    reg = register_simple_workflow(client)
    task_type = reg.task_type("a")
    workflow_id = client.workflows.start_by_name(reg.workflow, {"x": 3}, correlation_id="tc")
    task = poll_one(client, task_type)
    found = _search(conductor, "/tasks/search", query=f'taskType="{task_type}"')
    assert found["totalHits"] == 1
    [summary] = found["results"]
    for key in ("scheduledTime", "startTime", "updateTime"):
        assert ISO_MS.match(summary.pop(key)), key
    assert summary.pop("queueWaitTime") >= 0
    assert summary == {
        "workflowId": workflow_id,
        "workflowType": reg.workflow,
        "correlationId": "tc",
        "endTime": "1970-01-01T00:00:00.000Z",
        "status": "IN_PROGRESS",
        "executionTime": 0,
        "taskDefName": task_type,
        "taskType": task_type,
        "input": "{x=3}",
        "output": "{}",
        "taskId": task.task_id,
        "workflowPriority": 0,
    }
    complete(client, task, {"y": 1})
    done = _search(conductor, "/tasks/search", query=f'taskType="{task_type}" AND status="COMPLETED"')
    assert _ids(done, "taskId") == [task.task_id]
    assert done["results"][0]["output"] == "{y=1}"


def test_task_search_v2_answers_whole_tasks(conductor, client):
    reg = register_simple_workflow(client)
    task_type = reg.task_type("a")
    client.workflows.start_by_name(reg.workflow, {"x": 4})
    task = poll_one(client, task_type)
    found = _search(conductor, "/tasks/search-v2", query=f"taskDefName IN ({task_type})")
    assert found["totalHits"] == 1
    [whole] = found["results"]
    assert whole["taskId"] == task.task_id and whole["inputData"] == {"x": 4}
    assert whole["status"] == "IN_PROGRESS" and whole["referenceTaskName"] == "a"


def test_search_size_above_5000_is_refused(conductor):
    response = _get(conductor, "/workflow/search", size=5001, freeText="*")
    assert response.status_code == 400, response.text
    assert "Cannot return more than 5000 workflows. Please use pagination." in response.text


@pytest.mark.parametrize("path", ["/workflow/search", "/tasks/search"])
def test_search_query_that_is_not_a_condition_is_refused(conductor, path):
    response = _get(conductor, path, query="just words")
    assert response.status_code == 400, response.text
    assert response.json()["message"] == "Incorrectly formatted query string: just words"
