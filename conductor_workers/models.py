"""The Conductor wire models as frozen attrs classes with snake_case attributes.

Each class maps its attributes to the server's JSON names once (the ``wire`` metadata of a field) and
gets ``from_json`` / ``to_json`` from :class:`WireModel`. Fields the server sends that a class does not
declare are kept in ``extra`` and sent back by ``to_json``, so a definition fetched from a newer server
survives a round trip. ``None`` attributes are left out of the JSON, as the server itself does.
"""
from __future__ import annotations

import enum
from collections import abc
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Tuple, Type, TypeVar, Union

import attrs

from .errors import InvalidOptionError

_M = TypeVar("_M", bound="WireModel")

REASON_MAX_CHARS = 500  # the server cuts TaskResult.reasonForIncompletion to this length


class _Status(str, enum.Enum):
    """A status as the server spells it; ``str()`` and f-strings give that spelling (``"COMPLETED"``)."""

    def __str__(self) -> str:
        return str(self.value)

    __format__ = str.__format__  # type: ignore[assignment]


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


def wire(
    name: str,
    default: Any = None,
    *,
    factory: Any = None,
    model: Optional[type] = None,
    many: bool = False,
    enum_type: Optional[Type[enum.Enum]] = None,
    converter: Any = None,
    lazy: bool = False,
) -> Any:
    """An attrs field that is serialised under the JSON key ``name``.

    ``lazy=True`` (with ``model``): ``from_json`` stores the raw JSON object and the class exposes a
    property that builds the model when asked; for nested objects that workers rarely read.
    """
    meta = {"wire": name, "model": model, "many": many, "enum": enum_type, "lazy": lazy}
    if factory is not None:
        return attrs.field(factory=factory, metadata=meta, converter=converter)
    return attrs.field(default=default, metadata=meta, converter=converter)


_Convert = Optional[Callable[[Any], Any]]


def _loader(model: Optional[Any], many: bool, enum_type: Optional[Type[enum.Enum]]) -> _Convert:
    """How to turn a JSON value into the attribute's value (None: use it as it is)."""
    if model is not None:
        if many:
            return lambda value: [model.from_json(i) if isinstance(i, abc.Mapping) else i for i in value]
        return lambda value: model.from_json(value) if isinstance(value, abc.Mapping) else value
    if enum_type is not None:

        def load_enum(value: Any) -> Any:
            try:
                return enum_type(value)
            except ValueError:
                return value  # a status from a newer server: keep the string, do not fail the poll

        return load_enum
    return None


def _dumper(model: Optional[Any], many: bool, enum_type: Optional[Type[enum.Enum]]) -> _Convert:
    """How to turn the attribute's value into JSON (None: use it as it is)."""
    if model is not None:
        if many:
            return lambda value: [i.to_json() if isinstance(i, WireModel) else i for i in value]
        return lambda value: value.to_json() if isinstance(value, WireModel) else value
    if enum_type is not None:
        return lambda value: value.value if isinstance(value, enum.Enum) else value
    return None


_Spec = Tuple[Dict[str, Tuple[str, _Convert]], Tuple[Tuple[str, str, _Convert], ...]]


class WireModel:
    """Mixin giving an attrs class ``from_json`` and ``to_json`` from its fields' ``wire`` names.

    The per-class tables are built once; parsing a polled Task is on every worker's hot path.
    """

    __slots__ = ()
    _specs: ClassVar[Dict[type, _Spec]] = {}

    @classmethod
    def _spec(cls) -> _Spec:
        spec = WireModel._specs.get(cls)
        if spec is None:
            fields = [f for f in attrs.fields(cls) if "wire" in f.metadata]  # type: ignore[arg-type]
            loads = {
                # attrs names the __init__ argument of a field "_x" "x"
                f.metadata["wire"]: (
                    f.name.lstrip("_"),
                    None if f.metadata["lazy"] else _loader(f.metadata["model"], f.metadata["many"], f.metadata["enum"]),
                )
                for f in fields
            }
            dumps = tuple(
                (f.name, f.metadata["wire"], _dumper(f.metadata["model"], f.metadata["many"], f.metadata["enum"]))
                for f in fields
            )
            spec = WireModel._specs[cls] = (loads, dumps)
        return spec

    @classmethod
    def from_json(cls: Type[_M], data: Mapping[str, Any]) -> _M:
        """Build from the server's JSON object; unknown keys go to ``extra``, ``null`` keeps defaults."""
        loads, _ = cls._spec()
        kwargs: Dict[str, Any] = {}
        extra: Dict[str, Any] = {}
        for key, value in data.items():
            entry = loads.get(key)
            if entry is None:
                extra[key] = value
            elif value is not None:
                attr, load = entry
                kwargs[attr] = value if load is None else load(value)
        if extra:
            kwargs["extra"] = extra
        return cls(**kwargs)

    def to_json(self) -> Dict[str, Any]:
        """The JSON object the server expects, without ``None`` values."""
        _, dumps = self._spec()
        out: Dict[str, Any] = dict(getattr(self, "extra", {}))
        for attr, wire_name, dump in dumps:
            value = getattr(self, attr)
            if value is not None:
                out[wire_name] = value if dump is None else dump(value)
        return out


def _built(model: Type[_M], value: Any) -> Optional[_M]:
    return model.from_json(value) if isinstance(value, abc.Mapping) else value


def _extra() -> Any:
    return attrs.field(factory=dict, repr=False, eq=False, kw_only=True)


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
class TaskDef(WireModel):
    """A task definition: retry, timeout and rate-limit policy for one task type."""

    name: str = wire("name", "")
    description: Optional[str] = wire("description")
    retry_count: int = wire("retryCount", 3)
    timeout_seconds: int = wire("timeoutSeconds", 0)
    timeout_policy: str = wire("timeoutPolicy", "TIME_OUT_WF")
    retry_logic: str = wire("retryLogic", "FIXED")
    retry_delay_seconds: int = wire("retryDelaySeconds", 60)
    response_timeout_seconds: int = wire("responseTimeoutSeconds", 3600)
    poll_timeout_seconds: Optional[int] = wire("pollTimeoutSeconds")
    backoff_scale_factor: Optional[int] = wire("backoffScaleFactor")
    concurrent_exec_limit: Optional[int] = wire("concurrentExecLimit")
    rate_limit_per_frequency: Optional[int] = wire("rateLimitPerFrequency")
    rate_limit_frequency_in_seconds: Optional[int] = wire("rateLimitFrequencyInSeconds")
    input_keys: Optional[List[str]] = wire("inputKeys")
    output_keys: Optional[List[str]] = wire("outputKeys")
    input_template: Optional[Dict[str, Any]] = wire("inputTemplate")
    owner_email: Optional[str] = wire("ownerEmail")
    owner_app: Optional[str] = wire("ownerApp")
    isolation_group_id: Optional[str] = wire("isolationGroupId")
    execution_name_space: Optional[str] = wire("executionNameSpace")
    create_time: Optional[int] = wire("createTime")
    update_time: Optional[int] = wire("updateTime")
    created_by: Optional[str] = wire("createdBy")
    updated_by: Optional[str] = wire("updatedBy")
    extra: Dict[str, Any] = _extra()


@attrs.frozen
class WorkflowTask(WireModel):
    """One step of a workflow definition. Control-flow fields of other task types stay in ``extra``."""

    name: str = wire("name", "")
    task_reference_name: str = wire("taskReferenceName", "")
    type: str = wire("type", "SIMPLE")
    input_parameters: Dict[str, Any] = wire("inputParameters", factory=dict)
    description: Optional[str] = wire("description")
    optional: bool = wire("optional", False)
    start_delay: int = wire("startDelay", 0)
    retry_count: Optional[int] = wire("retryCount")
    task_definition: Optional[TaskDef] = wire("taskDefinition", model=TaskDef)
    async_complete: Optional[bool] = wire("asyncComplete")
    extra: Dict[str, Any] = _extra()


@attrs.frozen
class WorkflowDef(WireModel):
    """A workflow definition."""

    name: str = wire("name", "")
    version: int = wire("version", 1)
    tasks: List[WorkflowTask] = wire("tasks", factory=list, model=WorkflowTask, many=True)
    description: Optional[str] = wire("description")
    input_parameters: List[str] = wire("inputParameters", factory=list)
    output_parameters: Dict[str, Any] = wire("outputParameters", factory=dict)
    failure_workflow: Optional[str] = wire("failureWorkflow")
    schema_version: int = wire("schemaVersion", 2)
    restartable: bool = wire("restartable", True)
    workflow_status_listener_enabled: bool = wire("workflowStatusListenerEnabled", False)
    owner_email: Optional[str] = wire("ownerEmail")
    timeout_policy: str = wire("timeoutPolicy", "ALERT_ONLY")
    timeout_seconds: int = wire("timeoutSeconds", 0)
    variables: Dict[str, Any] = wire("variables", factory=dict)
    input_template: Dict[str, Any] = wire("inputTemplate", factory=dict)
    create_time: Optional[int] = wire("createTime")
    update_time: Optional[int] = wire("updateTime")
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


@attrs.frozen
class PollData(WireModel):
    """When a worker last polled a queue."""

    queue_name: str = wire("queueName", "")
    domain: Optional[str] = wire("domain")
    worker_id: Optional[str] = wire("workerId")
    last_poll_time: int = wire("lastPollTime", 0)
    extra: Dict[str, Any] = _extra()


__all__ = [
    "PollData",
    "SignalResponse",
    "StartWorkflowRequest",
    "Task",
    "TaskDef",
    "TaskExecLog",
    "TaskResult",
    "TaskResultStatus",
    "TaskStatus",
    "Workflow",
    "WorkflowDef",
    "WorkflowStatus",
    "WorkflowStatusSummary",
    "WorkflowTask",
]
