"""What the API clients of :mod:`conductor_workers.client` share.

The ``_Api`` base (an HTTP transport and the external payload store), ``StatusLike`` (a task result
status or its name), path-segment quoting (``_seg``), the strict parsing of task answers (``_task`` for
one task, ``_tasks`` for a poll, which skips malformed items and logs them), and the download of
inputs and outputs the server moved to external storage (``_with_external_task`` /
``_with_external_workflow``). Logs under ``conductor_workers.client``, as it always has.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Union
from urllib.parse import quote

import attrs

from ._http import HttpTransport
from .errors import InvalidResponseError
from .models import Task, TaskResultStatus, Workflow
from .payloads import TASK_INPUT, TASK_OUTPUT, WORKFLOW_INPUT, WORKFLOW_OUTPUT, PayloadStore

log = logging.getLogger("conductor_workers.client")  # the documented logger of the client

StatusLike = Union[TaskResultStatus, str]


def _seg(value: str) -> str:
    """Quote one path segment (task types and names may contain characters such as ':')."""
    return quote(str(value), safe="")


# The fields a runner relies on, with the JSON types they must have when present.
_TASK_FIELD_TYPES = (
    ("taskId", str),
    ("workflowInstanceId", str),
    ("status", str),
    ("inputData", dict),
    ("responseTimeoutSeconds", int),
)


def _task(data: Any, what: str) -> Task:
    """A Task from a server answer; anything that is not a task object is an InvalidResponseError."""
    if isinstance(data, dict):
        wrong = [
            f"{key}={data[key]!r}"
            for key, kind in _TASK_FIELD_TYPES
            if data.get(key) is not None and (not isinstance(data[key], kind) or isinstance(data[key], bool))
        ]
        try:
            if not wrong:
                return Task.from_json(data)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            wrong.append(f"{type(exc).__name__}: {exc}")
        problem = "a task with fields of the wrong type (" + ", ".join(wrong)[:300] + ")"
    else:
        problem = f"{type(data).__name__} {_preview(data)} where a task object belongs"
    raise InvalidResponseError(f"{what}: the server answered with {problem}", status_code=200, body=_preview(data))


def _tasks(data: Any, what: str) -> List[Task]:
    """The tasks of a poll answer. Malformed items are logged and skipped (the good ones are already
    dequeued for us on the server, so they are kept); an answer with no good item at all raises."""
    if not data:
        return []
    if not isinstance(data, list):
        raise InvalidResponseError(
            f"{what}: expected a JSON list of tasks, got {type(data).__name__} {_preview(data)}",
            status_code=200,
            body=_preview(data),
        )
    tasks: List[Task] = []
    errors: List[InvalidResponseError] = []
    for item in data:
        try:
            tasks.append(_task(item, what))
        except InvalidResponseError as exc:
            errors.append(exc)
    if errors and not tasks:
        raise errors[0]
    for error in errors:
        log.warning("%s; skipped that item, kept %d good task(s)", error, len(tasks))
    return tasks


def _preview(data: Any) -> str:
    text = repr(data)
    return text if len(text) <= 120 else text[:117] + "..."


class _Api:
    __slots__ = ("_http", "_payloads")

    def __init__(self, transport: HttpTransport, payloads: Optional[PayloadStore] = None) -> None:
        self._http = transport
        self._payloads = payloads if payloads is not None else PayloadStore(transport)


def _with_external_task(task: Task, store: PayloadStore) -> Task:
    changes: Dict[str, Any] = {}
    if task.external_input_payload_storage_path and not task.input_data:
        changes["input_data"] = store.read(task.external_input_payload_storage_path, TASK_INPUT)
    if task.external_output_payload_storage_path and not task.output_data:
        changes["output_data"] = store.read(task.external_output_payload_storage_path, TASK_OUTPUT)
    return attrs.evolve(task, **changes) if changes else task


def _with_external_workflow(workflow: Workflow, store: PayloadStore) -> Workflow:
    changes: Dict[str, Any] = {}
    if workflow.external_input_payload_storage_path and not workflow.input:
        changes["input"] = store.read(workflow.external_input_payload_storage_path, WORKFLOW_INPUT)
    if workflow.external_output_payload_storage_path and not workflow.output:
        changes["output"] = store.read(workflow.external_output_payload_storage_path, WORKFLOW_OUTPUT)
    if any(t.external_input_payload_storage_path or t.external_output_payload_storage_path for t in workflow.tasks):
        changes["tasks"] = [_with_external_task(task, store) for task in workflow.tasks]
    return attrs.evolve(workflow, **changes) if changes else workflow
