"""Expression resolution: ``${workflow.input.x}`` and ``${ref.output.y[0]}`` in task inputs and
workflow outputs, resolved against the document that a workflow and its tasks make
(conductor-oss's ParametersUtils)."""

from __future__ import annotations

import copy
import json
import re
from typing import Any, Optional, Sequence, Tuple

from .model import JSON
from .task_list import TaskList, as_task_list

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
            if not isinstance(current, (dict, ExpressionDocument)):
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


def resolve(value: Any, document: Any) -> Any:
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


def resolve_task_input(workflow_task: JSON, task_def: JSON, document: Any) -> JSON:
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


class ExpressionDocument:
    """The document ``${...}`` expressions are evaluated against (see ParametersUtils): the
    ``workflow`` entry and one entry per task reference name (the latest attempt of a name wins; a
    DO_WHILE's task also answers to its name without ``__N``).

    Entries are looked up when an expression names them, through the tasks' index: a document
    costs nothing to make, whatever the number of tasks. ``created`` are tasks being made in the
    same step (not yet scheduled); they come after ``tasks``.
    """

    def __init__(self, workflow: JSON, tasks: Sequence[JSON] = (), created: Sequence[JSON] = ()) -> None:
        self._workflow = workflow
        self._tasks = tasks
        self._created = created
        self._indexes: Optional[Tuple[TaskList, TaskList]] = None

    def get(self, name: str, default: Any = None) -> Any:
        task = self._task(name)
        if task is not None:
            entry = {field: task.get(field) for field in _TASK_CONTEXT_FIELDS}
            entry["input"] = task.get("inputData") or {}
            entry["output"] = task.get("outputData") or {}
            return entry
        if name == "workflow":
            return self._workflow_entry()
        return default

    def _task(self, name: str) -> Optional[JSON]:
        if self._indexes is None:
            self._indexes = (_indexed(self._tasks), _indexed(self._created))
        stored, created = (index.latest(name) for index in self._indexes)
        if created is not None and (stored is None or (created.get("seq") or 0) >= (stored.get("seq") or 0)):
            return created
        return stored

    def _workflow_entry(self) -> JSON:
        workflow = self._workflow
        wf_def = workflow.get("workflowDefinition") or {}
        return {
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


def _indexed(tasks: Sequence[JSON]) -> TaskList:
    return as_task_list(tasks if isinstance(tasks, list) else list(tasks))


def expression_document(workflow: JSON, tasks: Sequence[JSON] = (), created: Sequence[JSON] = ()) -> ExpressionDocument:
    """The document ``${...}`` expressions in ``workflow`` are evaluated against (see :class:`ExpressionDocument`)."""
    return ExpressionDocument(workflow, tasks, created)
