"""The definition (metadata) models: :class:`TaskDef`, :class:`WorkflowTask` and :class:`WorkflowDef`.

What ``/api/metadata`` stores and serves: a task type's retry, timeout and rate-limit policy, and a
workflow definition with its steps. Re-exported by :mod:`conductor_workers.models`.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import attrs

from ._wire import WireModel, _extra, wire


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
