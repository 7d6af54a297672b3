"""LocalConductor-only checks of search (its index on 100,000 workflows, what it answers where
conductor-oss answers 500) and of the task types it knows but does not run."""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any, Callable, Dict, List

import pytest
import requests
from lc_support import Api

from conductor_workers.server.engine import Engine
from conductor_workers.server.errors import BadRequest
from conductor_workers.testing import LocalConductor

ROWS = 100_000
TYPES = 100


def _wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def _workflow(index: int, now: int) -> Dict[str, Any]:
    name = "bulk_%d" % (index % TYPES)
    return {
        "workflowId": "wf-%06d-%s" % (index, uuid.uuid4().hex[:8]), "status": "COMPLETED" if index % 3 else "RUNNING",
        "createTime": now + index, "updateTime": now + index, "endTime": 0, "correlationId": "c%d" % index,
        "input": {"n": index, "word": "w%d" % index}, "output": {}, "priority": 0, "taskToDomain": {},
        "failedReferenceTaskNames": [], "failedTaskNames": [], "variables": {},
        "workflowDefinition": {"name": name, "version": 1, "tasks": [], "metadata": {}},
    }


def _median_seconds(call: Callable[[], Any], repeat: int = 15) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


@pytest.fixture(scope="module")
def bulk_engine():
    engine = Engine(None, 60.0)
    now = int(time.time() * 1000)
    with engine._tx() as store:  # 100,000 workflows straight into the store: starting them would take minutes
        for index in range(ROWS):
            store.put_workflow(_workflow(index, now), None)
    try:
        yield engine
    finally:
        engine.close()


def test_search_on_100k_workflows_uses_the_index(bulk_engine):
    """A search costs about what a get-by-id costs (a scan of 100k rows would cost hundreds of times more)."""
    engine = bulk_engine
    some_id = engine.search.workflows('workflowType="bulk_7"', "*", 0, 1, ["startTime:DESC"])["results"][0]["workflowId"]
    get = _median_seconds(lambda: engine.get_workflow(some_id, include_tasks=False))
    searches: Dict[str, Callable[[], Dict[str, Any]]] = {
        "by id": lambda: engine.search.workflows('workflowId="%s"' % some_id, "*", 0, 10, []),
        "by correlation id": lambda: engine.search.workflows("correlationId=c12345", "*", 0, 10, []),
        "by type, status, newest first": lambda: engine.search.workflows(
            'workflowType="bulk_7" AND status="RUNNING"', "*", 0, 10, ["startTime:DESC"]),
        "by status (33,334 hits), newest first": lambda: engine.search.workflows(
            "status=RUNNING", "*", 0, 10, ["startTime:DESC"]),
        "by type in a time range": lambda: engine.search.workflows(
            "workflowType IN (bulk_7,bulk_8) AND startTime>%d" % (int(time.time() * 1000) - 1),
            "*", 0, 10, ["startTime:ASC"]),
    }
    assert searches["by id"]()["totalHits"] == 1
    assert searches["by correlation id"]()["results"][0]["correlationId"] == "c12345"
    assert searches["by type, status, newest first"]()["totalHits"] == len([i for i in range(ROWS) if i % TYPES == 7 and i % 3 == 0])
    ratios = {what: _median_seconds(search) / get for what, search in searches.items()}
    broad = _median_seconds(searches.pop("by status (33,334 hits), newest first")) / get
    scan = _median_seconds(lambda: engine.search.workflows(None, "w12345", 0, 10, []), repeat=3) / get
    print("search time / get-by-id time on %d workflows: %s; free text (reads every row) %.0f" % (
        ROWS, ", ".join("%s %.1f" % item for item in ratios.items()), scan))
    assert max(ratios[what] for what in searches) < 40, ratios  # an index lookup: a few reads
    assert broad < scan / 5, (broad, scan)  # counting 33k index entries, far from reading every row


def test_search_by_a_bad_time_is_a_400_not_a_500():
    with LocalConductor() as server:
        response = requests.get(server.url + "/workflow/search", params={"query": "startTime>yesterday"}, timeout=10)
    assert response.status_code == 400
    assert "startTime" in response.json()["message"]


def test_negative_size_or_start_is_refused(bulk_engine):
    for start, size in ((0, -1), (-1, 10)):
        with pytest.raises(BadRequest):
            bulk_engine.search.workflows(None, "*", start, size, [])


def test_task_search_by_workflow_id(server, api):
    """conductor-oss's SQLite index has no workflow id column for tasks (it answers 500); LocalConductor filters."""
    name, task_type = "wf_" + uuid.uuid4().hex[:8], "t_" + uuid.uuid4().hex[:8]
    api.task_def(task_type)
    api.workflow_def(name, [{"name": task_type, "taskReferenceName": "a", "type": "SIMPLE"}])
    workflow_id = api.start(name, {})
    api.start(name, {})
    found = api.get("/tasks/search", params={"query": 'workflowId="%s"' % workflow_id}).json()
    assert found["totalHits"] == 1 and found["results"][0]["workflowId"] == workflow_id


def test_removed_workflow_is_not_found_by_search(server, api):
    name, task_type = "wf_" + uuid.uuid4().hex[:8], "t_" + uuid.uuid4().hex[:8]
    api.task_def(task_type)
    api.workflow_def(name, [{"name": task_type, "taskReferenceName": "a", "type": "SIMPLE"}])
    workflow_id = api.start(name, {})
    assert api.delete("/workflow/%s/remove" % workflow_id, params={"archiveWorkflow": "false"}).status_code == 200
    found = api.get("/workflow/search", params={"query": 'workflowType="%s"' % name}).json()
    assert found == {"totalHits": 0, "results": []}
    assert api.get("/tasks/search", params={"query": 'taskType="%s"' % task_type}).json()["totalHits"] == 0


def test_search_index_survives_a_restart(tmp_path):
    db = str(tmp_path / "lc.db")
    with LocalConductor(db_path=db) as first:
        api = Api(first.url)
        api.task_def("persisted_t")
        api.workflow_def("persisted_wf", [{"name": "persisted_t", "taskReferenceName": "a", "type": "SIMPLE"}])
        workflow_id = api.start("persisted_wf", {"k": "v"})
    with LocalConductor(db_path=db) as second:
        found = Api(second.url).get("/workflow/search", params={"query": "workflowType=persisted_wf"}).json()
    assert [item["workflowId"] for item in found["results"]] == [workflow_id]
    assert found["results"][0]["input"] == "{k=v}"


@pytest.mark.parametrize("kind", ["LLM_CHAT_COMPLETE", "JDBC", "LAMBDA", "EXCLUSIVE_JOIN"])
def test_a_system_type_local_conductor_does_not_run_fails_naming_it(server, api, kind):
    name = "wf_" + uuid.uuid4().hex[:8]
    api.workflow_def(name, [{"name": "sys", "taskReferenceName": "sys", "type": kind, "inputParameters": {"a": 1}}])
    workflow_id = api.start(name, {})
    workflow = _wait_for(lambda: (lambda wf: wf if wf["status"] != "RUNNING" else None)(
        api.get("/workflow/" + workflow_id).json()))
    assert workflow["status"] == "FAILED"
    [task] = workflow["tasks"]
    assert task["taskType"] == kind and task["status"] == "FAILED_WITH_TERMINAL_ERROR"
    assert kind in task["reasonForIncompletion"] and "LocalConductor" in task["reasonForIncompletion"]
    assert api.get("/tasks/queue/sizes", params={"taskType": kind}).json().get(kind, 0) == 0


def test_event_task_fails_naming_its_sink(server, api):
    name = "wf_" + uuid.uuid4().hex[:8]
    api.workflow_def(name, [{"name": "ev", "taskReferenceName": "ev", "type": "EVENT", "sink": "conductor:q"}])
    workflow_id = api.start(name, {})
    workflow: List[Any] = []
    _wait_for(lambda: workflow.append(api.get("/workflow/" + workflow_id).json()) or workflow[-1]["status"] != "RUNNING")
    task = workflow[-1]["tasks"][0]
    assert task["status"] == "FAILED_WITH_TERMINAL_ERROR"
    assert "EVENT" in task["reasonForIncompletion"]
