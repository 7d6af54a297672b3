"""``ConductorClient``: hand-written methods for the task, workflow and metadata REST APIs.

Each method is one endpoint; the URL, its parameters and what the answer means (including the
differences between server versions, see the README's compatibility table) are handled here so that
callers only see models and :mod:`conductor_workers.errors`.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union
from urllib.parse import quote

import attrs

from ._http import HttpTransport
from .config import Configuration
from .errors import InvalidResponseError, NotFoundError
from .models import (
    PollData,
    SignalResponse,
    StartWorkflowRequest,
    Task,
    TaskDef,
    TaskExecLog,
    TaskResult,
    TaskResultStatus,
    Workflow,
    WorkflowDef,
    WorkflowStatusSummary,
)
from .payloads import TASK_INPUT, TASK_OUTPUT, WORKFLOW_INPUT, WORKFLOW_OUTPUT, PayloadStore

log = logging.getLogger(__name__)

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


class TaskClient(_Api):
    """``/api/tasks``: poll, update, inspect and log tasks."""

    __slots__ = ()

    def poll(self, task_type: str, *, worker_id: Optional[str] = None, domain: Optional[str] = None) -> Optional[Task]:
        """One task of ``task_type``, or None when none is queued."""
        data = self._http.call_json(
            "GET", f"tasks/poll/{_seg(task_type)}", params={"workerid": worker_id, "domain": domain}, send_once=True
        )
        return _task(data, f"GET tasks/poll/{task_type}") if data else None

    def batch_poll(
        self,
        task_type: str,
        count: int = 1,
        timeout_ms: int = 100,
        worker_id: Optional[str] = None,
        domain: Optional[str] = None,
    ) -> List[Task]:
        """Up to ``count`` tasks; the server answers when it has ``count`` or after ``timeout_ms``.

        An empty queue gives ``[]`` whether the server says ``204`` (≤ 3.21.19) or ``200 []``. A poll
        is never re-sent once it may have reached the server (the server may already have handed
        out tasks for it); an answer that is not a list of task objects is an InvalidResponseError.
        """
        params = {"count": count, "timeout": timeout_ms, "workerid": worker_id, "domain": domain}
        data = self._http.call_json(
            "GET",
            f"tasks/poll/batch/{_seg(task_type)}",
            params=params,
            extra_read_timeout=timeout_ms / 1000.0,
            send_once=True,
        )
        return _tasks(data, f"GET tasks/poll/batch/{task_type}")

    def update_task(self, result: TaskResult) -> str:
        """Report a result; returns the task id (also when the server ignored a late update)."""
        return self._http.call_text("POST", "tasks", json_body=result.to_json())

    def update_task_v2(self, result: TaskResult) -> Optional[Task]:
        """Report a result and receive the next task of the same type and domain (or None).

        Raises :class:`~conductor_workers.errors.EndpointNotSupportedError` on servers older than
        3.21.12, which lack the endpoint; use :meth:`update_task` there.
        """
        data = self._http.call_json("POST", "tasks/update-v2", json_body=result.to_json())
        return _task(data, "POST tasks/update-v2") if data else None

    def update_task_by_ref_name(
        self,
        *,
        workflow_id: str,
        ref_name: str,
        status: StatusLike,
        output: Optional[Mapping[str, Any]] = None,
        worker_id: Optional[str] = None,
    ) -> str:
        """Update the pending task ``ref_name`` of a workflow; ``output`` is merged into its output.

        The server answers an empty 200 when no such task is pending; that raises
        :class:`~conductor_workers.errors.NotFoundError` so that the update is never lost silently.
        """
        path = self._by_ref_path(workflow_id, ref_name, status)
        task_id = self._http.call_text("POST", path, params={"workerid": worker_id}, json_body=dict(output or {}))
        if not task_id:
            raise NotFoundError(
                f"workflow {workflow_id} has no pending task {ref_name!r} to update",
                status_code=200,
                method="POST",
                url=path,
            )
        return task_id

    def update_task_by_ref_name_sync(
        self,
        *,
        workflow_id: str,
        ref_name: str,
        status: StatusLike,
        output: Optional[Mapping[str, Any]] = None,
        worker_id: Optional[str] = None,
    ) -> Workflow:
        """Like :meth:`update_task_by_ref_name`, and return the workflow as it is after the update."""
        path = self._by_ref_path(workflow_id, ref_name, status) + "/sync"
        data = self._http.call_json("POST", path, params={"workerid": worker_id}, json_body=dict(output or {}))
        return Workflow.from_json(data)

    def signal(self, workflow_id: str, status: StatusLike, output: Optional[Mapping[str, Any]] = None) -> None:
        """Complete (or fail...) the workflow's blocked WAIT task with ``output``, not waiting for the result.

        The server looks for the first pending WAIT, then in running sub-workflows; when there is
        none it does nothing (still 200). Use :meth:`signal_sync` to know.
        """
        code = TaskResultStatus.coerce(status).value
        self._http.request("POST", f"tasks/{_seg(workflow_id)}/{code}/signal", json_body=dict(output or {}))

    def signal_sync(
        self,
        workflow_id: str,
        status: StatusLike,
        output: Optional[Mapping[str, Any]] = None,
        *,
        return_strategy: Optional[str] = None,
        timeout_ms: Optional[int] = None,
    ) -> Optional[SignalResponse]:
        """Signal the blocked WAIT task and wait (server default 5 s) until the workflow blocks again or ends.

        ``return_strategy``: ``TARGET_WORKFLOW`` (default), ``BLOCKING_WORKFLOW``, ``BLOCKING_TASK`` or
        ``BLOCKING_TASK_INPUT``. NotFoundError when no task is blocked; None when the server has nothing
        to answer (a task strategy once nothing blocks any more).
        """
        code = TaskResultStatus.coerce(status).value
        params = {"returnStrategy": return_strategy, "timeoutMillis": timeout_ms}
        wait_s = (timeout_ms if timeout_ms is not None else 5000) / 1000.0
        data = self._http.call_json(
            "POST",
            f"tasks/{_seg(workflow_id)}/{code}/signal/sync",
            params=params,
            json_body=dict(output or {}),
            extra_read_timeout=max(0.0, wait_s),
        )
        return SignalResponse.from_json(data) if data else None

    @staticmethod
    def _by_ref_path(workflow_id: str, ref_name: str, status: StatusLike) -> str:
        code = TaskResultStatus.coerce(status).value
        return f"tasks/{_seg(workflow_id)}/{_seg(ref_name)}/{code}"

    def get_task(self, task_id: str, include_external: bool = False) -> Task:
        """The task; an unknown id raises NotFoundError (servers ≤ 3.21.19 answer 204, newer ones 404).

        ``include_external=True`` downloads input and output the server moved to external storage.
        """
        data = self._http.call_json("GET", f"tasks/{_seg(task_id)}")
        if not data:
            raise NotFoundError(f"task {task_id} not found", status_code=204, method="GET", url=f"tasks/{task_id}")
        task = _task(data, f"GET tasks/{task_id}")
        return _with_external_task(task, self._payloads) if include_external else task

    def append_log(self, task_id: str, message: str) -> None:
        """Append one line to the task's execution log (dropped by servers with indexing off)."""
        self._http.request("POST", f"tasks/{_seg(task_id)}/log", text_body=message)

    def get_logs(self, task_id: str) -> List[TaskExecLog]:
        data = self._http.call_json("GET", f"tasks/{_seg(task_id)}/log")
        return [TaskExecLog.from_json(item) for item in data] if data else []

    def queue_sizes(self, task_types: Iterable[str]) -> Dict[str, int]:
        """Queued (not yet polled) task counts per task type."""
        data = self._http.call_json("GET", "tasks/queue/sizes", params={"taskType": list(task_types)})
        return {str(key): int(value) for key, value in (data or {}).items()}

    def poll_data(self, task_type: str) -> List[PollData]:
        data = self._http.call_json("GET", "tasks/queue/polldata", params={"taskType": task_type})
        return [PollData.from_json(item) for item in data] if data else []


class WorkflowClient(_Api):
    """``/api/workflow``: start, inspect and steer workflow executions."""

    __slots__ = ()

    def start(self, request: StartWorkflowRequest) -> str:
        """Start a workflow; returns its id."""
        return self._http.call_text("POST", "workflow", json_body=request.to_json())

    def start_by_name(
        self,
        name: str,
        input: Optional[Mapping[str, Any]] = None,
        version: Optional[int] = None,
        correlation_id: Optional[str] = None,
        priority: int = 0,
    ) -> str:
        """Start the latest (or the given) version of ``name`` with ``input``; returns its id."""
        params = {"version": version, "correlationId": correlation_id, "priority": priority}
        return self._http.call_text("POST", f"workflow/{_seg(name)}", params=params, json_body=dict(input or {}))

    def execute(
        self,
        request: StartWorkflowRequest,
        *,
        wait_until_task_ref: Optional[Union[str, Sequence[str]]] = None,
        wait_for_seconds: int = 10,
        request_id: Optional[str] = None,
        return_strategy: Optional[str] = None,
    ) -> Optional[SignalResponse]:
        """Start a workflow and wait until it ends, blocks (a WAIT) or one of ``wait_until_task_ref`` is done.

        The server answers after ``wait_for_seconds`` at the latest (``signal_timeout`` is then True).
        The request is never re-sent (that could start the workflow twice).
        """
        refs = [wait_until_task_ref] if isinstance(wait_until_task_ref, str) else list(wait_until_task_ref or [])
        params = {
            "requestId": request_id,
            "waitUntilTaskRef": ",".join(refs) or None,
            "waitForSeconds": wait_for_seconds,
            "returnStrategy": return_strategy,
        }
        path = f"workflow/execute/{_seg(request.name)}/{int(request.version or 0)}"
        data = self._http.call_json(
            "POST",
            path,
            params=params,
            json_body=request.to_json(),
            extra_read_timeout=float(max(0, wait_for_seconds or 10)),
            send_once=True,
        )
        return SignalResponse.from_json(data) if data else None

    def test(
        self,
        request: StartWorkflowRequest,
        task_ref_to_mock_output: Optional[Mapping[str, Sequence[Mapping[str, Any]]]] = None,
        sub_workflow_test_request: Optional[Mapping[str, Mapping[str, Any]]] = None,
    ) -> Workflow:
        """Run a workflow on the server with mocked task outputs (``POST /workflow/test``).

        ``task_ref_to_mock_output`` maps a reference name to the results its attempts get in turn,
        each ``{"status": "COMPLETED", "output": {...}}``; system tasks really run. The answer is the
        workflow as it ended, or as it is (RUNNING) when a worker task has no mock.
        """
        body = request.to_json()
        body["taskRefToMockOutput"] = {ref: [dict(mock) for mock in mocks]
                                       for ref, mocks in (task_ref_to_mock_output or {}).items()}
        if sub_workflow_test_request:
            body["subWorkflowTestRequest"] = {ref: dict(sub) for ref, sub in sub_workflow_test_request.items()}
        return Workflow.from_json(self._http.call_json("POST", "workflow/test", json_body=body, send_once=True) or {})

    def get_status(
        self, workflow_id: str, include_output: bool = False, include_variables: bool = False
    ) -> WorkflowStatusSummary:
        """The short status of a workflow (``output`` and ``variables`` only when asked for)."""
        params = {"includeOutput": str(include_output).lower(), "includeVariables": str(include_variables).lower()}
        data = self._http.call_json("GET", f"workflow/{_seg(workflow_id)}/status", params=params)
        return WorkflowStatusSummary.from_json(data or {})

    def get_by_correlation_id(
        self, name: str, correlation_id: str, include_closed: bool = False, include_tasks: bool = False
    ) -> List[Workflow]:
        """The workflows of ``name`` with that correlation id (only RUNNING ones unless ``include_closed``)."""
        params = {"includeClosed": str(include_closed).lower(), "includeTasks": str(include_tasks).lower()}
        data = self._http.call_json("GET", f"workflow/{_seg(name)}/correlated/{_seg(correlation_id)}", params=params)
        return [Workflow.from_json(item) for item in data or []]

    def get_by_correlation_ids(
        self, name: str, correlation_ids: Sequence[str], include_closed: bool = False, include_tasks: bool = False
    ) -> Dict[str, List[Workflow]]:
        """:meth:`get_by_correlation_id` for several ids at once (an unknown id maps to ``[]``)."""
        params = {"includeClosed": str(include_closed).lower(), "includeTasks": str(include_tasks).lower()}
        data = self._http.call_json(
            "POST", f"workflow/{_seg(name)}/correlated", params=params, json_body=list(correlation_ids)
        )
        return {str(key): [Workflow.from_json(item) for item in value or []] for key, value in (data or {}).items()}

    def get(self, workflow_id: str, include_tasks: bool = True, include_external: bool = False) -> Workflow:
        """The workflow; ``include_external=True`` also downloads the input and output (its own and
        its tasks') that the server moved to external storage, instead of leaving them empty."""
        data = self._http.call_json(
            "GET", f"workflow/{_seg(workflow_id)}", params={"includeTasks": str(include_tasks).lower()}
        )
        workflow = Workflow.from_json(data or {})
        return _with_external_workflow(workflow, self._payloads) if include_external else workflow

    def terminate(self, workflow_id: str, reason: Optional[str] = None) -> None:
        """Terminate; a COMPLETED workflow raises ConflictError (409)."""
        self._http.request("DELETE", f"workflow/{_seg(workflow_id)}", params={"reason": reason})

    def pause(self, workflow_id: str) -> None:
        self._http.request("PUT", f"workflow/{_seg(workflow_id)}/pause")

    def resume(self, workflow_id: str) -> None:
        self._http.request("PUT", f"workflow/{_seg(workflow_id)}/resume")

    def retry(self, workflow_id: str, resume_subworkflow_tasks: bool = False) -> None:
        """Retry the last failed task of a FAILED/TIMED_OUT/TERMINATED workflow."""
        params = {"resumeSubworkflowTasks": str(resume_subworkflow_tasks).lower()}
        self._http.request("POST", f"workflow/{_seg(workflow_id)}/retry", params=params)

    def restart(self, workflow_id: str, use_latest_definitions: bool = False) -> None:
        """Start a terminal workflow again from its first task, with the same id."""
        params = {"useLatestDefinitions": str(use_latest_definitions).lower()}
        self._http.request("POST", f"workflow/{_seg(workflow_id)}/restart", params=params)

    def skip_task(self, workflow_id: str, task_reference_name: str) -> None:
        """Mark a task of a RUNNING workflow that is not scheduled yet as SKIPPED: the flow passes over it.

        A task that is already scheduled (or done) cannot be skipped: conductor-oss answers 500
        (APIError), LocalConductor 409 (ConflictError), with the same message.
        """
        self._http.request("PUT", f"workflow/{_seg(workflow_id)}/skiptask/{_seg(task_reference_name)}")

    def rerun(
        self,
        workflow_id: str,
        from_task_id: Optional[str] = None,
        *,
        task_input: Optional[Mapping[str, Any]] = None,
        workflow_input: Optional[Mapping[str, Any]] = None,
        correlation_id: Optional[str] = None,
    ) -> str:
        """Run a terminal workflow again, from the task ``from_task_id`` (kept tasks before it) or from
        the start; ``task_input`` replaces that task's input, ``workflow_input`` the workflow's."""
        body: Dict[str, Any] = {"reRunFromWorkflowId": workflow_id}
        if from_task_id is not None:
            body["reRunFromTaskId"] = from_task_id
        if task_input is not None:
            body["taskInput"] = dict(task_input)
        if workflow_input is not None:
            body["workflowInput"] = dict(workflow_input)
        if correlation_id is not None:
            body["correlationId"] = correlation_id
        return self._http.call_text("POST", f"workflow/{_seg(workflow_id)}/rerun", json_body=body)

    def remove(self, workflow_id: str, archive: bool = True) -> None:
        """Delete a workflow execution (with ``archive=True`` only terminal ones)."""
        params = {"archiveWorkflow": str(archive).lower()}
        self._http.request("DELETE", f"workflow/{_seg(workflow_id)}/remove", params=params)

    def running(self, name: str, version: Optional[int] = None) -> List[str]:
        """Ids of the running (and paused) workflows of ``name``.

        ``version`` is passed through (the server's default is 1), but conductor-oss 3.32 with its
        SQLite or Postgres store ignores it and lists the executions of every version.
        """
        data = self._http.call_json("GET", f"workflow/running/{_seg(name)}", params={"version": version})
        return [str(item) for item in data or []]

    def search(
        self,
        query: Optional[str] = None,
        free_text: str = "*",
        start: int = 0,
        size: int = 100,
        sort: Optional[str] = None,
    ) -> Dict[str, Any]:
        """The server's raw ``SearchResult`` (``totalHits``, ``results``); needs indexing on the server."""
        params = {"query": query, "freeText": free_text, "start": start, "size": size, "sort": sort}
        return dict(self._http.call_json("GET", "workflow/search", params=params) or {})


class MetadataClient(_Api):
    """``/api/metadata``: task and workflow definitions."""

    __slots__ = ()

    def register_task_defs(self, task_defs: Sequence[TaskDef]) -> None:
        """Create or update task definitions (the server upserts)."""
        self._http.request("POST", "metadata/taskdefs", json_body=[td.to_json() for td in task_defs])

    def update_task_def(self, task_def: TaskDef) -> None:
        """Update an existing task definition (NotFoundError if there is none)."""
        self._http.request("PUT", "metadata/taskdefs", json_body=task_def.to_json())

    def get_task_def(self, name: str) -> TaskDef:
        data = self._http.call_json("GET", f"metadata/taskdefs/{_seg(name)}")
        if not data:
            raise NotFoundError(f"task definition {name!r} not found", status_code=204)
        return TaskDef.from_json(data)

    def get_task_defs(self) -> List[TaskDef]:
        return [TaskDef.from_json(item) for item in self._http.call_json("GET", "metadata/taskdefs") or []]

    def unregister_task_def(self, name: str) -> None:
        self._http.request("DELETE", f"metadata/taskdefs/{_seg(name)}")

    def register_workflow_def(self, workflow_def: WorkflowDef, overwrite: bool = False) -> None:
        """Create a workflow definition; an existing name+version is a ConflictError unless ``overwrite``."""
        self._http.request(
            "POST", "metadata/workflow", params={"overwrite": str(overwrite).lower()}, json_body=workflow_def.to_json()
        )

    def update_workflow_defs(self, workflow_defs: Sequence[WorkflowDef]) -> Dict[str, Any]:
        """Create or update several definitions; returns the server's ``BulkResponse``."""
        data = self._http.call_json("PUT", "metadata/workflow", json_body=[wd.to_json() for wd in workflow_defs])
        return dict(data or {})

    def get_workflow_def(self, name: str, version: Optional[int] = None) -> WorkflowDef:
        """The given version, or the latest."""
        data = self._http.call_json("GET", f"metadata/workflow/{_seg(name)}", params={"version": version})
        if not data:
            raise NotFoundError(f"workflow definition {name!r} not found", status_code=204)
        return WorkflowDef.from_json(data)

    def unregister_workflow_def(self, name: str, version: int) -> None:
        self._http.request("DELETE", f"metadata/workflow/{_seg(name)}/{int(version)}")


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


class ConductorClient:
    """A thread-safe client for one Conductor server. Close it with :meth:`close` or ``with``.

    >>> with ConductorClient(Configuration(server_url="http://localhost:8080/api")) as client:
    ...     client.workflows.start_by_name("greetings", {"name": "Ada"})
    """

    def __init__(self, config: Optional[Configuration] = None) -> None:
        self.config = config if config is not None else Configuration.from_env()
        self._transport = HttpTransport(self.config)
        #: external payload storage (large inputs and outputs), see :mod:`conductor_workers.payloads`
        self.payloads = PayloadStore(self._transport)
        self.tasks = TaskClient(self._transport, self.payloads)
        self.workflows = WorkflowClient(self._transport, self.payloads)
        self.metadata = MetadataClient(self._transport, self.payloads)

    def health(self) -> Dict[str, Any]:
        """``GET /health`` (served beside, not under, ``/api``)."""
        return dict(self._transport.call_json("GET", "/health") or {})

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> "ConductorClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ConductorClient({self.config.server_url!r})"


__all__ = ["ConductorClient", "MetadataClient", "TaskClient", "WorkflowClient"]
