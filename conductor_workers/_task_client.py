"""``TaskClient``: the ``/api/tasks`` endpoints (poll, update, signal, inspect and log tasks).

One method per endpoint, with what the server's answers mean across versions (a 204 or an empty
200 for nothing, a by-reference update that finds no task). Reached as ``ConductorClient.tasks``;
re-exported by :mod:`conductor_workers.client`.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional

from ._client_common import StatusLike, _Api, _seg, _task, _tasks, _with_external_task
from .errors import NotFoundError
from .models import PollData, SignalResponse, Task, TaskExecLog, TaskResult, TaskResultStatus, Workflow


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
