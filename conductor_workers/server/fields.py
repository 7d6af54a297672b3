"""Schemas of the JSON documents: the field types and defaults of TaskDef, WorkflowTask,
WorkflowDef, TaskResult and StartWorkflowRequest, and :func:`check_fields`, the type check that
every input document goes through."""

from __future__ import annotations

import copy
import json
from typing import Any, Dict

from .errors import BadRequest
from .model import JSON, RESULT_STATUSES, RETRY_LOGICS, TIMEOUT_POLICIES, WORKFLOW_TIMEOUT_POLICIES

# A field spec is a type tag ("str", "int", "bool", "num", "dict", "list", "any") or a tuple of
# allowed enum values.
FieldSpec = Any

TASK_DEF_FIELDS: Dict[str, FieldSpec] = {
    "name": "str", "description": "str", "retryCount": "int", "timeoutSeconds": "long",
    "inputKeys": "list", "outputKeys": "list", "timeoutPolicy": TIMEOUT_POLICIES,
    "retryLogic": RETRY_LOGICS, "retryDelaySeconds": "int", "responseTimeoutSeconds": "long",
    "concurrentExecLimit": "int", "inputTemplate": "dict", "rateLimitPerFrequency": "int",
    "rateLimitFrequencyInSeconds": "int", "isolationGroupId": "str", "executionNameSpace": "str",
    "ownerEmail": "str", "pollTimeoutSeconds": "int", "backoffScaleFactor": "int",
    "maxRetryDelaySeconds": "int", "backoffJitterMs": "long", "totalTimeoutSeconds": "long",
    "ownerApp": "str", "createTime": "long", "updateTime": "long", "createdBy": "str",
    "updatedBy": "str", "baseType": "str", "enforceSchema": "bool", "inputSchema": "dict",
    "outputSchema": "dict", "taskStatusListenerEnabled": "bool", "runtimeMetadata": "list",
    "tags": "list",
}
TASK_DEF_DEFAULTS: JSON = {
    "retryCount": 3, "timeoutSeconds": 0, "inputKeys": [], "outputKeys": [],
    "timeoutPolicy": "TIME_OUT_WF", "retryLogic": "FIXED", "retryDelaySeconds": 60,
    "responseTimeoutSeconds": 3600, "inputTemplate": {}, "rateLimitPerFrequency": 0,
    "rateLimitFrequencyInSeconds": 1, "backoffScaleFactor": 1, "maxRetryDelaySeconds": 0,
    "backoffJitterMs": 0, "totalTimeoutSeconds": 0, "enforceSchema": False,
    "taskStatusListenerEnabled": True,
}
WORKFLOW_TASK_FIELDS: Dict[str, FieldSpec] = {
    "name": "str", "taskReferenceName": "str", "description": "str", "inputParameters": "dict",
    "type": "str", "startDelay": "int", "optional": "bool", "retryCount": "int",
    "taskDefinition": "dict", "asyncComplete": "bool", "rateLimited": "bool", "permissive": "bool",
    "decisionCases": "dict", "defaultCase": "list", "forkTasks": "list", "joinOn": "list",
    "loopCondition": "str", "loopOver": "list", "subWorkflowParam": "dict", "dynamicTaskNameParam": "str",
    "dynamicForkTasksParam": "str", "dynamicForkTasksInputParamName": "str", "evaluatorType": "str",
    "expression": "str", "caseValueParam": "str", "caseExpression": "str", "scriptExpression": "str", "sink": "str",
}
WORKFLOW_TASK_DEFAULTS: JSON = {
    "inputParameters": {}, "type": "SIMPLE", "startDelay": 0, "optional": False,
    "asyncComplete": False, "permissive": False, "decisionCases": {}, "defaultCase": [],
    "forkTasks": [], "joinOn": [], "loopOver": [], "defaultExclusiveJoinTask": [],
}
WORKFLOW_DEF_FIELDS: Dict[str, FieldSpec] = {
    "name": "str", "description": "str", "version": "int", "tasks": "list",
    "inputParameters": "list", "outputParameters": "dict", "failureWorkflow": "str",
    "schemaVersion": "int", "restartable": "bool", "workflowStatusListenerEnabled": "bool",
    "ownerEmail": "str", "timeoutPolicy": WORKFLOW_TIMEOUT_POLICIES, "timeoutSeconds": "long",
    "variables": "dict", "inputTemplate": "dict", "ownerApp": "str", "createTime": "long",
    "updateTime": "long", "createdBy": "str", "updatedBy": "str", "enforceSchema": "bool",
    "metadata": "dict", "maskedFields": "list",
}
WORKFLOW_DEF_DEFAULTS: JSON = {
    "version": 1, "inputParameters": [], "outputParameters": {}, "schemaVersion": 2,
    "restartable": True, "workflowStatusListenerEnabled": False, "timeoutPolicy": "ALERT_ONLY",
    "timeoutSeconds": 0, "variables": {}, "inputTemplate": {}, "enforceSchema": True,
    "metadata": {}, "maskedFields": [],
}
TASK_RESULT_FIELDS: Dict[str, FieldSpec] = {
    "workflowInstanceId": "str", "taskId": "str", "reasonForIncompletion": "str",
    "callbackAfterSeconds": "long", "workerId": "str", "status": RESULT_STATUSES,
    "outputData": "dict", "logs": "list", "externalOutputPayloadStoragePath": "str",
    "subWorkflowId": "str", "extendLease": "bool", "executionMetadata": "dict",
    "supportsCancellation": "bool", "outputMessage": "any",
}
START_REQUEST_FIELDS: Dict[str, FieldSpec] = {
    "name": "str", "version": "int", "correlationId": "str", "input": "dict",
    "taskToDomain": "dict", "workflowDef": "dict", "externalInputPayloadStoragePath": "str",
    "priority": "int", "createdBy": "str", "idempotencyKey": "str",
    "idempotencyStrategy": ("FAIL", "RETURN_EXISTING", "FAIL_ON_RUNNING"),
}

_TYPE_NAMES = {
    "str": "a string", "int": "an integer (32-bit)", "long": "an integer (64-bit)", "bool": "a boolean",
    "num": "a number", "dict": "a JSON object", "list": "a JSON array",
}
#: Java's int and long ranges: what the real server's JSON binding accepts for those fields.
INT_RANGES = {"int": (-(2 ** 31), 2 ** 31 - 1), "long": (-(2 ** 63), 2 ** 63 - 1)}


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "any":
        return True
    if kind == "str":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind in INT_RANGES:
        if isinstance(value, bool):
            return False
        if isinstance(value, float):
            if not value.is_integer():
                return False
            value = int(value)
        low, high = INT_RANGES[kind]
        return isinstance(value, int) and low <= value <= high
    if kind == "num":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "dict":
        return isinstance(value, dict)
    if kind == "list":
        return isinstance(value, list)
    raise AssertionError(kind)


def check_fields(obj: Any, fields: Dict[str, FieldSpec], what: str) -> JSON:
    """Check the JSON types of the known ``fields`` of ``obj``; return ``obj`` (ints normalised).

    ``null`` is accepted everywhere (it means "the default"). Unknown keys are kept as they are.
    Raises :class:`BadRequest` naming the field for a wrong type or an unknown enum value.
    """
    if not isinstance(obj, dict):
        raise BadRequest("Invalid %s: expected a JSON object" % what)
    for key, spec in fields.items():
        value = obj.get(key)
        if value is None:
            continue
        if isinstance(spec, tuple):
            if not isinstance(value, str) or value not in spec:
                raise BadRequest(
                    "Invalid value %s for %s.%s: not one of the values accepted for Enum class: [%s]"
                    % (json.dumps(value), what, key, ", ".join(spec))
                )
        elif not _type_ok(value, spec):
            raise BadRequest(
                "Invalid value %s for %s.%s: expected %s"
                % (json.dumps(value)[:100], what, key, _TYPE_NAMES.get(spec, spec))
            )
        elif spec in INT_RANGES:
            obj[key] = int(value)
    return obj


def _with_defaults(obj: JSON, defaults: JSON) -> JSON:
    result = {key: copy.deepcopy(value) for key, value in defaults.items()}
    result.update({key: value for key, value in obj.items() if value is not None})
    return result
