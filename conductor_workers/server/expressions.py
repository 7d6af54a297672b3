"""Expression resolution: ``${workflow.input.x}`` and ``${ref.output.y[0]}`` in task inputs and
workflow outputs, resolved against the document that a workflow and its tasks make
(conductor-oss's ParametersUtils)."""

from __future__ import annotations

import copy
import json
import re
from typing import Any, Sequence

from .definitions import strip_iteration
from .model import JSON

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
