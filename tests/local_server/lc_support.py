"""Helpers for the LocalConductor tests: a thin requests-based API wrapper and definition builders."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
import uuid
from typing import Any, Dict, List, Optional

import requests


class Api:
    """Raw HTTP calls against a LocalConductor (our client library is not used here)."""

    def __init__(self, url: str, session: Optional[requests.Session] = None) -> None:
        self.url = url
        self.session = session or requests.Session()
        self.session.trust_env = False

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(self.url + path, timeout=10, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.post(self.url + path, timeout=10, **kwargs)

    def put(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.put(self.url + path, timeout=10, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.delete(self.url + path, timeout=10, **kwargs)

    # Shortcuts ------------------------------------------------------------------------------
    def task_def(self, name: str, **fields: Any) -> None:
        fields.setdefault("retryDelaySeconds", 0)
        response = self.post("/metadata/taskdefs", json=[dict(fields, name=name)])
        assert response.status_code == 200, response.text

    def workflow_def(self, name: str, tasks: List[Dict[str, Any]], **fields: Any) -> None:
        response = self.put("/metadata/workflow", json=[dict(fields, name=name, tasks=tasks)])
        assert response.status_code == 200, response.text

    def start(self, name: str, workflow_input: Optional[Dict[str, Any]] = None, **params: Any) -> str:
        response = self.post("/workflow/" + name, json=workflow_input or {}, params=params)
        assert response.status_code == 200, response.text
        return response.text

    def poll(self, task_type: str, timeout_ms: int = 1000, **params: Any) -> Optional[Dict[str, Any]]:
        params.update(count=1, timeout=timeout_ms)
        response = self.get("/tasks/poll/batch/" + task_type, params=params)
        assert response.status_code == 200, response.text
        tasks = response.json()
        return tasks[0] if tasks else None

    def complete(self, task: Dict[str, Any], status: str = "COMPLETED", **fields: Any) -> requests.Response:
        body = dict(fields, workflowInstanceId=task["workflowInstanceId"], taskId=task["taskId"])
        body["status"] = status
        response = self.post("/tasks", json=body)
        assert response.status_code == 200, response.text
        return response

    def workflow(self, workflow_id: str) -> Dict[str, Any]:
        response = self.get("/workflow/" + workflow_id)
        assert response.status_code == 200, response.text
        return response.json()

    def wait_status(self, workflow_id: str, status: str, timeout: float = 5.0) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            workflow = self.workflow(workflow_id)
            if workflow["status"] == status or time.monotonic() > deadline:
                assert workflow["status"] == status, workflow
                return workflow
            time.sleep(0.02)


def simple(name: str, ref: Optional[str] = None, **fields: Any) -> Dict[str, Any]:
    return dict(fields, name=name, taskReferenceName=ref or name, type="SIMPLE")


def unique(prefix: str) -> str:
    return "%s_%s" % (prefix, uuid.uuid4().hex[:8])


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ServerProcess:
    """``conductor-workers server`` in a child process, with an :class:`Api` bound to it: whatever a hostile
    workflow does there (an endless decide, a runaway script) cannot hold the tests' own process.
    ``address_space_mb`` caps the child's address space (0: no cap)."""

    def __init__(self, *flags: str, address_space_mb: int = 0) -> None:
        def limit() -> None:
            if address_space_mb:
                size = address_space_mb * 1024 * 1024
                resource.setrlimit(resource.RLIMIT_AS, (size, size))

        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "conductor_workers", "server", "--port", "0", "--log-level", "warning", *flags],
            stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT, preexec_fn=limit)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("LocalConductor listening on http://"), line
        self.api = Api(line.split()[-1])

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        self.api.session.close()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        assert self.process.stdout is not None
        self.process.stdout.close()
