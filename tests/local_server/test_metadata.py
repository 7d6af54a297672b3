"""LocalConductor metadata API: task and workflow definitions, validation, health."""

from __future__ import annotations

from lc_support import simple


def test_health_on_both_paths(api):
    root = api.url[: -len("/api")]
    for url in (root + "/health", api.url + "/health"):
        response = api.session.get(url)
        assert response.status_code == 200
        assert response.json()["healthy"] is True


def test_task_def_upsert_get_update_delete(api):
    response = api.post("/metadata/taskdefs", json=[{"name": "a", "retryCount": 1}, {"name": "b"}])
    assert response.status_code == 200 and response.text == ""
    task_def = api.get("/metadata/taskdefs/a").json()
    assert task_def["retryCount"] == 1
    assert task_def["responseTimeoutSeconds"] == 3600 and task_def["retryLogic"] == "FIXED"
    assert task_def["timeoutPolicy"] == "TIME_OUT_WF" and task_def["retryDelaySeconds"] == 60
    # POST again is an upsert, not a conflict
    assert api.post("/metadata/taskdefs", json=[{"name": "a", "retryCount": 2}]).status_code == 200
    assert api.get("/metadata/taskdefs/a").json()["retryCount"] == 2
    assert api.put("/metadata/taskdefs", json={"name": "a", "retryCount": 5}).status_code == 200
    assert api.get("/metadata/taskdefs/a").json()["retryCount"] == 5
    assert sorted(d["name"] for d in api.get("/metadata/taskdefs").json()) == ["a", "b"]
    assert api.delete("/metadata/taskdefs/a").status_code == 200
    missing = api.get("/metadata/taskdefs/a")
    assert missing.status_code == 404
    assert set(missing.json()) >= {"status", "message", "instance", "retryable"}
    assert api.put("/metadata/taskdefs", json={"name": "zzz"}).status_code == 404


def test_task_def_validation(api):
    response = api.post("/metadata/taskdefs", json=[{"name": "t", "timeoutSeconds": 60}])
    assert response.status_code == 400
    body = response.json()
    assert body["message"] == "Validation failed, check below errors for detail."
    assert body["validationErrors"][0]["message"] == (
        "TaskDef: t responseTimeoutSeconds: 3600 must be less than timeoutSeconds: 60")
    response = api.post("/metadata/taskdefs", json=[{"description": "no name", "retryCount": -1}])
    messages = {error["message"] for error in response.json()["validationErrors"]}
    assert messages == {"TaskDef name cannot be null or empty", "TaskDef retryCount: 0 must be >= 0"}
    response = api.post("/metadata/taskdefs", json=[{"name": "t", "retryLogic": "SOMETIMES"}])
    assert response.status_code == 400 and "SOMETIMES" in response.json()["message"]
    response = api.post("/metadata/taskdefs", json=[{"name": "t", "retryCount": "three"}])
    assert response.status_code == 400 and "retryCount" in response.json()["message"]
    assert api.post("/metadata/taskdefs", json={"name": "not-a-list"}).status_code == 400
    assert api.post("/metadata/taskdefs", json=[]).status_code == 400


def test_workflow_def_create_conflict_overwrite_versions(api):
    definition = {"name": "wf", "version": 1, "tasks": [simple("t")]}
    assert api.post("/metadata/workflow", json=definition).status_code == 200
    conflict = api.post("/metadata/workflow", json=definition)
    assert conflict.status_code == 409 and "already exists" in conflict.json()["message"]
    definition["description"] = "new"
    assert api.post("/metadata/workflow", params={"overwrite": "true"}, json=definition).status_code == 200
    other = {"name": "other", "tasks": [simple("t")]}
    bulk = api.put("/metadata/workflow", json=[dict(definition, version=2), other])
    assert bulk.json() == {"bulkErrorResults": {}, "bulkSuccessfulResults": ["wf", "other"],
                           "message": "Bulk Request has been processed."}
    assert api.get("/metadata/workflow/wf").json()["version"] == 2
    latest_v1 = api.get("/metadata/workflow/wf", params={"version": 1}).json()
    assert latest_v1["description"] == "new" and latest_v1["schemaVersion"] == 2
    assert len(api.get("/metadata/workflow").json()) == 3
    assert api.delete("/metadata/workflow/wf/2").status_code == 200
    assert api.get("/metadata/workflow/wf").json()["version"] == 1
    missing = api.get("/metadata/workflow/nope")
    assert missing.status_code == 404
    assert missing.json()["message"] == "No such workflow found by name: nope, version: null"


def test_workflow_def_validation_and_unsupported_types(api):
    response = api.put("/metadata/workflow", json=[{"name": "w", "tasks": []}])
    assert response.status_code == 400
    assert response.json()["validationErrors"][0]["message"] == "WorkflowTask list cannot be empty"
    response = api.put("/metadata/workflow", json=[{"name": "w", "tasks": [{"name": "x"}]}])
    assert "taskReferenceName" in response.json()["validationErrors"][0]["message"]
    response = api.put("/metadata/workflow", json=[{"name": "w", "tasks": [simple("a"), simple("a")]}])
    assert "should be unique" in response.json()["validationErrors"][0]["message"]
    fork = {"name": "f", "taskReferenceName": "f", "type": "FORK_JOIN"}
    response = api.post("/metadata/workflow", json={"name": "w", "tasks": [fork]})
    assert response.status_code == 400
    assert "forkTasks should have atleast one task" in response.json()["validationErrors"][0]["message"]
    kafka = {"name": "k", "taskReferenceName": "k", "type": "KAFKA_PUBLISH",
             "inputParameters": {"kafka_request": {"topic": "t"}}}
    response = api.post("/metadata/workflow", json={"name": "w", "tasks": [kafka]})
    assert response.status_code == 200, response.text  # accepted as on conductor-oss; fails when reached
