"""Smoke tests against the real conductor-oss server (see tests/real_server.py)."""

from __future__ import annotations

import time
import uuid
from typing import Any, Dict, List

import requests

TIMEOUT = 30


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def _register(url: str, task_name: str, workflow_name: str) -> None:
    resp = requests.post(
        f"{url}/metadata/taskdefs",
        json=[{"name": task_name, "retryCount": 0, "responseTimeoutSeconds": 60, "ownerEmail": "t@example.com"}],
        timeout=TIMEOUT,
    )
    assert resp.status_code == 200, resp.text
    workflow_def: Dict[str, Any] = {
        "name": workflow_name,
        "version": 1,
        "schemaVersion": 2,
        "ownerEmail": "t@example.com",
        "tasks": [
            {
                "name": task_name,
                "taskReferenceName": "only",
                "type": "SIMPLE",
                "inputParameters": {"x": "${workflow.input.x}"},
            }
        ],
    }
    resp = requests.post(f"{url}/metadata/workflow", json=workflow_def, timeout=TIMEOUT)
    assert resp.status_code == 200, resp.text


def _poll(url: str, task_name: str, deadline_s: float = 10.0) -> List[Dict[str, Any]]:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        resp = requests.get(
            f"{url}/tasks/poll/batch/{task_name}",
            params={"count": "1", "timeout": "1000", "workerid": "smoke"},
            timeout=TIMEOUT,
        )
        assert resp.status_code in (200, 204), resp.text
        tasks: List[Dict[str, Any]] = resp.json() if resp.status_code == 200 else []
        if tasks:
            return tasks
    return []


def test_health(real_server_url: str) -> None:
    base = real_server_url[: -len("/api")]
    resp = requests.get(f"{base}/health", timeout=TIMEOUT)
    assert resp.status_code == 200
    assert resp.json()["healthy"] is True


def test_register_definitions(real_server_url: str) -> None:
    task_name, workflow_name = _unique("smoke_task"), _unique("smoke_wf")
    _register(real_server_url, task_name, workflow_name)
    resp = requests.get(f"{real_server_url}/metadata/taskdefs/{task_name}", timeout=TIMEOUT)
    assert resp.status_code == 200 and resp.json()["name"] == task_name
    resp = requests.get(f"{real_server_url}/metadata/workflow/{workflow_name}", timeout=TIMEOUT)
    assert resp.status_code == 200 and resp.json()["tasks"][0]["name"] == task_name


def test_workflow_runs_to_completion(real_server_url: str) -> None:
    url = real_server_url
    task_name, workflow_name = _unique("smoke_task"), _unique("smoke_wf")
    _register(url, task_name, workflow_name)

    resp = requests.post(f"{url}/workflow/{workflow_name}", json={"x": 41}, timeout=TIMEOUT)
    assert resp.status_code == 200, resp.text
    workflow_id = resp.text

    tasks = _poll(url, task_name)
    assert len(tasks) == 1
    task = tasks[0]
    assert task["workflowInstanceId"] == workflow_id
    assert task["status"] == "IN_PROGRESS"
    assert task["inputData"] == {"x": 41}
    assert task["workerId"] == "smoke"

    result = {
        "workflowInstanceId": workflow_id,
        "taskId": task["taskId"],
        "status": "COMPLETED",
        "outputData": {"y": 42},
        "workerId": "smoke",
    }
    resp = requests.post(f"{url}/tasks", json=result, timeout=TIMEOUT)
    assert resp.status_code == 200, resp.text
    assert resp.text == task["taskId"]

    deadline = time.monotonic() + 10
    workflow: Dict[str, Any] = {}
    while time.monotonic() < deadline:
        workflow = requests.get(f"{url}/workflow/{workflow_id}", timeout=TIMEOUT).json()
        if workflow["status"] != "RUNNING":
            break
        time.sleep(0.1)
    assert workflow["status"] == "COMPLETED", workflow
    assert workflow["output"] == {"y": 42}
    assert workflow["tasks"][0]["status"] == "COMPLETED"


def test_empty_batch_poll(real_server_url: str) -> None:
    resp = requests.get(
        f"{real_server_url}/tasks/poll/batch/{_unique('nothing')}",
        params={"count": 1, "timeout": 0},
        timeout=TIMEOUT,
    )
    # 200 [] on 3.21.20+, 204 on older servers (the Java 17 fallback).
    assert (resp.status_code, resp.text if resp.status_code == 204 else resp.json()) in ((200, []), (204, ""))
