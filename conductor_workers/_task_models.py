"""The task-side models: what a worker polls, reports and logs.

:class:`Task` (as the server hands it out), :class:`TaskResult` (what a worker reports, with its
``complete``/``failed``/``in_progress`` builders and the cut of ``reason_for_incompletion`` to
``REASON_MAX_CHARS``), :class:`TaskExecLog`, :class:`PollData`, and the task status enums
:class:`TaskStatus` and :class:`TaskResultStatus`. Re-exported by :mod:`conductor_workers.models`.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Union

import attrs

from ._metadata_models import TaskDef, WorkflowTask
from ._wire import WireModel, _built, _extra, _Status, wire
from .errors import InvalidOptionError

REASON_MAX_CHARS = 500  # the server cuts TaskResult.reasonForIncompletion to this length


class TaskResultStatus(_Status):
    """What a worker may report for a task."""

    IN_PROGRESS = "IN_PROGRESS"
    FAILED = "FAILED"
    FAILED_WITH_TERMINAL_ERROR = "FAILED_WITH_TERMINAL_ERROR"
    COMPLETED = "COMPLETED"

    @classmethod
    def coerce(cls, value: Union["TaskResultStatus", str]) -> "TaskResultStatus":
        """Accept a member or its name; anything else is an ``InvalidOptionError`` (a ``ValueError``)
        naming the valid ones."""
        if isinstance(value, cls):
            return value
        try:
            return cls[str(value)]
        except KeyError:
            names = ", ".join(member.name for member in cls)
            raise InvalidOptionError(f"invalid task result status {value!r}; expected one of {names}") from None


class TaskStatus(_Status):
    """A task's status as the server stores it."""

    IN_PROGRESS = "IN_PROGRESS"
    CANCELED = "CANCELED"
    FAILED = "FAILED"
    FAILED_WITH_TERMINAL_ERROR = "FAILED_WITH_TERMINAL_ERROR"
    COMPLETED = "COMPLETED"
    COMPLETED_WITH_ERRORS = "COMPLETED_WITH_ERRORS"
    SCHEDULED = "SCHEDULED"
    TIMED_OUT = "TIMED_OUT"
    SKIPPED = "SKIPPED"

    @property
    def is_terminal(self) -> bool:
        return self not in (TaskStatus.IN_PROGRESS, TaskStatus.SCHEDULED)


def _cut_reason(value: Optional[str]) -> Optional[str]:
    if value is None:
        return None
    value = str(value)
    return value if len(value) <= REASON_MAX_CHARS else value[:REASON_MAX_CHARS]


@attrs.frozen
class TaskExecLog(WireModel):
    """One line of a task's execution log."""

    log: str = wire("log", "")
    task_id: Optional[str] = wire("taskId")
    created_time: Optional[int] = wire("createdTime")
    extra: Dict[str, Any] = _extra()


@attrs.frozen
class Task(WireModel):
    """A task as the server hands it to a worker (or returns it from ``GET /tasks/{id}``)."""

    task_id: str = wire("taskId", "")
    task_type: str = wire("taskType", "")
    status: Union[TaskStatus, str] = wire("status", TaskStatus.SCHEDULED, enum_type=TaskStatus)
    input_data: Dict[str, Any] = wire("inputData", factory=dict)
    output_data: Dict[str, Any] = wire("outputData", factory=dict)
    reference_task_name: str = wire("referenceTaskName", "")
    workflow_instance_id: str = wire("workflowInstanceId", "")
    workflow_type: Optional[str] = wire("workflowType")
    task_def_name: Optional[str] = wire("taskDefName")
    retry_count: int = wire("retryCount", 0)
    seq: int = wire("seq", 0)
    poll_count: int = wire("pollCount", 0)
    correlation_id: Optional[str] = wire("correlationId")
    scheduled_time: int = wire("scheduledTime", 0)
    start_time: int = wire("startTime", 0)
    end_time: int = wire("endTime", 0)
    update_time: int = wire("updateTime", 0)
    start_delay_in_seconds: int = wire("startDelayInSeconds", 0)
    callback_after_seconds: int = wire("callbackAfterSeconds", 0)
    response_timeout_seconds: int = wire("responseTimeoutSeconds", 0)
    retried_task_id: Optional[str] = wire("retriedTaskId")
    retried: bool = wire("retried", False)
    executed: bool = wire("executed", False)
    callback_from_worker: bool = wire("callbackFromWorker", True)
    reason_for_incompletion: Optional[str] = wire("reasonForIncompletion")
    worker_id: Optional[str] = wire("workerId")
    domain: Optional[str] = wire("domain")
    workflow_priority: int = wire("workflowPriority", 0)
    iteration: int = wire("iteration", 0)
    sub_workflow_id: Optional[str] = wire("subWorkflowId")
    _workflow_task: Union[WorkflowTask, Mapping[str, Any], None] = wire(
        "workflowTask", model=WorkflowTask, lazy=True
    )
    _task_definition: Union[TaskDef, Mapping[str, Any], None] = wire("taskDefinition", model=TaskDef, lazy=True)
    queue_wait_time: int = wire("queueWaitTime", 0)
    #: set (with ``input_data`` empty) when the server keeps the task's input in external storage
    external_input_payload_storage_path: Optional[str] = wire("externalInputPayloadStoragePath")
    external_output_payload_storage_path: Optional[str] = wire("externalOutputPayloadStoragePath")
    extra: Dict[str, Any] = _extra()

    @property
    def workflow_task(self) -> Optional[WorkflowTask]:
        """The workflow step this task was scheduled for (built from the JSON on each access)."""
        return _built(WorkflowTask, self._workflow_task)

    @property
    def task_definition(self) -> Optional[TaskDef]:
        """The task definition in force when the task was scheduled (built on each access)."""
        return _built(TaskDef, self._task_definition)


@attrs.frozen
class TaskResult(WireModel):
    """What a worker reports for a task. Build one with :meth:`complete`, :meth:`failed`, ...

    ``task_id`` and ``workflow_instance_id`` may be left empty when a worker returns the result: the
    runner fills them in from the task it executed.
    """

    workflow_instance_id: str = wire("workflowInstanceId", "")
    task_id: str = wire("taskId", "")
    status: TaskResultStatus = wire(
        "status", TaskResultStatus.COMPLETED, enum_type=TaskResultStatus, converter=TaskResultStatus.coerce
    )
    output_data: Dict[str, Any] = wire("outputData", factory=dict)
    reason_for_incompletion: Optional[str] = wire("reasonForIncompletion", converter=_cut_reason)
    callback_after_seconds: int = wire("callbackAfterSeconds", 0)
    worker_id: Optional[str] = wire("workerId")
    logs: List[TaskExecLog] = wire("logs", factory=list, model=TaskExecLog, many=True)
    extend_lease: bool = wire("extendLease", False)
    sub_workflow_id: Optional[str] = wire("subWorkflowId")
    #: where the output was uploaded (then ``output_data`` is empty)
    external_output_payload_storage_path: Optional[str] = wire("externalOutputPayloadStoragePath")
    extra: Dict[str, Any] = _extra()

    @classmethod
    def complete(cls, output: Optional[Mapping[str, Any]] = None, **ids: Any) -> "TaskResult":
        """A COMPLETED result with ``output``."""
        return cls(status=TaskResultStatus.COMPLETED, output_data=dict(output or {}), **ids)

    @classmethod
    def failed(
        cls, reason: str, output: Optional[Mapping[str, Any]] = None, *, terminal: bool = False, **ids: Any
    ) -> "TaskResult":
        """A FAILED result (``terminal=True``: FAILED_WITH_TERMINAL_ERROR, never retried)."""
        status = TaskResultStatus.FAILED_WITH_TERMINAL_ERROR if terminal else TaskResultStatus.FAILED
        return cls(status=status, reason_for_incompletion=reason, output_data=dict(output or {}), **ids)

    @classmethod
    def in_progress(
        cls, callback_after_seconds: int = 0, output: Optional[Mapping[str, Any]] = None, **ids: Any
    ) -> "TaskResult":
        """An IN_PROGRESS result: the server hands the task out again after ``callback_after_seconds``."""
        return cls(
            status=TaskResultStatus.IN_PROGRESS,
            callback_after_seconds=int(callback_after_seconds),
            output_data=dict(output or {}),
            **ids,
        )

    @classmethod
    def for_task(cls, task: Task, **fields: Any) -> "TaskResult":
        """A result addressed to ``task`` (its task and workflow ids filled in)."""
        return cls(task_id=task.task_id, workflow_instance_id=task.workflow_instance_id, **fields)


@attrs.frozen
class PollData(WireModel):
    """When a worker last polled a queue."""

    queue_name: str = wire("queueName", "")
    domain: Optional[str] = wire("domain")
    worker_id: Optional[str] = wire("workerId")
    last_poll_time: int = wire("lastPollTime", 0)
    extra: Dict[str, Any] = _extra()
