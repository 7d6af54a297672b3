"""Helpers shared by the conformance tests (``from _helpers import ...``: pytest puts this folder on sys.path)."""

from __future__ import annotations

import time
import uuid
from typing import Any, Dict, List, Mapping, Optional, Sequence

import attrs

from support.waiting import wait_until  # noqa: F401 - shared; re-exported for the test modules

from conductor_workers import ConductorClient, WorkflowExecutor
from conductor_workers.models import Task, TaskDef, TaskResult, Workflow, WorkflowDef


OWNER = "conformance@example.com"

#: Task definition used unless a test overrides fields: no retries, no timeouts that could fire.
BASE_TASK_DEF: Dict[str, Any] = {
    "retryCount": 0,
    "retryLogic": "FIXED",
    "retryDelaySeconds": 0,
    "timeoutSeconds": 0,
    "responseTimeoutSeconds": 300,
    "timeoutPolicy": "TIME_OUT_WF",
    "ownerEmail": OWNER,
}


def unique(prefix: str) -> str:
    """A name no other test (or earlier session on the same server) uses."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@attrs.frozen
class Registered:
    """What :func:`register_simple_workflow` registered."""

    workflow: str
    refs: List[str]
    task_types: List[str]

    def task_type(self, ref: str) -> str:
        return self.task_types[self.refs.index(ref)]


def task_def(name: str, **overrides: Any) -> TaskDef:
    return TaskDef.from_json({"name": name, **BASE_TASK_DEF, **overrides})


def register_simple_workflow(
    client: ConductorClient,
    tasks: Sequence[str] = ("a",),
    task_def_overrides: Optional[Mapping[str, Any]] = None,
    *,
    task_defs_by_ref: Optional[Mapping[str, Mapping[str, Any]]] = None,
    input_parameters: Optional[Mapping[str, Mapping[str, Any]]] = None,
    output_parameters: Optional[Mapping[str, Any]] = None,
    optional: Sequence[str] = (),
    workflow_overrides: Optional[Mapping[str, Any]] = None,
) -> Registered:
    """Register one SIMPLE task type per entry of ``tasks`` (reference names) and a workflow of them.

    ``task_def_overrides`` applies to every task definition, ``task_defs_by_ref[ref]`` to one.
    Each task's ``inputParameters`` defaults to ``{"x": "${workflow.input.x}"}``.
    """
    workflow = unique("cf_wf")
    refs = list(tasks)
    types = [unique(f"cf_{ref}") for ref in refs]
    defs = [
        task_def(name, **dict(task_def_overrides or {}), **dict((task_defs_by_ref or {}).get(ref, {})))
        for ref, name in zip(refs, types)
    ]
    client.metadata.register_task_defs(defs)
    wf_json: Dict[str, Any] = {
        "name": workflow,
        "version": 1,
        "schemaVersion": 2,
        "ownerEmail": OWNER,
        "timeoutSeconds": 0,
        "tasks": [
            {
                "name": name,
                "taskReferenceName": ref,
                "type": "SIMPLE",
                "inputParameters": dict((input_parameters or {}).get(ref, {"x": "${workflow.input.x}"})),
                "optional": ref in optional,
            }
            for ref, name in zip(refs, types)
        ],
        "outputParameters": dict(output_parameters or {}),
        **dict(workflow_overrides or {}),
    }
    client.metadata.register_workflow_def(WorkflowDef.from_json(wf_json))
    return Registered(workflow, refs, types)


def poll_one(
    client: ConductorClient,
    task_type: str,
    timeout_s: float = 10.0,
    *,
    worker_id: str = "conformance-worker",
    domain: Optional[str] = None,
) -> Task:
    """Batch-poll (count=1) until one task of ``task_type`` arrives; AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        remaining_ms = int(max(0.0, deadline - time.monotonic()) * 1000)
        tasks = client.tasks.batch_poll(
            task_type, count=1, timeout_ms=min(500, remaining_ms), worker_id=worker_id, domain=domain
        )
        if tasks:
            assert len(tasks) == 1
            return tasks[0]
        if time.monotonic() >= deadline:
            raise AssertionError(f"no {task_type} task could be polled within {timeout_s:.1f}s")


def poll_none(
    client: ConductorClient, task_type: str, timeout_ms: int = 300, domain: Optional[str] = None
) -> None:
    """Assert that a poll of ``task_type`` (waiting ``timeout_ms``) gets nothing."""
    got = client.tasks.batch_poll(task_type, count=1, timeout_ms=timeout_ms, worker_id="probe", domain=domain)
    assert got == [], f"expected no {task_type} task, got {[t.task_id for t in got]}"


def tasks_by_ref(workflow: Workflow, ref: str) -> List[Task]:
    """Every attempt of ``ref``, oldest first."""
    return [task for task in workflow.tasks if task.reference_task_name == ref]


def status_of(value: Any) -> str:
    """A status enum member or string as its plain name."""
    return getattr(value, "value", value)


def complete(client: ConductorClient, task: Task, output: Optional[Mapping[str, Any]] = None) -> str:
    """Report ``task`` COMPLETED with ``output`` (plain ``POST /tasks``)."""
    result = TaskResult.for_task(task, status="COMPLETED", output_data=dict(output or {}))
    return client.tasks.update_task(result)


def fail(client: ConductorClient, task: Task, reason: str, terminal: bool = False) -> str:
    """Report ``task`` FAILED (or FAILED_WITH_TERMINAL_ERROR) with ``reason``."""
    status = "FAILED_WITH_TERMINAL_ERROR" if terminal else "FAILED"
    return client.tasks.update_task(TaskResult.for_task(task, status=status, reason_for_incompletion=reason))


def finished(client: ConductorClient, workflow_id: str, timeout: float = 10.0) -> Workflow:
    """The workflow once it is terminal (``WorkflowExecutor.wait_for_workflow``)."""
    return WorkflowExecutor(client).wait_for_workflow(workflow_id, timeout=timeout)
