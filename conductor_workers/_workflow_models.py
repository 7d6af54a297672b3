"""The workflow-execution models: runs, how to start one, and what the server answers about them.

:class:`Workflow` (an execution with its tasks), :class:`StartWorkflowRequest`,
:class:`WorkflowStatusSummary`, :class:`SignalResponse` (the answer of ``execute`` and
``signal/sync``) and the :class:`WorkflowStatus` enum. Re-exported by :mod:`conductor_workers.models`.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

import attrs

from ._metadata_models import WorkflowDef
from ._task_models import Task
from ._wire import WireModel, _extra, _Status, wire


class WorkflowStatus(_Status):
    """A workflow's status."""

    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    TERMINATED = "TERMINATED"
    PAUSED = "PAUSED"

    @property
    def is_terminal(self) -> bool:
        return self not in (WorkflowStatus.RUNNING, WorkflowStatus.PAUSED)


@attrs.frozen
class Workflow(WireModel):
    """A workflow execution."""

    workflow_id: str = wire("workflowId", "")
    workflow_name: Optional[str] = wire("workflowName")
    workflow_version: Optional[int] = wire("workflowVersion")
    status: Union[WorkflowStatus, str] = wire("status", WorkflowStatus.RUNNING, enum_type=WorkflowStatus)
    input: Dict[str, Any] = wire("input", factory=dict)
    output: Dict[str, Any] = wire("output", factory=dict)
    tasks: List[Task] = wire("tasks", factory=list, model=Task, many=True)
    correlation_id: Optional[str] = wire("correlationId")
    reason_for_incompletion: Optional[str] = wire("reasonForIncompletion")
    failed_reference_task_names: List[str] = wire("failedReferenceTaskNames", factory=list)
    failed_task_names: List[str] = wire("failedTaskNames", factory=list)
    priority: int = wire("priority", 0)
    variables: Dict[str, Any] = wire("variables", factory=dict)
    task_to_domain: Dict[str, str] = wire("taskToDomain", factory=dict)
    parent_workflow_id: Optional[str] = wire("parentWorkflowId")
    create_time: int = wire("createTime", 0)
    update_time: int = wire("updateTime", 0)
    start_time: int = wire("startTime", 0)
    end_time: int = wire("endTime", 0)
    workflow_definition: Optional[WorkflowDef] = wire("workflowDefinition", model=WorkflowDef)
    external_input_payload_storage_path: Optional[str] = wire("externalInputPayloadStoragePath")
    external_output_payload_storage_path: Optional[str] = wire("externalOutputPayloadStoragePath")
    extra: Dict[str, Any] = _extra()

    @property
    def is_terminal(self) -> bool:
        return isinstance(self.status, WorkflowStatus) and self.status.is_terminal

    def task_by_ref(self, reference_task_name: str) -> Optional[Task]:
        """The latest task with that reference name, or None."""
        for task in reversed(self.tasks):
            if task.reference_task_name == reference_task_name:
                return task
        return None


@attrs.frozen
class StartWorkflowRequest(WireModel):
    """The body of ``POST /api/workflow``."""

    name: str = wire("name", "")
    version: Optional[int] = wire("version")
    input: Dict[str, Any] = wire("input", factory=dict)
    correlation_id: Optional[str] = wire("correlationId")
    task_to_domain: Dict[str, str] = wire("taskToDomain", factory=dict)
    priority: int = wire("priority", 0)
    workflow_def: Optional[WorkflowDef] = wire("workflowDef", model=WorkflowDef)
    idempotency_key: Optional[str] = wire("idempotencyKey")
    idempotency_strategy: Optional[str] = wire("idempotencyStrategy")
    created_by: Optional[str] = wire("createdBy")
    extra: Dict[str, Any] = _extra()


@attrs.frozen
class WorkflowStatusSummary(WireModel):
    """``GET /api/workflow/{id}/status``: id, correlation id and status (output and variables if asked)."""

    workflow_id: str = wire("workflowId", "")
    status: Union[WorkflowStatus, str] = wire("status", WorkflowStatus.RUNNING, enum_type=WorkflowStatus)
    correlation_id: Optional[str] = wire("correlationId")
    output: Optional[Dict[str, Any]] = wire("output")
    variables: Optional[Dict[str, Any]] = wire("variables")
    extra: Dict[str, Any] = _extra()


@attrs.frozen
class SignalResponse(WireModel):
    """What ``execute`` and ``signal/sync`` answer: a workflow run, or a task run (``is_task_run``).

    ``response_type`` is the return strategy: ``TARGET_WORKFLOW`` / ``BLOCKING_WORKFLOW`` (workflow
    fields and ``tasks``) or ``BLOCKING_TASK`` / ``BLOCKING_TASK_INPUT`` (the blocking task's fields;
    ``input``/``output`` are then the task's). ``signal_timeout`` is True when the server stopped
    waiting before the workflow blocked or ended (the state is the one at that moment).
    """

    response_type: str = wire("responseType", "TARGET_WORKFLOW")
    target_workflow_id: Optional[str] = wire("targetWorkflowId")
    target_workflow_status: Optional[str] = wire("targetWorkflowStatus")
    request_id: Optional[str] = wire("requestId")
    workflow_id: Optional[str] = wire("workflowId")
    correlation_id: Optional[str] = wire("correlationId")
    status: Optional[str] = wire("status")
    input: Dict[str, Any] = wire("input", factory=dict)
    output: Dict[str, Any] = wire("output", factory=dict)
    variables: Dict[str, Any] = wire("variables", factory=dict)
    tasks: List[Task] = wire("tasks", factory=list, model=Task, many=True)
    priority: int = wire("priority", 0)
    signal_timeout: bool = wire("signalTimeout", False)
    create_time: int = wire("createTime", 0)
    update_time: int = wire("updateTime", 0)
    task_id: Optional[str] = wire("taskId")
    task_type: Optional[str] = wire("taskType")
    reference_task_name: Optional[str] = wire("referenceTaskName")
    task_def_name: Optional[str] = wire("taskDefName")
    workflow_type: Optional[str] = wire("workflowType")
    retry_count: int = wire("retryCount", 0)
    extra: Dict[str, Any] = _extra()

    @property
    def is_task_run(self) -> bool:
        return self.response_type in ("BLOCKING_TASK", "BLOCKING_TASK_INPUT")
