"""State machine and storage behind :class:`~conductor_workers.testing.LocalConductor`.

The engine implements the Conductor server (conductor-oss 3.32.x) for workers and tests:
metadata (task and workflow definitions), workflow execution (start, decide, retry, timeouts,
terminate, pause/resume, retry/restart, remove), the task API (poll, long poll, update,
update-v2, update by reference name, logs, queue sizes, poll data), and the system tasks
(``SWITCH``, ``FORK_JOIN``, ``DO_WHILE``, ``SUB_WORKFLOW``, ... in ``_system``; the definition
tree they walk is in ``_definitions``).

Layout of this module:

1. errors and constants;
2. model helpers: defaults, type checks and validation of the JSON documents;
3. expression resolution (``${workflow.input.x}``, ``${ref.output.y[0]}``);
4. :class:`_Store`, the SQLite persistence (every piece of state lives there);
5. :class:`Engine`, the public operations, the decider and the sweeper thread.

Concurrency: one re-entrant lock guards the store; every public operation runs inside one
transaction while holding it. Long-poll waiters wait on a :class:`threading.Condition` per queue
(all built on that lock) and are notified the moment a task is pushed to their queue; delayed
entries are handled by the waiter itself, which sleeps until the next entry of its queue is due.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import random
import re
import sqlite3
import threading
import time
import uuid
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

from ._definitions import (
    BUILT_IN_TYPES,
    SUPPORTED_TYPES,
    SYSTEM_TASK_TYPES,
    next_task,
    strip_iteration,
    walk,
)
from ._scripts import Scripts, constant, missing_engine
from ._system import SYNTHETIC_TASK_DEF, SystemTasks
from ._workflow_ops import WorkflowOps

log = logging.getLogger(__name__)

JSON = Dict[str, Any]

# --------------------------------------------------------------------------------------------
# 1. Errors and constants
# --------------------------------------------------------------------------------------------

VALIDATION_FAILED = "Validation failed, check below errors for detail."


class EngineError(Exception):
    """An error with an HTTP status; the HTTP layer turns it into an ``ErrorResponse``."""

    status = 500

    def __init__(self, message: str, validation_errors: Optional[List[JSON]] = None) -> None:
        super().__init__(message)
        self.message = message
        self.validation_errors = validation_errors


class BadRequest(EngineError):
    status = 400


class NotFound(EngineError):
    status = 404


class Conflict(EngineError):
    status = 409


class ValidationFailed(BadRequest):
    """A bean-validation failure: 400 with a ``validationErrors`` list."""

    def __init__(self, errors: List[JSON]) -> None:
        super().__init__(VALIDATION_FAILED, errors)


def _violation(path: str, message: str, value: Any = None) -> JSON:
    error: JSON = {"path": path, "message": message}
    if value is not None:
        error["invalidValue"] = value if isinstance(value, str) else json.dumps(value)
    return error


TASK_STATUSES = (
    "IN_PROGRESS", "CANCELED", "FAILED", "FAILED_WITH_TERMINAL_ERROR", "COMPLETED",
    "COMPLETED_WITH_ERRORS", "SCHEDULED", "TIMED_OUT", "SKIPPED",
)
TASK_TERMINAL = frozenset(
    ("CANCELED", "FAILED", "FAILED_WITH_TERMINAL_ERROR", "COMPLETED", "COMPLETED_WITH_ERRORS",
     "TIMED_OUT", "SKIPPED")
)
TASK_SUCCESSFUL = frozenset(("IN_PROGRESS", "COMPLETED", "COMPLETED_WITH_ERRORS", "SCHEDULED", "SKIPPED"))
TASK_RETRIABLE = frozenset(
    ("IN_PROGRESS", "FAILED", "COMPLETED", "COMPLETED_WITH_ERRORS", "SCHEDULED", "TIMED_OUT")
)
RESULT_STATUSES = ("IN_PROGRESS", "FAILED", "FAILED_WITH_TERMINAL_ERROR", "COMPLETED", "CANCELED")
WORKFLOW_TERMINAL = frozenset(("COMPLETED", "FAILED", "TIMED_OUT", "TERMINATED"))
TIMEOUT_POLICIES = ("RETRY", "TIME_OUT_WF", "ALERT_ONLY")
RETRY_LOGICS = ("FIXED", "EXPONENTIAL_BACKOFF", "LINEAR_BACKOFF")
WORKFLOW_TIMEOUT_POLICIES = ("TIME_OUT_WF", "ALERT_ONLY")

#: Rounds of "schedule, run the system tasks" one decide may take before it gives up on a workflow.
MAX_DECIDE_ROUNDS = 10_000
#: How long a poll keeps a domain "active" for ``taskToDomain`` values with several domains.
ACTIVE_DOMAIN_WINDOW_MS = 10_000


def now_ms() -> int:
    """The current time as epoch milliseconds (Conductor's unit for every timestamp)."""
    return int(time.time() * 1000)


def new_id() -> str:
    return str(uuid.uuid4())


def queue_name(task_type: str, domain: Optional[str]) -> str:
    """``[domain:]taskType``, the server's queue name for a SIMPLE task."""
    return "%s:%s" % (domain, task_type) if domain else task_type


# --------------------------------------------------------------------------------------------
# 2. Model helpers: defaults, type checks, validation
# --------------------------------------------------------------------------------------------

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
    "expression": "str", "caseValueParam": "str", "caseExpression": "str", "scriptExpression": "str",
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
#: Epoch milliseconds are stored as SQLite integers: deadlines further out are kept at this (never).
MAX_MS = 2 ** 62


def clamp_ms(value: Optional[int]) -> Optional[int]:
    """A deadline or due time that SQLite can store and arithmetic on it cannot overflow."""
    return None if value is None else max(-MAX_MS, min(MAX_MS, value))


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


def normalise_task_def(raw: Any, path: str) -> JSON:
    """Type-check and validate a TaskDef; return it with every default filled in."""
    task_def = _with_defaults(check_fields(raw, TASK_DEF_FIELDS, "TaskDef"), TASK_DEF_DEFAULTS)
    errors: List[JSON] = []
    name = task_def.get("name")
    if not name:
        errors.append(_violation(path + ".name", "TaskDef name cannot be null or empty"))
    if task_def["retryCount"] < 0:
        errors.append(_violation(path + ".retryCount", "TaskDef retryCount: 0 must be >= 0",
                                 str(task_def["retryCount"])))
    rto = task_def["responseTimeoutSeconds"]
    if rto < 1:
        errors.append(_violation(
            path + ".responseTimeoutSeconds",
            "TaskDef responseTimeoutSeconds: %d should be minimum 1 second" % rto, str(rto)))
    for key in ("pollTimeoutSeconds", "maxRetryDelaySeconds", "backoffJitterMs", "totalTimeoutSeconds"):
        value = task_def.get(key)
        if value is not None and value < 0:
            errors.append(_violation(path + "." + key, "TaskDef %s: 0 must be >= 0" % key, str(value)))
    if task_def["backoffScaleFactor"] < 1:
        errors.append(_violation(path + ".backoffScaleFactor",
                                 "Backoff scale factor. Applicable for LINEAR_BACKOFF",
                                 str(task_def["backoffScaleFactor"])))
    timeout = task_def["timeoutSeconds"]
    if timeout > 0 and rto > timeout:
        errors.append(_violation(path, "TaskDef: %s responseTimeoutSeconds: %d must be less than "
                                       "timeoutSeconds: %d" % (name, rto, timeout)))
    total = task_def["totalTimeoutSeconds"]
    if timeout > 0 and total > 0 and timeout > total:
        errors.append(_violation(path, "TaskDef: %s timeoutSeconds: %d must be less than or equal to "
                                       "totalTimeoutSeconds: %d" % (name, timeout, total)))
    if errors:
        raise ValidationFailed(errors)
    return task_def


def normalise_workflow_def(raw: Any, path: str) -> JSON:
    """Type-check and validate a WorkflowDef (SIMPLE tasks only); return it with defaults."""
    wf_def = _with_defaults(check_fields(raw, WORKFLOW_DEF_FIELDS, "WorkflowDef"), WORKFLOW_DEF_DEFAULTS)
    errors: List[JSON] = []
    if not wf_def.get("name"):
        errors.append(_violation(path + ".name", "WorkflowDef name cannot be null or empty"))
    if wf_def["schemaVersion"] != 2:
        errors.append(_violation(path + ".schemaVersion",
                                 "workflowDef schemaVersion: 2 is only supported",
                                 str(wf_def["schemaVersion"])))
    tasks = wf_def.get("tasks") or []
    if not tasks:
        errors.append(_violation(path + ".tasks", "WorkflowTask list cannot be empty"))
    normalised = []
    for index, task in enumerate(tasks):
        task_path = "%s.tasks[%d]" % (path, index)
        normalised.append(normalise_workflow_task(task, task_path, errors))
    wf_def["tasks"] = normalised
    seen: Set[str] = set()
    for task in walk(normalised):
        ref = task.get("taskReferenceName")
        if ref and ref in seen:
            errors.append(_violation(path, "taskReferenceName: %s should be unique across tasks for a "
                                           "given workflowDefinition: %s" % (ref, wf_def.get("name"))))
        if ref:
            seen.add(ref)
    errors.extend(_undefined_references(normalised, seen, path))
    if errors:
        raise ValidationFailed(errors)
    for task in walk(normalised):
        if task["type"] not in SUPPORTED_TYPES:
            raise BadRequest(
                "LocalConductor does not support task type %s: task %r (%s)"
                % (task["type"], task["name"], task["taskReferenceName"])
            )
        engine = _engine_needed(task)
        reason = missing_engine(engine) if engine else None
        if reason is not None:
            raise BadRequest("%s: task %r (%s) of type %s" % (reason, task["name"], task["taskReferenceName"],
                                                              task["type"]))
    return wf_def


_REFERENCE = re.compile(r"\$\{([^}.\[]+)")
#: Names an expression may start with besides task references (conductor-oss's ConstraintParamUtil).
_BUILT_IN_NAMES = frozenset({"workflow", "CPEWF_TASK_ID", "NETFLIX_ENV", "NETFLIX_STACK"})


def _strings(value: Any) -> Iterator[Tuple[str, str]]:
    """(key, text) of every string in an input-parameters document."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str):
                yield str(key), item
            else:
                for pair in _strings(item):
                    yield pair
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, str):
                yield "", item
            else:
                for pair in _strings(item):
                    yield pair


def _undefined_references(tasks: List[JSON], refs: Set[str], path: str) -> List[JSON]:
    """conductor-oss refuses a definition whose input expressions name a task it does not have."""
    errors = []
    for task in walk(tasks):
        for key, text in _strings(task.get("inputParameters") or {}):
            for match in _REFERENCE.finditer(text.replace("$${", "")):
                name = match.group(1).strip()
                if name in _BUILT_IN_NAMES or name in refs or not name:
                    continue
                errors.append(_violation(path, "taskReferenceName: %s for given task: %s input value: %s of input "
                                               "parameter: %s is not defined in workflow definition."
                                         % (name, task.get("name"), key, text)))
    return errors


def _engine_needed(task: JSON) -> Optional[str]:
    """"javascript" or "jq" when ``task`` cannot run without that engine."""
    kind = task["type"]
    params = task.get("inputParameters") or {}
    if kind == "SWITCH" and task.get("evaluatorType") in ("javascript", "graaljs"):
        return "javascript"
    if kind == "DECISION" and not task.get("caseValueParam") and task.get("caseExpression"):
        return "javascript"
    if kind == "DO_WHILE" and constant(task.get("loopCondition") or "") is None:
        return "javascript"
    expression = params.get("expression")
    if kind == "INLINE" and (params.get("evaluatorType") or "javascript") in ("javascript", "graaljs") and (
            not isinstance(expression, str) or expression.strip()):  # a blank one fails without running
        return "javascript"
    if kind == "JSON_JQ_TRANSFORM":
        return "jq"
    return None


def normalise_workflow_task(raw: Any, path: str, errors: List[JSON]) -> JSON:
    """Type-check one WorkflowTask and the tasks nested in it; violations go to ``errors``."""
    task = _with_defaults(check_fields(raw, WORKFLOW_TASK_FIELDS, "WorkflowTask"), WORKFLOW_TASK_DEFAULTS)
    kind = task["type"]
    if kind in ("SWITCH", "DECISION"):
        cases = task.get("decisionCases") or {}
        for name, branch in cases.items():
            if not isinstance(branch, list):
                raise BadRequest("Invalid WorkflowTask.decisionCases.%s: expected a JSON array" % name)
            cases[name] = [normalise_workflow_task(item, "%s.decisionCases.%s[%d]" % (path, name, index), errors)
                           for index, item in enumerate(branch)]
        task["defaultCase"] = [normalise_workflow_task(item, "%s.defaultCase[%d]" % (path, index), errors)
                               for index, item in enumerate(task.get("defaultCase") or [])]
        if kind == "SWITCH" and not task.get("expression"):
            errors.append(_violation(path, "expression is required for a SWITCH task: %s"
                                     % task.get("taskReferenceName")))
        if kind == "DECISION" and not (task.get("caseValueParam") or task.get("caseExpression")):
            errors.append(_violation(path, "caseValueParam or caseExpression field is required for taskType: "
                                           "DECISION taskName: %s" % task.get("name")))
    elif kind == "FORK_JOIN":
        branches = task.get("forkTasks") or []
        if not branches:
            errors.append(_violation(path, "forkTasks should have atleast one task for taskType: FORK_JOIN "
                                           "taskName: %s" % task.get("name")))
        for number, branch in enumerate(branches):
            if not isinstance(branch, list):
                raise BadRequest("Invalid WorkflowTask.forkTasks: expected a JSON array of arrays")
            branches[number] = [normalise_workflow_task(item, "%s.forkTasks[%d][%d]" % (path, number, index), errors)
                                for index, item in enumerate(branch)]
    elif kind == "DO_WHILE":
        task["loopOver"] = [normalise_workflow_task(item, "%s.loopOver[%d]" % (path, index), errors)
                            for index, item in enumerate(task.get("loopOver") or [])]
        if not task["loopOver"]:
            errors.append(_violation(path, "loopOver field is required for taskType: DO_WHILE taskName: %s"
                                     % task.get("name")))
        if task.get("loopCondition") is None:  # "" is accepted (an items loop needs no condition)
            errors.append(_violation(path, "loopCondition field is required for taskType: DO_WHILE taskName: %s"
                                     % task.get("name")))
    elif kind == "DYNAMIC" and not task.get("dynamicTaskNameParam"):
        errors.append(_violation(path, "dynamicTaskNameParam field is required for taskType: DYNAMIC "
                                       "taskName: %s" % task.get("name")))
    elif kind == "SUB_WORKFLOW":
        params = task.get("subWorkflowParam") or {}
        if not params.get("name") and not params.get("workflowDefinition"):
            errors.append(_violation(path, "subWorkflowParam field is required for taskType: SUB_WORKFLOW "
                                           "taskName: %s" % task.get("name")))
        if isinstance(params.get("workflowDefinition"), dict):
            params["workflowDefinition"] = normalise_workflow_def(params["workflowDefinition"],
                                                                  path + ".subWorkflowParam.workflowDefinition")
    if not task.get("name"):
        errors.append(_violation(path + ".name", "WorkflowTask name cannot be empty or null"))
    if not task.get("taskReferenceName"):
        errors.append(_violation(path + ".taskReferenceName",
                                 "WorkflowTask taskReferenceName name cannot be empty or null"))
    if task["startDelay"] < 0:
        errors.append(_violation(path + ".startDelay", "startDelay must be >= 0", str(task["startDelay"])))
    if task.get("taskDefinition") is not None:
        inline = dict(task["taskDefinition"])
        inline.setdefault("name", task.get("name"))  # the real server accepts an inline def with no name
        task["taskDefinition"] = normalise_task_def(inline, path + ".taskDefinition")
    return task



def check_task_result(raw: Any) -> JSON:
    """Type-check and validate a TaskResult body (``POST /api/tasks`` and ``update-v2``)."""
    result = check_fields(raw, TASK_RESULT_FIELDS, "TaskResult")
    errors = []
    if not result.get("workflowInstanceId"):
        errors.append(_violation("updateTask.taskResult.workflowInstanceId",
                                 "Workflow Id cannot be null or empty"))
    if not result.get("taskId"):
        errors.append(_violation("updateTask.taskResult.taskId", "Task ID cannot be null or empty"))
    if errors:
        raise ValidationFailed(errors)
    for entry in result.get("logs") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("log", ""), str):
            raise BadRequest("Invalid TaskResult.logs: expected a list of TaskExecLog objects")
    return result


def check_priority(priority: int) -> None:
    if priority < 0:
        raise ValidationFailed([_violation("startWorkflow.startWorkflowRequest.priority",
                                           "priority: %d should be minimum 0" % priority, str(priority))])
    if priority > 99:
        raise ValidationFailed([_violation("startWorkflow.startWorkflowRequest.priority",
                                           "priority: %d should be maximum 99" % priority, str(priority))])


# --------------------------------------------------------------------------------------------
# 3. Expression resolution
# --------------------------------------------------------------------------------------------

_WHOLE_EXPRESSION = re.compile(r"^\$\{([^}]*)\}$")
_EXPRESSION = re.compile(r"(?<!\$)\$\{([^}]*)\}")
_PATH_TOKEN = re.compile(r"\[(\d+)\]|\['([^']*)'\]|\[\"([^\"]*)\"\]|([^.\[\]]+)")


def lookup_path(document: Any, path: str) -> Any:
    """Follow a JsonPath-like ``a.b[0]['c']`` path through ``document``; missing gives ``None``."""
    path = path.strip()
    if path.startswith("$."):
        path = path[2:]
    current = document
    for match in _PATH_TOKEN.finditer(path):
        index, quoted, dquoted, key = match.groups()
        if index is not None:
            if not isinstance(current, list) or int(index) >= len(current):
                return None
            current = current[int(index)]
        else:
            name = key if key is not None else (quoted if quoted is not None else dquoted)
            if not isinstance(current, dict):
                return None
            current = current.get(name)
        if current is None:
            return None
    return current


def _as_text(value: Any) -> str:
    if value is None:
        return "null"  # String.valueOf(null): conductor-oss 3.32 interpolates a missing value so
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def resolve(value: Any, document: JSON) -> Any:
    """Resolve ``${...}`` expressions in ``value`` (recursively through dicts and lists).

    A string that is exactly one expression keeps the JSON type of what it points to; embedded
    expressions are interpolated as text (a missing value becomes ``null``, as on the
    server); ``$${`` escapes an expression.
    """
    if isinstance(value, str):
        whole = _WHOLE_EXPRESSION.match(value)
        if whole and "${" not in whole.group(1):
            path = whole.group(1)
            return copy.deepcopy(lookup_path(document, path)) if path.strip() else ""
        if "${" not in value:
            return value
        text = _EXPRESSION.sub(lambda m: _as_text(lookup_path(document, m.group(1))), value)
        return text.replace("$${", "${")
    if isinstance(value, dict):
        return {key: resolve(item, document) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, document) for item in value]
    return value


def resolve_task_input(workflow_task: JSON, task_def: JSON, document: JSON) -> JSON:
    """ParametersUtils.getTaskInputV2: a task's input from its inputParameters and TaskDef.

    The TaskDef's ``inputTemplate`` fills the keys the parameters lack, then everything is resolved
    (template values too: ``$${`` unescapes there as well); a key that resolves to null falls back to
    its raw template value.
    """
    template = task_def.get("inputTemplate") or {}
    params = copy.deepcopy(workflow_task.get("inputParameters") or {})
    for key, value in template.items():
        params.setdefault(key, copy.deepcopy(value))
    resolved = resolve(params, document)
    for key, value in resolved.items():
        if value is None and key in template:
            resolved[key] = copy.deepcopy(template[key])
    return resolved


_TASK_CONTEXT_FIELDS = (
    "taskType", "status", "referenceTaskName", "retryCount", "correlationId", "pollCount",
    "taskDefName", "scheduledTime", "startTime", "endTime", "workflowInstanceId", "taskId",
    "reasonForIncompletion", "callbackAfterSeconds", "workerId", "iteration",
)


def expression_document(workflow: JSON, tasks: Sequence[JSON]) -> JSON:
    """The document ``${...}`` expressions are evaluated against (see ParametersUtils)."""
    wf_def = workflow.get("workflowDefinition") or {}
    document: JSON = {
        "workflow": {
            "input": workflow.get("input") or {},
            "output": workflow.get("output") or {},
            "status": workflow.get("status"),
            "workflowId": workflow.get("workflowId"),
            "parentWorkflowId": workflow.get("parentWorkflowId"),
            "parentWorkflowTaskId": workflow.get("parentWorkflowTaskId"),
            "workflowType": wf_def.get("name"),
            "version": wf_def.get("version"),
            "correlationId": workflow.get("correlationId"),
            "reasonForIncompletion": workflow.get("reasonForIncompletion"),
            "schemaVersion": wf_def.get("schemaVersion"),
            "variables": workflow.get("variables") or {},
            "taskToDomain": workflow.get("taskToDomain") or {},
            "createTime": workflow.get("createTime"),
            "createdBy": workflow.get("createdBy"),
        }
    }
    for task in sorted(tasks, key=lambda t: t.get("seq") or 0):  # the latest attempt of a name wins
        entry = {field: task.get(field) for field in _TASK_CONTEXT_FIELDS}
        entry["input"] = task.get("inputData") or {}
        entry["output"] = task.get("outputData") or {}
        document[task["referenceTaskName"]] = entry
        if task.get("iteration"):  # a DO_WHILE's task: also under its name without ``__N``
            document[strip_iteration(task["referenceTaskName"])] = entry
    return document


# --------------------------------------------------------------------------------------------
# 4. Storage
# --------------------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS task_defs (name TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS workflow_defs (
    name TEXT NOT NULL, version INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS workflows (
    workflow_id TEXT PRIMARY KEY, name TEXT NOT NULL, version INTEGER NOT NULL,
    status TEXT NOT NULL, deadline INTEGER, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS workflows_by_name ON workflows (name, version, status);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY, workflow_id TEXT NOT NULL, seq INTEGER NOT NULL,
    status TEXT NOT NULL, deadline INTEGER, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS tasks_by_workflow ON tasks (workflow_id, seq);
CREATE INDEX IF NOT EXISTS tasks_by_deadline ON tasks (deadline) WHERE deadline IS NOT NULL;
CREATE TABLE IF NOT EXISTS queue (
    task_id TEXT PRIMARY KEY, queue_name TEXT NOT NULL, priority INTEGER NOT NULL,
    due INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS queue_by_priority ON queue (queue_name, priority DESC, due);
CREATE TABLE IF NOT EXISTS poll_data (
    queue_name TEXT NOT NULL, domain TEXT NOT NULL, worker_id TEXT, last_poll_time INTEGER NOT NULL,
    PRIMARY KEY (queue_name, domain));
CREATE TABLE IF NOT EXISTS task_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL, log TEXT NOT NULL,
    created_time INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS task_logs_by_task ON task_logs (task_id);
CREATE TABLE IF NOT EXISTS payloads (key TEXT PRIMARY KEY, body TEXT NOT NULL);
"""


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


class _Store:
    """SQLite persistence: JSON documents plus the few columns the engine queries on.

    Not thread-safe by itself: the :class:`Engine` serialises access with its lock.
    """

    def __init__(self, db_path: Optional[str]) -> None:
        self._db = sqlite3.connect(db_path or ":memory:", check_same_thread=False, isolation_level=None)
        if db_path:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._depth = 0

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction; nested uses join the outer one."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            self._db.execute("ROLLBACK")
            raise
        self._depth = 0
        self._db.execute("COMMIT")

    def _one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        row = self._db.execute(sql, args).fetchone()
        return None if row is None else row[0]

    def _bodies(self, sql: str, args: Sequence[Any] = ()) -> List[JSON]:
        return [json.loads(row[0]) for row in self._db.execute(sql, args)]

    # Task definitions -----------------------------------------------------------------------
    def put_task_def(self, task_def: JSON) -> None:
        self._db.execute("INSERT OR REPLACE INTO task_defs VALUES (?, ?)",
                         (task_def["name"], _dumps(task_def)))

    def get_task_def(self, name: str) -> Optional[JSON]:
        body = self._one("SELECT body FROM task_defs WHERE name = ?", (name,))
        return None if body is None else json.loads(body)

    def task_defs(self) -> List[JSON]:
        return self._bodies("SELECT body FROM task_defs ORDER BY name")

    def delete_task_def(self, name: str) -> bool:
        return self._db.execute("DELETE FROM task_defs WHERE name = ?", (name,)).rowcount > 0

    # Workflow definitions -------------------------------------------------------------------
    def put_workflow_def(self, wf_def: JSON) -> None:
        self._db.execute("INSERT OR REPLACE INTO workflow_defs VALUES (?, ?, ?)",
                         (wf_def["name"], wf_def["version"], _dumps(wf_def)))

    def get_workflow_def(self, name: str, version: Optional[int]) -> Optional[JSON]:
        if version is None:
            body = self._one("SELECT body FROM workflow_defs WHERE name = ? ORDER BY version DESC LIMIT 1",
                             (name,))
        else:
            body = self._one("SELECT body FROM workflow_defs WHERE name = ? AND version = ?", (name, version))
        return None if body is None else json.loads(body)

    def workflow_defs(self) -> List[JSON]:
        return self._bodies("SELECT body FROM workflow_defs ORDER BY name, version")

    def delete_workflow_def(self, name: str, version: int) -> bool:
        cursor = self._db.execute("DELETE FROM workflow_defs WHERE name = ? AND version = ?", (name, version))
        return cursor.rowcount > 0

    # Workflows and tasks --------------------------------------------------------------------
    def put_workflow(self, workflow: JSON, deadline: Optional[int]) -> None:
        wf_def = workflow["workflowDefinition"]
        self._db.execute(
            "INSERT OR REPLACE INTO workflows VALUES (?, ?, ?, ?, ?, ?)",
            (workflow["workflowId"], wf_def["name"], wf_def["version"], workflow["status"], clamp_ms(deadline),
             _dumps(workflow)),
        )

    def get_workflow(self, workflow_id: str) -> Optional[JSON]:
        body = self._one("SELECT body FROM workflows WHERE workflow_id = ?", (workflow_id,))
        return None if body is None else json.loads(body)

    def delete_workflow(self, workflow_id: str) -> None:
        task_ids = [row[0] for row in self._db.execute(
            "SELECT task_id FROM tasks WHERE workflow_id = ?", (workflow_id,))]
        for task_id in task_ids:
            self.remove_from_queue(task_id)
            self._db.execute("DELETE FROM task_logs WHERE task_id = ?", (task_id,))
        self._db.execute("DELETE FROM tasks WHERE workflow_id = ?", (workflow_id,))
        self._db.execute("DELETE FROM workflows WHERE workflow_id = ?", (workflow_id,))

    def pending_workflow_ids(self, name: str) -> List[str]:
        rows = self._db.execute(
            "SELECT workflow_id FROM workflows WHERE name = ? "
            "AND status IN ('RUNNING', 'PAUSED') ORDER BY rowid", (name,))
        return [row[0] for row in rows]

    def put_task(self, task: JSON, deadline: Optional[int]) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO tasks VALUES (?, ?, ?, ?, ?, ?)",
            (task["taskId"], task["workflowInstanceId"], task["seq"], task["status"], clamp_ms(deadline),
             _dumps(task)),
        )

    def get_task(self, task_id: str) -> Optional[JSON]:
        body = self._one("SELECT body FROM tasks WHERE task_id = ?", (task_id,))
        return None if body is None else json.loads(body)

    def workflow_tasks(self, workflow_id: str) -> List[JSON]:
        return self._bodies("SELECT body FROM tasks WHERE workflow_id = ? ORDER BY seq", (workflow_id,))

    def delete_workflow_tasks(self, workflow_id: str) -> None:
        for (task_id,) in self._db.execute("SELECT task_id FROM tasks WHERE workflow_id = ?", (workflow_id,)):
            self.remove_from_queue(task_id)
        self._db.execute("DELETE FROM tasks WHERE workflow_id = ?", (workflow_id,))

    def delete_task(self, task_id: str) -> None:
        self.remove_from_queue(task_id)
        self._db.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))

    def due_workflow_ids(self, now: int) -> List[str]:
        """Workflows with a deadline (their own or one of their tasks') that has passed."""
        rows = self._db.execute(
            "SELECT workflow_id FROM workflows WHERE deadline IS NOT NULL AND deadline <= ? "
            "UNION SELECT t.workflow_id FROM tasks t JOIN workflows w USING (workflow_id) "
            "WHERE t.deadline IS NOT NULL AND t.deadline <= ? AND w.status = 'RUNNING'",
            (now, now))
        return [row[0] for row in rows]

    def next_deadline(self) -> Optional[int]:
        first = self._one("SELECT MIN(deadline) FROM workflows WHERE deadline IS NOT NULL")
        second = self._one(
            "SELECT MIN(t.deadline) FROM tasks t JOIN workflows w USING (workflow_id) "
            "WHERE t.deadline IS NOT NULL AND w.status = 'RUNNING'")
        candidates = [value for value in (first, second) if value is not None]
        return min(candidates) if candidates else None

    # Queues ---------------------------------------------------------------------------------
    def push(self, task_id: str, queue: str, priority: int, due: int) -> None:
        # Delete first so that a postponed entry goes to the back of its priority class.
        self._db.execute("DELETE FROM queue WHERE task_id = ?", (task_id,))
        self._db.execute("INSERT INTO queue VALUES (?, ?, ?, ?)", (task_id, queue, priority, clamp_ms(due)))

    def remove_from_queue(self, task_id: str) -> None:
        self._db.execute("DELETE FROM queue WHERE task_id = ?", (task_id,))

    def pop(self, queue: str, count: int, now: int) -> List[str]:
        rows = self._db.execute(
            "SELECT task_id FROM queue WHERE queue_name = ? AND due <= ? "
            "ORDER BY priority DESC, due, rowid LIMIT ?", (queue, now, count)).fetchall()
        for (task_id,) in rows:
            self._db.execute("DELETE FROM queue WHERE task_id = ?", (task_id,))
        return [row[0] for row in rows]

    def next_due(self, queue: str) -> Optional[int]:
        return self._one("SELECT MIN(due) FROM queue WHERE queue_name = ?", (queue,))

    def queue_size(self, queue: str) -> int:
        return int(self._one("SELECT COUNT(*) FROM queue WHERE queue_name = ?", (queue,)))

    def queue_sizes(self) -> Dict[str, int]:
        rows = self._db.execute("SELECT queue_name, COUNT(*) FROM queue GROUP BY queue_name ORDER BY 1")
        return {name: count for name, count in rows}

    # Poll data and logs ---------------------------------------------------------------------
    def put_poll_data(self, task_type: str, domain: str, worker_id: Optional[str], when: int) -> None:
        self._db.execute("INSERT OR REPLACE INTO poll_data VALUES (?, ?, ?, ?)",
                         (task_type, domain, worker_id, when))

    def poll_data(self, task_type: Optional[str]) -> List[Tuple[str, str, Optional[str], int]]:
        if task_type is None:
            return list(self._db.execute("SELECT * FROM poll_data ORDER BY queue_name, domain"))
        return list(self._db.execute("SELECT * FROM poll_data WHERE queue_name = ? ORDER BY domain",
                                     (task_type,)))

    def add_log(self, task_id: str, text: str, created: int) -> None:
        self._db.execute("INSERT INTO task_logs (task_id, log, created_time) VALUES (?, ?, ?)",
                         (task_id, text, created))

    def put_payload(self, key: str, body: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO payloads (key, body) VALUES (?, ?)", (key, body))

    def get_payload(self, key: str) -> Optional[str]:
        return self._one("SELECT body FROM payloads WHERE key = ?", (key,))

    def logs(self, task_id: str) -> List[JSON]:
        rows = self._db.execute(
            "SELECT log, created_time FROM task_logs WHERE task_id = ? ORDER BY id", (task_id,))
        return [{"log": text, "taskId": task_id, "createdTime": created} for text, created in rows]


# --------------------------------------------------------------------------------------------
# 5. The engine
# --------------------------------------------------------------------------------------------


class _Terminate(Exception):
    """Raised inside the decider to end a workflow (TerminateWorkflowException)."""

    def __init__(self, reason: str, status: str = "FAILED", task: Optional[JSON] = None,
                 output: Optional[JSON] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.task = task
        self.output = output  # TERMINATE: the workflow's output


def _strip_nulls(obj: JSON) -> JSON:
    return {key: value for key, value in obj.items() if value is not None}


class PayloadLimits:
    """External payload thresholds in KB, as conductor-oss's ``conductor.app.*PayloadSizeThreshold``.

    A task's input or output above ``task_threshold_kb`` (a workflow's above ``workflow_threshold_kb``)
    is moved to LocalConductor's payload storage: API views show it empty, with
    ``external*PayloadStoragePath`` set, and clients read it through the storage location endpoints.
    A task output above ``task_max_kb`` fails the task with ``FAILED_WITH_TERMINAL_ERROR``.
    """

    __slots__ = ("task_threshold", "task_max", "workflow_threshold")

    def __init__(self, task_threshold_kb: int = 3072, task_max_kb: int = 10240, workflow_threshold_kb: int = 5120):
        self.task_threshold = task_threshold_kb * 1024
        self.task_max = task_max_kb * 1024
        self.workflow_threshold = workflow_threshold_kb * 1024


TASK_PAYLOADS = (("inputData", "externalInputPayloadStoragePath"), ("outputData", "externalOutputPayloadStoragePath"))
WORKFLOW_PAYLOADS = (("input", "externalInputPayloadStoragePath"), ("output", "externalOutputPayloadStoragePath"))


def _externalized(view: JSON, fields: Sequence[Tuple[str, str]]) -> JSON:
    for data_field, path_field in fields:
        if view.get(path_field):
            view[data_field] = {}
    return view


def task_view(task: JSON) -> JSON:
    """The ``Task`` JSON as the server serialises it (null fields omitted, computed fields added)."""
    view = _externalized(_strip_nulls(task), TASK_PAYLOADS)
    workflow_task = task.get("workflowTask") or {}
    if workflow_task.get("taskDefinition") is not None:
        view["taskDefinition"] = workflow_task["taskDefinition"]
    view["queueWaitTime"] = _queue_wait_time(task)
    view["loopOverTask"] = (task.get("iteration") or 0) > 0
    return view


def _queue_wait_time(task: JSON) -> int:
    start, scheduled = task.get("startTime") or 0, task.get("scheduledTime") or 0
    if start > 0 and scheduled > 0:
        update, callback = task.get("updateTime") or 0, task.get("callbackAfterSeconds") or 0
        if update > 0 and callback > 0:
            return max(0, now_ms() - (update + callback * 1000))
        return start - scheduled
    return 0


def _task_def_of(task: JSON) -> JSON:
    default = SYNTHETIC_TASK_DEF if task.get("taskType") in SYSTEM_TASK_TYPES else TASK_DEF_DEFAULTS
    return (task.get("workflowTask") or {}).get("taskDefinition") or dict(default)


def _task_deadline(task: JSON) -> Optional[int]:
    """When the sweeper must next look at ``task`` (response, task and poll timeouts)."""
    status = task["status"]
    if status in TASK_TERMINAL or task.get("retried") or task.get("executed"):
        return None
    if task.get("taskType") in SYSTEM_TASK_TYPES:  # the server runs them: only a WAIT's time counts
        return clamp_ms(task.get("waitTimeout")) if task.get("taskType") == "WAIT" else None
    task_def = _task_def_of(task)
    candidates = []
    callback_ms = (task.get("callbackAfterSeconds") or 0) * 1000
    start_delay_ms = (task.get("startDelayInSeconds") or 0) * 1000
    rto = task_def.get("responseTimeoutSeconds") or 0
    if status == "IN_PROGRESS" and rto > 0:
        candidates.append(task["updateTime"] + rto * 1000 + callback_ms)
    alerts_only = task_def.get("timeoutPolicy") == "ALERT_ONLY"
    timeout = task_def.get("timeoutSeconds") or 0
    if timeout > 0 and task.get("startTime", 0) > 0 and not alerts_only:
        candidates.append(task["startTime"] + start_delay_ms + timeout * 1000)
    poll_timeout = task_def.get("pollTimeoutSeconds") or 0
    if status == "SCHEDULED" and poll_timeout > 0 and not alerts_only:
        candidates.append(task["scheduledTime"] + start_delay_ms + poll_timeout * 1000 + callback_ms)
    return min(candidates) if candidates else None


def _workflow_deadline(workflow: JSON) -> Optional[int]:
    wf_def = workflow["workflowDefinition"]
    timeout = wf_def.get("timeoutSeconds") or 0
    if workflow["status"] in WORKFLOW_TERMINAL or timeout <= 0:
        return None
    if wf_def.get("timeoutPolicy") != "TIME_OUT_WF":
        return None
    base = workflow.get("lastRetriedTime") or workflow["createTime"]
    return base + timeout * 1000


def _retry_delay_seconds(task_def: JSON, retry_count: int) -> int:
    base = task_def.get("retryDelaySeconds") or 0
    logic = task_def.get("retryLogic") or "FIXED"
    if logic == "LINEAR_BACKOFF":
        delay = base * (task_def.get("backoffScaleFactor") or 1) * (retry_count + 1)
    elif logic == "EXPONENTIAL_BACKOFF":
        delay = base * 2 ** retry_count
    else:
        delay = base
    cap = task_def.get("maxRetryDelaySeconds") or 0
    return min(delay, cap) if cap > 0 else delay


class Engine(SystemTasks, WorkflowOps):
    """The Conductor state machine. Every public method is thread-safe.

    Methods raise :class:`EngineError` subclasses for client errors; the HTTP layer maps them.
    ``http_allowed_hosts``: hosts HTTP tasks may call besides loopback ones (``"*"``: any).
    """

    def __init__(self, db_path: Optional[str] = None, sweep_interval: float = 0.5,
                 payload_limits: Optional[PayloadLimits] = None,
                 http_allowed_hosts: Iterable[str] = ()) -> None:
        self.http_allowed_hosts = tuple(host.lower() for host in http_allowed_hosts)
        self._scripts = Scripts()
        self._deciding: Set[str] = set()  # workflows being decided now (a child must not re-enter)
        self._lock = threading.RLock()
        self._store = _Store(db_path)
        self._sweep_interval = sweep_interval
        self._limits = payload_limits or PayloadLimits()
        self._queue_waiters: Dict[str, threading.Condition] = {}
        self._sweeper_wakeup = threading.Condition(self._lock)
        self._sweeper_next = 0.0  # epoch ms the sweeper sleeps until
        self._sweeper: Optional[threading.Thread] = None
        self._closed = False

    # Life cycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the sweeper thread."""
        self._sweeper = threading.Thread(target=self._sweep_loop, name="local-conductor-sweeper", daemon=True)
        self._sweeper.start()

    def wake_all(self) -> None:
        """Stop accepting long polls and release every waiting poller (used by shutdown)."""
        with self._lock:
            self._closed = True
            for condition in self._queue_waiters.values():
                condition.notify_all()
            self._sweeper_wakeup.notify_all()

    def close(self) -> None:
        """Stop the sweeper, wake every waiter and close the database."""
        self.wake_all()
        if self._sweeper is not None:
            self._sweeper.join()
            self._sweeper = None
        with self._lock:
            self._store.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[_Store]:
        with self._lock, self._store.transaction():
            yield self._store

    # Metadata: task definitions -------------------------------------------------------------
    def register_task_defs(self, raw: Any) -> None:
        if not isinstance(raw, list):
            raise BadRequest("Invalid request body: expected a JSON array of TaskDef")
        if not raw:
            raise ValidationFailed([_violation("registerTaskDef.taskDefinitions",
                                               "size must be between 1 and 2147483647")])
        task_defs = [normalise_task_def(item, "registerTaskDef.taskDefinitions[%d]" % index)
                     for index, item in enumerate(raw)]
        with self._tx() as store:
            for task_def in task_defs:
                existing = store.get_task_def(task_def["name"])
                task_def.setdefault("createTime", (existing or {}).get("createTime") or now_ms())
                if existing:
                    task_def["updateTime"] = now_ms()
                store.put_task_def(task_def)

    def update_task_def(self, raw: Any) -> None:
        task_def = normalise_task_def(raw, "updateTaskDef.taskDefinition")
        with self._tx() as store:
            existing = store.get_task_def(task_def["name"])
            if existing is None:
                raise NotFound("No such task by name %s" % task_def["name"])
            task_def["createTime"] = existing.get("createTime")
            task_def["updateTime"] = now_ms()
            store.put_task_def(task_def)

    def task_defs(self) -> List[JSON]:
        with self._tx() as store:
            return store.task_defs()

    def task_def(self, name: str) -> JSON:
        with self._tx() as store:
            task_def = store.get_task_def(name)
        if task_def is None:
            raise NotFound("No such taskType found by name: %s" % name)
        return task_def

    def delete_task_def(self, name: str) -> None:
        with self._tx() as store:
            if not store.delete_task_def(name):
                raise NotFound("No such task definition")

    # Metadata: workflow definitions ---------------------------------------------------------
    def create_workflow_def(self, raw: Any, overwrite: bool) -> None:
        wf_def = normalise_workflow_def(raw, "registerWorkflowDef.workflowDef")
        with self._tx() as store:
            existing = store.get_workflow_def(wf_def["name"], wf_def["version"])
            if existing is not None and not overwrite:
                raise Conflict("Workflow with %s.%d already exists!" % (wf_def["name"], wf_def["version"]))
            self._stamp(wf_def, existing)
            store.put_workflow_def(wf_def)

    def upsert_workflow_defs(self, raw: Any) -> JSON:
        """``PUT /api/metadata/workflow``: create or update each; returns a BulkResponse."""
        if not isinstance(raw, list):
            raise BadRequest("Invalid request body: expected a JSON array of WorkflowDef")
        wf_defs = [normalise_workflow_def(item, "updateWorkflowDef.workflowDefs[%d]" % index)
                   for index, item in enumerate(raw)]
        with self._tx() as store:
            for wf_def in wf_defs:
                self._stamp(wf_def, store.get_workflow_def(wf_def["name"], wf_def["version"]))
                store.put_workflow_def(wf_def)
        return {
            "bulkErrorResults": {},
            "bulkSuccessfulResults": [wf_def["name"] for wf_def in wf_defs],
            "message": "Bulk Request has been processed.",
        }

    @staticmethod
    def _stamp(wf_def: JSON, existing: Optional[JSON]) -> None:
        if existing is None:
            wf_def.setdefault("createTime", now_ms())
        else:
            wf_def["createTime"] = existing.get("createTime")
            wf_def["updateTime"] = now_ms()

    def workflow_def(self, name: str, version: Optional[int]) -> JSON:
        with self._tx() as store:
            wf_def = store.get_workflow_def(name, version)
        if wf_def is None:
            raise NotFound("No such workflow found by name: %s, version: %s" % (name, _java_str(version)))
        return wf_def

    def workflow_defs(self) -> List[JSON]:
        with self._tx() as store:
            return store.workflow_defs()

    def delete_workflow_def(self, name: str, version: int) -> None:
        with self._tx() as store:
            if not store.delete_workflow_def(name, version):
                raise NotFound("No such workflow definition: %s version: %d" % (name, version))

    # Workflows ------------------------------------------------------------------------------
    def start_workflow(self, request: Any) -> str:
        """Start a workflow from a StartWorkflowRequest document; return its id."""
        request = check_fields(request, START_REQUEST_FIELDS, "StartWorkflowRequest")
        if request.get("name") is None:
            raise ValidationFailed([_violation("startWorkflow.startWorkflowRequest.name",
                                               "Workflow name cannot be null or empty")])
        priority = request.get("priority") or 0
        check_priority(priority)
        task_to_domain = request.get("taskToDomain") or {}
        if not all(isinstance(value, str) for value in task_to_domain.values()):
            raise BadRequest("Invalid StartWorkflowRequest.taskToDomain: values must be strings")
        inline = request.get("workflowDef")
        inline_def = normalise_workflow_def(inline, "startWorkflow.workflowDef") if inline else None
        with self._tx() as store:
            wf_def = inline_def or store.get_workflow_def(request["name"], request.get("version"))
            if wf_def is None:
                raise NotFound("No such workflow found by name: %s, version: %s"
                               % (request["name"], _java_str(request.get("version"))))
            if "input" in request and request["input"] is None:  # checked after the lookup, as there
                raise BadRequest("NULL input passed when starting workflow")
            workflow = self._new_workflow(store, wf_def, request, priority, task_to_domain)
            self._externalize(workflow, WORKFLOW_PAYLOADS, self._limits.workflow_threshold)
            store.put_workflow(workflow, _workflow_deadline(workflow))
            self._decide(workflow, [])
            return workflow["workflowId"]

    def _new_workflow(self, store: _Store, wf_def: JSON, request: JSON, priority: int,
                      task_to_domain: Dict[str, str]) -> JSON:
        wf_def = copy.deepcopy(wf_def)
        for workflow_task in wf_def["tasks"]:
            self._attach_task_def(workflow_task)
        workflow_input = dict(request.get("input") or {})
        for key, value in (wf_def.get("inputTemplate") or {}).items():
            workflow_input.setdefault(key, value)
        now = now_ms()
        return {
            "createTime": now, "updateTime": now, "createdBy": request.get("createdBy"),
            "status": "RUNNING", "endTime": 0, "workflowId": new_id(), "input": workflow_input,
            "output": {}, "correlationId": request.get("correlationId"), "taskToDomain": task_to_domain,
            "failedReferenceTaskNames": [], "failedTaskNames": [], "workflowDefinition": wf_def,
            "priority": priority, "variables": copy.deepcopy(wf_def.get("variables") or {}),
            "lastRetriedTime": 0, "history": [], "idempotencyKey": request.get("idempotencyKey"),
            "rateLimited": False,
        }

    def get_workflow(self, workflow_id: str, include_tasks: bool = True) -> JSON:
        with self._tx() as store:
            workflow = self._load_workflow(store, workflow_id)
            tasks = store.workflow_tasks(workflow_id) if include_tasks else []
        return self._workflow_view(workflow, tasks)

    @staticmethod
    def _workflow_view(workflow: JSON, tasks: List[JSON]) -> JSON:
        view = _externalized(_strip_nulls(workflow), WORKFLOW_PAYLOADS)
        view["tasks"] = [task_view(task) for task in tasks]
        view["startTime"] = workflow["createTime"]
        view["workflowName"] = workflow["workflowDefinition"]["name"]
        view["workflowVersion"] = workflow["workflowDefinition"]["version"]
        return view

    @staticmethod
    def _load_workflow(store: _Store, workflow_id: str) -> JSON:
        workflow = store.get_workflow(workflow_id)
        if workflow is None:
            raise NotFound("No such workflow found by id: %s" % workflow_id)
        return workflow

    def terminate(self, workflow_id: str, reason: Optional[str]) -> None:
        with self._tx() as store:
            workflow = self._load_workflow(store, workflow_id)
            if workflow["status"] == "COMPLETED":
                raise Conflict("Cannot terminate a COMPLETED workflow.")
            if workflow["status"] == "TERMINATED":
                return
            tasks = store.workflow_tasks(workflow_id)
            self._end_workflow(workflow, tasks, "TERMINATED", reason, force_status=True)

    def pause(self, workflow_id: str) -> None:
        with self._tx() as store:
            workflow = self._load_workflow(store, workflow_id)
            if workflow["status"] in WORKFLOW_TERMINAL:
                raise Conflict("Workflow %s has ended, status cannot be updated." % _short(workflow))
            if workflow["status"] != "PAUSED":
                workflow["status"] = "PAUSED"
                self._save_workflow(workflow)

    def resume(self, workflow_id: str) -> None:
        with self._tx() as store:
            workflow = self._load_workflow(store, workflow_id)
            if workflow["status"] != "PAUSED":
                # conductor-oss answers 500 (IllegalStateException); a state conflict is a 409
                raise Conflict("The workflow %s is not PAUSED so cannot resume. Current status is %s"
                               % (workflow_id, workflow["status"]))
            workflow["status"] = "RUNNING"
            workflow["lastRetriedTime"] = now_ms()
            self._save_workflow(workflow)
            self._decide(workflow, store.workflow_tasks(workflow_id))

    def retry(self, workflow_id: str) -> None:
        """Reschedule the last unsuccessful attempt of every failed reference name."""
        with self._tx() as store:
            workflow = self._load_workflow(store, workflow_id)
            if workflow["status"] not in WORKFLOW_TERMINAL:
                raise NotFound("Workflow is still running.  status=%s" % workflow["status"])
            tasks = store.workflow_tasks(workflow_id)
            if not tasks:
                raise Conflict("Workflow has not started yet")
            retriable: Dict[str, JSON] = {}
            for task in tasks:
                if task["status"] in ("FAILED", "FAILED_WITH_TERMINAL_ERROR", "TIMED_OUT", "CANCELED"):
                    retriable[task["referenceTaskName"]] = task
                else:
                    retriable.pop(task["referenceTaskName"], None)
            if not retriable and workflow["status"] != "TIMED_OUT":
                raise Conflict("There are no retryable tasks! Use restart if you want to attempt "
                               "entire workflow execution again.")
            workflow.update(status="RUNNING", lastRetriedTime=now_ms(), reasonForIncompletion=None)
            self._save_workflow(workflow)
            for old in sorted(retriable.values(), key=lambda t: t["seq"]):
                new = self._copy_for_retry(workflow, tasks, old, delay=0)
                # taskToBeRescheduled: queued at once (callbackAfterSeconds 0), startDelay kept
                new["startDelayInSeconds"] = old.get("startDelayInSeconds") or 0
                old["retried"] = old["executed"] = True
                self._save_task(old)
                self._schedule(workflow, tasks, [new])
            self._decide(workflow, tasks)

    def restart(self, workflow_id: str, use_latest_definitions: bool = False) -> None:
        with self._tx() as store:
            workflow = self._load_workflow(store, workflow_id)
            if workflow["status"] not in WORKFLOW_TERMINAL:
                raise Conflict("Workflow: %s is not in terminal state, unable to restart." % _long(workflow))
            if use_latest_definitions:
                latest = store.get_workflow_def(workflow["workflowDefinition"]["name"], None)
                if latest is None:
                    raise NotFound("Unable to find latest definition for %s" % workflow_id)
                workflow["workflowDefinition"] = self._new_workflow(store, latest, {}, 0, {})[
                    "workflowDefinition"]
            restartable = workflow["workflowDefinition"].get("restartable", True)
            if not restartable and workflow["status"] == "COMPLETED":
                raise NotFound("Workflow: %s is non-restartable" % _long(workflow))
            store.delete_workflow_tasks(workflow_id)
            workflow.update(status="RUNNING", reasonForIncompletion=None, createTime=now_ms(), endTime=0,
                            lastRetriedTime=0, output={})
            self._save_workflow(workflow)
            self._decide(workflow, [])

    def remove(self, workflow_id: str, archive: bool = True) -> None:
        with self._tx() as store:
            workflow = self._load_workflow(store, workflow_id)
            if archive and workflow["status"] not in WORKFLOW_TERMINAL:
                raise BadRequest("Cannot archive workflow: %s with status: %s"
                                 % (workflow_id, workflow["status"]))
            store.delete_workflow(workflow_id)

    def running(self, name: str, version: int) -> List[str]:
        """Ids of the non-terminal workflows of ``name``.

        Like conductor-oss 3.32 (SQLite and Postgres stores), ``version`` is accepted but not used:
        every version's executions are listed.
        """
        with self._tx() as store:
            return store.pending_workflow_ids(name)

    # Tasks: poll ----------------------------------------------------------------------------
    def poll(self, task_type: str, worker_id: Optional[str], domain: Optional[str],
             count: int = 1, timeout_ms: int = 0) -> List[JSON]:
        """Batch poll: return when ``count`` tasks were taken or ``timeout_ms`` has passed."""
        queue = queue_name(task_type, domain)
        deadline = time.monotonic() + timeout_ms / 1000.0
        taken: List[JSON] = []
        with self._lock:
            condition = self._queue_waiters.get(queue)
            if condition is None:
                condition = self._queue_waiters[queue] = threading.Condition(self._lock)
            with self._store.transaction():
                self._store.put_poll_data(task_type, domain or "", worker_id, now_ms())
            while not self._closed:
                with self._store.transaction():
                    taken.extend(self._take(queue, count - len(taken), worker_id))
                remaining = deadline - time.monotonic()
                if len(taken) >= count or remaining <= 0:
                    break
                condition.wait(self._wait_for_queue(queue, remaining))
        return [task_view(task) for task in taken]

    def _wait_for_queue(self, queue: str, remaining: float) -> float:
        next_due = self._store.next_due(queue)
        if next_due is None:
            return remaining
        return max(0.0, min(remaining, (next_due - now_ms()) / 1000.0 + 0.001))

    def _take(self, queue: str, count: int, worker_id: Optional[str]) -> List[JSON]:
        taken = []
        for task_id in self._store.pop(queue, count, now_ms()):
            task = self._store.get_task(task_id)
            if task is None or task["status"] in TASK_TERMINAL:
                continue
            now = now_ms()
            task["status"] = "IN_PROGRESS"
            if not task.get("startTime"):
                task["startTime"] = now
            task["callbackAfterSeconds"] = 0
            task["workerId"] = worker_id
            task["pollCount"] = (task.get("pollCount") or 0) + 1
            self._save_task(task)
            taken.append(task)
        return taken

    # Tasks: update --------------------------------------------------------------------------
    def update_task(self, raw: Any) -> Optional[JSON]:
        """Apply a TaskResult. Returns the stored task, or None for an ``extendLease`` update."""
        result = check_task_result(raw)
        with self._tx() as store:
            if result.get("extendLease"):
                self._extend_lease(store, result["taskId"])
                return None
            workflow = self._load_workflow(store, result["workflowInstanceId"])
            task = store.get_task(result["taskId"])
            if task is None:
                raise NotFound("No such task found by id: %s" % result["taskId"])
            if task["workflowInstanceId"] != workflow["workflowId"]:
                # conductor-oss updates the task, re-decides the workflow the request named and leaves
                # the task's own workflow to its sweeper (~30 s later); deciding the right one now
                # gets to the same state without the wait
                workflow = self._load_workflow(store, task["workflowInstanceId"])
            if task["status"] in TASK_TERMINAL or workflow["status"] in WORKFLOW_TERMINAL:
                store.remove_from_queue(task["taskId"])
                log.debug("update of %s ignored: task %s, workflow %s", task["taskId"], task["status"],
                          workflow["status"])
                return task
            self._apply_result(task, result)
            for entry in result.get("logs") or []:
                store.add_log(task["taskId"], entry.get("log") or "", entry.get("createdTime") or now_ms())
            if task["status"] not in TASK_TERMINAL:
                return task
            tasks = store.workflow_tasks(workflow["workflowId"])
            self._decide(workflow, tasks)
            return task

    def _extend_lease(self, store: _Store, task_id: str) -> None:
        task = store.get_task(task_id)
        if task is None:
            raise NotFound("No such task found by id: %s" % task_id)
        if task["status"] not in TASK_TERMINAL:
            self._save_task(task)  # restarts the response-timeout clock (updateTime = now)

    def _apply_result(self, task: JSON, result: JSON) -> None:
        status = result.get("status") or "IN_PROGRESS"
        system = task["taskType"] in SYSTEM_TASK_TYPES  # only a worker's task goes back to its queue
        task["status"] = "SCHEDULED" if status == "IN_PROGRESS" and not system else status
        reason = result.get("reasonForIncompletion")
        task["reasonForIncompletion"] = reason[:500] if reason else reason
        task["workerId"] = result.get("workerId")
        callback = result.get("callbackAfterSeconds") or 0
        task["callbackAfterSeconds"] = callback
        task["outputData"] = result.get("outputData") or {}
        task["subWorkflowId"] = result.get("subWorkflowId")
        task.pop("externalOutputPayloadStoragePath", None)
        uploaded = result.get("externalOutputPayloadStoragePath")
        if uploaded and not task["outputData"]:  # the worker uploaded its output to our storage
            body = self._store.get_payload(uploaded)
            if body is None:
                raise BadRequest("No payload found in external storage at path: %s" % uploaded)
            task["outputData"] = json.loads(body)
            task["externalOutputPayloadStoragePath"] = uploaded
        size = len(_dumps(task["outputData"]).encode("utf-8")) if task["outputData"] else 0
        if size > self._limits.task_max:  # what ExternalPayloadStorageUtils.failTask does
            task["status"] = "FAILED_WITH_TERMINAL_ERROR"
            task["outputData"] = {}
            task["reasonForIncompletion"] = (
                "The payload size: %d of task: %s in workflow: %s  is greater than the permissible limit: %d bytes"
                % (size, task["taskId"], task["workflowInstanceId"], self._limits.task_max))
        if task["status"] in TASK_TERMINAL:
            self._store.remove_from_queue(task["taskId"])
            task["endTime"] = now_ms()
        elif not system:
            self._push(task, delay_ms=callback * 1000)
        self._save_task(task)

    def update_v2(self, raw: Any) -> Optional[JSON]:
        """``update-v2`` (3.32): update, then hand back the next task of that type if terminal."""
        task = self.update_task(raw)
        if task is None or task["status"] not in TASK_TERMINAL:
            return None
        polled = self.poll(task["taskType"], raw.get("workerId"), task.get("domain"), 1, 100)
        return polled[0] if polled else None

    def update_by_ref(self, workflow_id: str, ref_name: str, status: str, worker_id: Optional[str],
                      output: JSON) -> Optional[JSON]:
        """Update the first pending task with ``ref_name``; None when nothing is pending.

        An unknown workflow is "nothing pending" too: conductor-oss answers it with an empty 200.
        """
        with self._tx() as store:
            pending = self._pending_by_ref(store.workflow_tasks(workflow_id), ref_name)
            if pending is None:
                return None
            merged = dict(pending.get("outputData") or {})
            merged.update(output)
            result = {
                "workflowInstanceId": workflow_id, "taskId": pending["taskId"], "status": status,
                "reasonForIncompletion": pending.get("reasonForIncompletion"),
                "callbackAfterSeconds": pending.get("callbackAfterSeconds") or 0,
                "workerId": worker_id if worker_id and worker_id.strip() else pending.get("workerId"),
                "outputData": merged, "subWorkflowId": pending.get("subWorkflowId"),
            }
            return self.update_task(result)

    @staticmethod
    def _pending_by_ref(tasks: List[JSON], ref_name: str) -> Optional[JSON]:
        for task in tasks:
            if task["referenceTaskName"] == ref_name and task["status"] not in TASK_TERMINAL:
                return task
        stripped = re.sub(r"__\d+$", "", ref_name)  # DO_WHILE iteration suffix
        for task in tasks:
            same_ref = re.sub(r"__\d+$", "", task["referenceTaskName"]) == stripped
            if same_ref and task["status"] not in TASK_TERMINAL:
                return task
        return None

    # Tasks: queries and logs ----------------------------------------------------------------
    def get_task(self, task_id: str) -> JSON:
        with self._tx() as store:
            task = store.get_task(task_id)
        if task is None:
            raise NotFound("Task not found for taskId: %s" % task_id)
        return task_view(task)

    def add_log(self, task_id: str, text: str) -> None:
        with self._tx() as store:
            store.add_log(task_id, text, now_ms())

    def logs(self, task_id: str) -> List[JSON]:
        with self._tx() as store:
            return store.logs(task_id)

    def queue_sizes(self, task_types: Sequence[str]) -> Dict[str, int]:
        with self._tx() as store:
            return {task_type: store.queue_size(task_type) for task_type in task_types}

    def queue_size(self, task_type: str, domain: Optional[str]) -> int:
        with self._tx() as store:
            return store.queue_size(queue_name(task_type, domain))

    def all_queue_sizes(self) -> Dict[str, int]:
        with self._tx() as store:
            return store.queue_sizes()

    def poll_data(self, task_type: Optional[str]) -> List[JSON]:
        with self._tx() as store:
            rows = store.poll_data(task_type)
        return [_strip_nulls({"queueName": name, "domain": domain or None, "workerId": worker,
                              "lastPollTime": when}) for name, domain, worker, when in rows]

    # Persistence helpers --------------------------------------------------------------------
    def _save_task(self, task: JSON) -> None:
        """Persist ``task`` the way ExecutionDAOFacade.updateTask does (updateTime / endTime)."""
        now = now_ms()
        terminal = task["status"] in TASK_TERMINAL
        if not terminal or not task.get("updateTime"):
            task["updateTime"] = now
        if terminal and not task.get("endTime"):
            task["endTime"] = now
        self._persist_task(task)

    def _externalize(self, entity: JSON, fields: Sequence[Tuple[str, str]], threshold: int) -> None:
        """Move payloads above ``threshold`` bytes to the payload store (the entity keeps its copy)."""
        for data_field, path_field in fields:
            data = entity.get(data_field)
            if not data:
                continue
            body = _dumps(data)
            if len(body) <= threshold:  # ASCII: json.dumps escapes the rest
                entity.pop(path_field, None)
                continue
            existing = entity.get(path_field)
            if existing and self._store.get_payload(existing) == body:
                continue  # already stored there (e.g. a worker's upload): keep its path
            key = hashlib.sha256(body.encode("utf-8")).hexdigest() + ".hashed.json"
            self._store.put_payload(key, body)
            entity[path_field] = key

    def store_payload(self, key: str, payload: Any) -> None:
        """Keep an uploaded payload (``PUT /api/external/local/{key}``): a JSON object."""
        if not isinstance(payload, dict):
            raise BadRequest("An external payload must be a JSON object")
        with self._tx() as store:
            store.put_payload(key, _dumps(payload))

    def payload(self, key: str) -> JSON:
        with self._tx() as store:
            body = store.get_payload(key)
        if body is None:
            raise NotFound("No payload found in external storage at path: %s" % key)
        return json.loads(body)

    def _persist_task(self, task: JSON) -> None:
        self._externalize(task, TASK_PAYLOADS, self._limits.task_threshold)
        deadline = _task_deadline(task)
        self._store.put_task(task, deadline)
        if deadline is not None and deadline < self._sweeper_next:
            self._sweeper_wakeup.notify()

    def _save_workflow(self, workflow: JSON) -> None:
        self._externalize(workflow, WORKFLOW_PAYLOADS, self._limits.workflow_threshold)
        workflow["updateTime"] = now_ms()
        if workflow["status"] in WORKFLOW_TERMINAL:
            workflow["endTime"] = now_ms()
        deadline = _workflow_deadline(workflow)
        self._store.put_workflow(workflow, deadline)
        if deadline is not None and deadline < self._sweeper_next:
            self._sweeper_wakeup.notify()

    def _push(self, task: JSON, delay_ms: int) -> None:
        queue = queue_name(task["taskType"], task.get("domain"))
        self._store.push(task["taskId"], queue, task.get("workflowPriority") or 0, now_ms() + delay_ms)
        condition = self._queue_waiters.get(queue)
        if condition is not None:
            condition.notify_all()

    # The decider ----------------------------------------------------------------------------
    def _decide(self, workflow: JSON, tasks: List[JSON]) -> None:
        """Advance ``workflow`` (DeciderService.decide, then the system tasks, until it settles)."""
        workflow_id = workflow["workflowId"]
        if workflow["status"] in WORKFLOW_TERMINAL or workflow_id in self._deciding:
            return
        self._deciding.add(workflow_id)
        try:
            self._check_workflow_timeout(workflow)
            if workflow["status"] == "PAUSED":
                return
            for _ in range(MAX_DECIDE_ROUNDS):
                stored = {task["taskId"]: copy.deepcopy(task) for task in tasks if _is_pending(task)}
                to_schedule = self._evaluate_pending(workflow, tasks)
                if not to_schedule and self._is_complete(workflow, tasks):
                    self._complete(workflow, tasks)
                    self._keep_stored(stored, tasks)
                    return
                scheduled = self._schedule(workflow, tasks, to_schedule)
                if not self._run_system_tasks(workflow, tasks) and not scheduled:
                    return
            raise _Terminate("LocalConductor stopped deciding this workflow after %d rounds without a task for "
                             "a worker (an endless loop of system tasks?)" % MAX_DECIDE_ROUNDS)
        except _Terminate as stop:
            if stop.task is not None:
                self._save_task(stop.task)
            self._end_workflow(workflow, tasks, stop.status, stop.reason, output=stop.output)
        finally:
            self._deciding.discard(workflow_id)

    def _keep_stored(self, stored: Dict[str, JSON], tasks: List[JSON]) -> None:
        """Undo what the completing decide changed in its tasks' stored state, as conductor-oss does.

        Its WorkflowExecutorOps.decide completes the workflow and returns before it saves the
        decider's task updates: a failed optional last task stays FAILED (not COMPLETED_WITH_ERRORS)
        and the last task stays ``executed: false`` (measured on 3.32.1). The output and the failed
        task lists were computed from the decided tasks, as there.
        """
        for task in tasks:
            before = stored.get(task["taskId"])
            if before is not None and before != task:
                self._persist_task(before)

    def _evaluate_pending(self, workflow: JSON, tasks: List[JSON]) -> List[JSON]:
        executed_refs = {task["referenceTaskName"] for task in tasks if task.get("executed")}
        to_schedule: Dict[str, JSON] = {}
        for task in [t for t in tasks if _is_pending(t)]:
            changed = self._check_task_timeouts(task)
            if task["status"] in TASK_TERMINAL and task["status"] not in TASK_SUCCESSFUL:
                retry = self._retry(workflow, tasks, task)
                changed = True
                if retry is not None:
                    to_schedule[retry["referenceTaskName"]] = retry
                    executed_refs.discard(retry["referenceTaskName"])
                elif task["workflowTask"].get("optional"):
                    task["status"] = "COMPLETED_WITH_ERRORS"
            if not task.get("executed") and not task.get("retried") and task["status"] in TASK_TERMINAL:
                task["executed"] = True
                changed = True
                for following in self._next_tasks(workflow, tasks, task):
                    to_schedule.setdefault(following["referenceTaskName"], following)
            if changed:
                self._save_task(task)
        if not tasks:
            first = workflow["workflowDefinition"]["tasks"][0]
            for new in self._tasks_for(workflow, tasks, first):
                to_schedule.setdefault(new["referenceTaskName"], new)
        return [task for ref, task in to_schedule.items() if ref not in executed_refs]

    def _next_tasks(self, workflow: JSON, tasks: List[JSON], task: JSON) -> List[JSON]:
        """DeciderService.getNextTask: what follows ``task`` (a case, a branch, a loop: see _definitions)."""
        if task["taskType"] in ("SWITCH", "DECISION") and task["inputData"].get("hasChildren") is not None:
            return []  # its branch is running: the branch's last task leads on
        definition = workflow["workflowDefinition"]["tasks"]
        in_loop = bool(task.get("iteration")) and task["taskType"] != "DO_WHILE"
        ref = strip_iteration(task["referenceTaskName"]) if in_loop else task["referenceTaskName"]
        following = next_task(definition, ref)
        skipped = {t["referenceTaskName"] for t in tasks if t["status"] == "SKIPPED"}
        while following is not None and following["taskReferenceName"] in skipped:
            following = next_task(definition, following["taskReferenceName"])
        if following is None:
            return []
        if following.get("type") == "DO_WHILE" and any(
                t["referenceTaskName"] == following["taskReferenceName"] for t in tasks):
            return []  # the end of a loop's body: the DO_WHILE decides (see _run_do_while)
        return self._tasks_for(workflow, tasks, following, task.get("iteration") or 0 if in_loop else 0)

    @staticmethod
    def _next_workflow_task(workflow: JSON, ref_name: str) -> Optional[JSON]:
        return next_task(workflow["workflowDefinition"]["tasks"], strip_iteration(ref_name))

    def _check_task_timeouts(self, task: JSON) -> bool:
        """Apply timeoutSeconds, pollTimeoutSeconds and responseTimeoutSeconds; True if changed."""
        if task["status"] in TASK_TERMINAL:
            return False
        task_def = _task_def_of(task)
        now = now_ms()
        start_delay_ms = (task.get("startDelayInSeconds") or 0) * 1000
        callback_ms = (task.get("callbackAfterSeconds") or 0) * 1000
        timeout = task_def.get("timeoutSeconds") or 0
        if timeout > 0 and (task.get("startTime") or 0) > 0:
            elapsed = now - (task["startTime"] + start_delay_ms)
            if elapsed >= timeout * 1000:
                reason = ("Task timed out after %d seconds. Timeout configured as %d seconds. "
                          "Timeout policy configured to %s"
                          % (elapsed // 1000, timeout, task_def["timeoutPolicy"]))
                if self._timeout_with_policy(task, task_def, reason):
                    return True
        poll_timeout = task_def.get("pollTimeoutSeconds") or 0
        if poll_timeout > 0 and task["status"] == "SCHEDULED":
            elapsed = now - (task["scheduledTime"] + start_delay_ms)
            if elapsed >= poll_timeout * 1000 + callback_ms:
                reason = ("Task poll timed out after %d seconds. Poll timeout configured as %d seconds. "
                          "Timeout policy configured to %s"
                          % (elapsed // 1000, poll_timeout, task_def["timeoutPolicy"]))
                if self._timeout_with_policy(task, task_def, reason):
                    return True
        rto = task_def.get("responseTimeoutSeconds") or 0
        silent_ms = now - task["updateTime"]
        if task["status"] == "IN_PROGRESS" and rto > 0 and silent_ms >= rto * 1000 + callback_ms:
            task["status"] = "TIMED_OUT"
            task["reasonForIncompletion"] = ("responseTimeout: %d exceeded for the taskId: %s with Task "
                                             "Definition: %s" % (rto, task["taskId"], task["taskDefName"]))
            return True
        return False

    @staticmethod
    def _timeout_with_policy(task: JSON, task_def: JSON, reason: str) -> bool:
        policy = task_def.get("timeoutPolicy") or "TIME_OUT_WF"
        if policy == "ALERT_ONLY":
            log.info("%s", reason)
            return False
        task["status"] = "TIMED_OUT"
        task["reasonForIncompletion"] = reason
        if policy == "TIME_OUT_WF":
            raise _Terminate(reason, "TIMED_OUT", task)
        return True

    def _retry(self, workflow: JSON, tasks: List[JSON], task: JSON) -> Optional[JSON]:
        """DeciderService.retry: a new attempt, None (optional task), or _Terminate."""
        task_def = _task_def_of(task)
        workflow_task = task["workflowTask"]
        expected = workflow_task.get("retryCount")
        if expected is None:
            expected = task_def.get("retryCount", 3)
        if task["taskType"] in BUILT_IN_TYPES:
            expected = 0
        if task["status"] not in TASK_RETRIABLE or expected <= task["retryCount"]:
            if workflow_task.get("optional") or workflow_task.get("permissive"):
                return None
            status = {"CANCELED": "TERMINATED", "TIMED_OUT": "TIMED_OUT"}.get(task["status"], "FAILED")
            raise _Terminate("Task %s failed with status: %s and reason: '%s'"
                             % (task["taskId"], status, _java_str(task.get("reasonForIncompletion"))),
                             status, task)
        delay_ms = _retry_delay_seconds(task_def, task["retryCount"]) * 1000
        jitter = task_def.get("backoffJitterMs") or 0
        if jitter > 0:
            delay_ms += random.randint(0, jitter)
        task["retried"] = True
        retry = self._copy_for_retry(workflow, tasks, task, delay=delay_ms // 1000)
        retry["reasonForIncompletion"] = task.get("reasonForIncompletion")
        retry["_delayMs"] = delay_ms
        return retry

    def _copy_for_retry(self, workflow: JSON, tasks: List[JSON], task: JSON, delay: int) -> JSON:
        retry = copy.deepcopy(task)
        retry.update(
            taskId=new_id(), retriedTaskId=task["taskId"], status="SCHEDULED",
            retryCount=task["retryCount"] + 1, retried=False, executed=False, pollCount=0,
            seq=0, scheduledTime=0, startTime=0, endTime=0, updateTime=0, workerId=None,
            outputData={}, reasonForIncompletion=None, subWorkflowId=None,
            startDelayInSeconds=delay, callbackAfterSeconds=delay,
        )
        document = expression_document(workflow, tasks)
        retry["inputData"].update(resolve_task_input(task["workflowTask"], _task_def_of(task), document))
        return retry

    def _new_task(self, workflow: JSON, tasks: List[JSON], workflow_task: JSON) -> JSON:
        """SimpleTaskMapper: a SCHEDULED task for ``workflow_task`` (not yet persisted)."""
        task_def = workflow_task.get("taskDefinition") or dict(TASK_DEF_DEFAULTS, name=workflow_task["name"])
        task_input = resolve_task_input(workflow_task, task_def, expression_document(workflow, tasks))
        start_delay = workflow_task.get("startDelay") or 0
        return {
            "taskType": workflow_task["name"], "status": "SCHEDULED", "inputData": task_input,
            "referenceTaskName": workflow_task["taskReferenceName"], "retryCount": 0, "seq": 0,
            "correlationId": workflow.get("correlationId"), "pollCount": 0,
            "taskDefName": workflow_task["name"], "scheduledTime": 0, "startTime": 0, "endTime": 0,
            "updateTime": 0, "startDelayInSeconds": start_delay, "retried": False, "executed": False,
            "callbackFromWorker": True, "responseTimeoutSeconds": task_def.get("responseTimeoutSeconds"),
            "workflowInstanceId": workflow["workflowId"],
            "workflowType": workflow["workflowDefinition"]["name"],
            "taskId": new_id(), "callbackAfterSeconds": start_delay, "outputData": {},
            "workflowTask": workflow_task, "rateLimitPerFrequency": task_def.get("rateLimitPerFrequency", 0),
            "rateLimitFrequencyInSeconds": task_def.get("rateLimitFrequencyInSeconds", 1),
            "workflowPriority": workflow.get("priority") or 0, "iteration": 0, "subworkflowChanged": False,
            "firstStartTime": 0, "isolationGroupId": task_def.get("isolationGroupId"),
            "executionNameSpace": task_def.get("executionNameSpace"),
            "domain": self._domain_for(workflow, workflow_task["name"]),
        }

    def _domain_for(self, workflow: JSON, task_type: str) -> Optional[str]:
        """WorkflowExecutor.getActiveDomain: first domain polled in the last 10 s, else the last."""
        mapping = workflow.get("taskToDomain") or {}
        value = mapping.get(task_type) or mapping.get("*")
        if not value:
            return None
        domains = [domain.strip() for domain in value.split(",") if domain.strip()]
        if not domains:
            return None
        recent = {domain: when for _, domain, _, when in self._store.poll_data(task_type)}
        for domain in domains:
            if domain == "NO_DOMAIN":
                return None
            if now_ms() - recent.get(domain, 0) <= ACTIVE_DOMAIN_WINDOW_MS:
                return domain
        last = domains[-1]
        return None if last == "NO_DOMAIN" else last

    def _schedule(self, workflow: JSON, tasks: List[JSON], new_tasks: List[JSON]) -> bool:
        """Persist and enqueue ``new_tasks`` (deduplicated on refName + retryCount); True if any was new."""
        existing = {(task["referenceTaskName"], task["retryCount"]) for task in tasks}
        seq = max((task["seq"] for task in tasks), default=0)
        scheduled = False
        for task in new_tasks:
            if (task["referenceTaskName"], task["retryCount"]) in existing:
                continue
            seq += 1
            delay_ms = task.pop("_delayMs", (task.get("callbackAfterSeconds") or 0) * 1000)
            task["seq"] = seq
            task["scheduledTime"] = now_ms()
            system = task["taskType"] in SYSTEM_TASK_TYPES
            if system and not task.get("startTime"):
                task["startTime"] = task["scheduledTime"]  # the server starts them itself
            if task["status"] in TASK_TERMINAL and not task.get("endTime"):
                task["endTime"] = task["scheduledTime"]
            self._persist_task(task)
            if not system:
                self._push(task, delay_ms)
            tasks.append(task)
            scheduled = True
        if scheduled:
            self._save_workflow(workflow)
        return scheduled

    def _is_complete(self, workflow: JSON, tasks: List[JSON]) -> bool:
        """DeciderService.checkForWorkflowCompletion: every top-level task done, nothing left to run."""
        if not tasks or any(task["status"] not in TASK_TERMINAL for task in tasks):
            return False
        status_by_ref = {strip_iteration(task["referenceTaskName"]) if task.get("iteration") else
                         task["referenceTaskName"]: task["status"] for task in tasks}
        for workflow_task in workflow["workflowDefinition"]["tasks"]:
            if workflow_task["taskReferenceName"] not in status_by_ref:
                return False
        for task in tasks:
            if task["taskType"] in ("SWITCH", "DECISION") and task["inputData"].get("hasChildren") is not None:
                continue
            if not task.get("retried") or not task.get("executed"):
                following = self._next_workflow_task(workflow, task["referenceTaskName"])
                if following is not None and following["taskReferenceName"] not in status_by_ref:
                    return False
        return True

    def _workflow_output(self, workflow: JSON, tasks: List[JSON]) -> JSON:
        output_parameters = workflow["workflowDefinition"].get("outputParameters") or {}
        if output_parameters:
            return resolve(output_parameters, expression_document(workflow, tasks))
        return copy.deepcopy(tasks[-1].get("outputData") or {}) if tasks else workflow.get("output") or {}

    def _record_failed_tasks(self, workflow: JSON, tasks: List[JSON]) -> None:
        failed = [task for task in tasks if task["status"] in ("FAILED", "FAILED_WITH_TERMINAL_ERROR")]
        refs = set(workflow.get("failedReferenceTaskNames") or [])
        names = set(workflow.get("failedTaskNames") or [])
        refs.update(task["referenceTaskName"] for task in failed)
        names.update(task["taskDefName"] for task in failed)
        workflow["failedReferenceTaskNames"] = sorted(refs)
        workflow["failedTaskNames"] = sorted(names)

    def _complete(self, workflow: JSON, tasks: List[JSON]) -> None:
        workflow["output"] = self._workflow_output(workflow, tasks)
        workflow["status"] = "COMPLETED"
        self._record_failed_tasks(workflow, tasks)
        self._save_workflow(workflow)
        self._notify_parent(workflow)

    def _end_workflow(self, workflow: JSON, tasks: List[JSON], status: str, reason: Optional[str],
                      force_status: bool = False, output: Optional[JSON] = None) -> None:
        """terminateWorkflow: set status and reason, compute output, cancel pending tasks."""
        if force_status or workflow["status"] not in WORKFLOW_TERMINAL:
            workflow["status"] = status
        workflow["output"] = self._workflow_output(workflow, tasks) if output is None else output
        self._record_failed_tasks(workflow, tasks)
        workflow["reasonForIncompletion"] = reason
        for task in tasks:
            self._store.remove_from_queue(task["taskId"])
            if task["status"] not in TASK_TERMINAL:
                task["status"] = "CANCELED"
                self._save_task(task)
        self._save_workflow(workflow)
        self._cancel_children(tasks, workflow["status"], reason)
        self._notify_parent(workflow)

    def _check_workflow_timeout(self, workflow: JSON) -> None:
        deadline = _workflow_deadline(workflow)
        if deadline is None or now_ms() < deadline:
            return
        wf_def = workflow["workflowDefinition"]
        elapsed = now_ms() - (workflow.get("lastRetriedTime") or workflow["createTime"])
        raise _Terminate("Workflow timed out after %d seconds. Timeout configured as %d seconds. "
                         "Timeout policy configured to %s"
                         % (elapsed // 1000, wf_def["timeoutSeconds"], wf_def["timeoutPolicy"]), "TIMED_OUT")

    # The sweeper ----------------------------------------------------------------------------
    def _sweep_loop(self) -> None:
        """Enforce timeouts: wake at the next deadline (at most every ``sweep_interval``)."""
        with self._lock:
            while not self._closed:
                clean = self._sweep_once()
                next_deadline = self._store.next_deadline() if clean else None
                wait = self._sweep_interval
                if next_deadline is not None:
                    wait = max(0.0, min(wait, (next_deadline - now_ms()) / 1000.0 + 0.001))
                self._sweeper_next = now_ms() + wait * 1000
                self._sweeper_wakeup.wait(wait)
                self._sweeper_next = 0.0

    def _sweep_once(self) -> bool:
        """Decide every workflow with a passed deadline; False if one of them failed."""
        clean = True
        for workflow_id in self._store.due_workflow_ids(now_ms()):
            try:
                with self._store.transaction():
                    workflow = self._store.get_workflow(workflow_id)
                    if workflow is not None:
                        log.debug("sweeper deciding %s", workflow_id)
                        self._decide(workflow, self._store.workflow_tasks(workflow_id))
            except Exception:  # keep the sweeper alive whatever one workflow does
                log.exception("sweeper failed to decide workflow %s", workflow_id)
                clean = False
        return clean

    def sweep(self) -> None:
        """Run one sweep now (tests and tools)."""
        with self._lock:
            self._sweep_once()


def _is_pending(task: JSON) -> bool:
    """Still part of the decider's work: not retried, not executed, not skipped."""
    return not task.get("retried") and not task.get("executed") and task["status"] != "SKIPPED"


def _short(workflow: JSON) -> str:
    wf_def = workflow["workflowDefinition"]
    return "%s.%s/%s" % (wf_def["name"], wf_def["version"], workflow["workflowId"])


def _long(workflow: JSON) -> str:
    return "%s.%s" % (_short(workflow), workflow["status"])


def _java_str(value: Any) -> str:
    """``String.valueOf`` as Java prints it (``null`` for None)."""
    return "null" if value is None else str(value)


__all__ = ["Engine", "EngineError", "BadRequest", "NotFound", "Conflict", "ValidationFailed",
           "check_fields", "resolve", "lookup_path", "now_ms"]
