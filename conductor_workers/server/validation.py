"""Validation and normalisation of what clients send: a TaskDef, a WorkflowDef and its tasks
(conductor-oss's bean-validation rules, undefined references, the script engines a definition
needs; any task type string is accepted, as there), a TaskResult and a priority. The normalisers return the document with
every default filled in; violations raise :class:`~.errors.ValidationFailed` or
:class:`~.errors.BadRequest`."""

from __future__ import annotations

import re
from typing import Any, Iterator, List, Optional, Set, Tuple

from .definitions import walk
from .errors import BadRequest, ValidationFailed, _violation
from .fields import (
    TASK_DEF_DEFAULTS,
    TASK_DEF_FIELDS,
    TASK_RESULT_FIELDS,
    WORKFLOW_DEF_DEFAULTS,
    WORKFLOW_DEF_FIELDS,
    WORKFLOW_TASK_DEFAULTS,
    WORKFLOW_TASK_FIELDS,
    _with_defaults,
    check_fields,
)
from .model import JSON
from .scripts import constant, missing_engine


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
    elif kind == "EVENT" and task.get("sink") is None:
        errors.append(_violation(path, "sink field is required for taskType: EVENT taskName: %s" % task.get("name")))
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
