"""``WorkflowClient``: the ``/api/workflow`` endpoints (start, execute, inspect and steer executions).

One method per endpoint; requests that could start a workflow twice are never re-sent. Reached as
``ConductorClient.workflows``; re-exported by :mod:`conductor_workers.client`.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from ._client_common import _Api, _seg, _with_external_workflow
from .models import SignalResponse, StartWorkflowRequest, Workflow, WorkflowStatusSummary


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
        """The server's raw ``SearchResult``: ``totalHits`` and ``results`` (``WorkflowSummary`` documents).

        ``query`` is conductor-oss's search syntax (``workflowType="x" AND status IN (RUNNING,PAUSED)``,
        ``startTime>1700000000000``), ``free_text`` a word or ``*``, ``sort`` ``field:ASC|DESC``. Works on
        conductor-oss (with indexing, its default) and on LocalConductor.
        """
        params = {"query": query, "freeText": free_text, "start": start, "size": size, "sort": sort}
        return dict(self._http.call_json("GET", "workflow/search", params=params) or {})
