"""Waiting on a workflow: ``execute`` (start it and wait), signals (update a workflow's pending
WAIT, and ``signal/sync``) and the SignalResponse they answer with, shaped by ``returnStrategy``
(the engine's :class:`Signals` mixin).

Behaviour follows conductor-oss 3.32.1 (``WorkflowSignalResponder``, ``NotificationResult``,
``TaskServiceImpl.signalTask``) and what its server was measured to do.

Waiting (``execute``, ``signal/sync``) never holds the engine lock: each look at the workflow is a
short transaction of its own, and the waiter sleeps :data:`AWAIT_POLL_SECONDS` between looks (the
real server looks every 100 ms).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any, Callable, List, Optional, Sequence

from .errors import BadRequest
from .model import JSON, TASK_TERMINAL, WORKFLOW_TERMINAL, _strip_nulls
from .views import task_view

log = logging.getLogger(__name__)

#: ``returnStrategy`` of ``execute`` and ``signal/sync`` (WorkflowSignalReturnStrategy).
RETURN_STRATEGIES = ("TARGET_WORKFLOW", "BLOCKING_WORKFLOW", "BLOCKING_TASK", "BLOCKING_TASK_INPUT")
#: How often a waiting ``execute`` / ``signal/sync`` looks at the workflow again (seconds).
AWAIT_POLL_SECONDS = 0.02


class _Blocking:
    """What ``WorkflowSignalResponder.findBlockingTasks`` found: the tasks and the workflow (view)."""

    __slots__ = ("tasks", "workflow")

    def __init__(self) -> None:
        self.tasks: List[JSON] = []
        self.workflow: Optional[JSON] = None


class Signals:
    """Execute and signals (a mixin of the engine)."""

    # what the engine provides
    _closed: bool
    _tx: Callable[[], Any]
    _load_workflow: Callable[[Any, str], JSON]
    _workflow_view: Callable[[JSON, List[JSON]], JSON]
    start_workflow: Callable[[Any], str]
    update_task: Callable[[Any], Optional[JSON]]

    # -- POST /workflow/execute/{name}/{version} ----------------------------------------------------
    def execute_workflow(self, request: JSON, request_id: Optional[str] = None,
                         wait_until_task_refs: Sequence[str] = (), wait_seconds: float = 10.0,
                         return_strategy: str = "TARGET_WORKFLOW") -> Optional[JSON]:
        """Start a workflow and wait for it to block or end (at most ``wait_seconds``).

        Returns the SignalResponse (a WorkflowRun or TaskRun shape, see :meth:`_signal_response`);
        None where the real server has nothing to answer (a task strategy without a blocking task).
        """
        workflow_id = self.start_workflow(request)
        return self.await_signal_response(workflow_id, wait_until_task_refs, return_strategy,
                                          request_id or str(uuid.uuid4()), wait_seconds)

    def await_signal_response(self, workflow_id: str, task_refs: Sequence[str], return_strategy: str,
                              request_id: str, timeout_seconds: float) -> Optional[JSON]:
        """Wait (without holding the lock) until the workflow is terminal or blocked; its response."""
        refs = [ref.strip() for ref in task_refs]
        deadline = time.monotonic() + max(0.0, timeout_seconds)
        pause = threading.Event()
        while True:
            with self._tx() as store:
                workflow = self._load_workflow(store, workflow_id)
                tasks = store.workflow_tasks(workflow_id)
                blocking = self._find_blocking(store, workflow, tasks, refs)
                if workflow["status"] in WORKFLOW_TERMINAL or blocking.tasks:
                    return self._signal_response(workflow, tasks, blocking, return_strategy, request_id, False)
                if time.monotonic() >= deadline or self._closed:
                    log.info("signal/execute timed out for %s", workflow_id)
                    return self._signal_response(workflow, tasks, _Blocking(), return_strategy, request_id, True)
            pause.wait(max(0.0, min(AWAIT_POLL_SECONDS, deadline - time.monotonic())))

    def _find_blocking(self, store: Any, workflow: JSON, tasks: List[JSON], refs: Sequence[str]) -> _Blocking:
        """A WAIT with no time limit that is not done, or a task of ``refs`` that is done; recursive
        into running sub-workflows."""
        found = _Blocking()
        for task in tasks:
            terminal = task["status"] in TASK_TERMINAL
            if task["taskType"] == "WAIT" and not terminal and not task.get("waitTimeout"):
                found.tasks.append(task)
                if found.workflow is None:
                    found.workflow = self._workflow_view(workflow, tasks)
            if terminal and task["referenceTaskName"] in refs:
                found.tasks.append(task)
                if found.workflow is None:
                    found.workflow = self._workflow_view(workflow, tasks)
            if task["taskType"] == "SUB_WORKFLOW" and task.get("subWorkflowId") and not terminal:
                child = store.get_workflow(task["subWorkflowId"])
                if child is None:
                    continue
                inner = self._find_blocking(store, child, store.workflow_tasks(child["workflowId"]), refs)
                if inner.tasks:
                    found.tasks.extend(inner.tasks)
                    if found.workflow is None:
                        found.workflow = inner.workflow
        return found

    def _signal_response(self, workflow: JSON, tasks: List[JSON], blocking: _Blocking, strategy: str,
                         request_id: str, timed_out: bool) -> Optional[JSON]:
        """NotificationResult.toResponse: a WorkflowRun of the target or blocking workflow, or a TaskRun."""
        target = self._workflow_view(workflow, tasks)
        if not blocking.tasks:
            if strategy in ("TARGET_WORKFLOW", "BLOCKING_WORKFLOW"):
                return _workflow_run(target, target, strategy, request_id, timed_out)
            return None
        if strategy == "TARGET_WORKFLOW":
            return _workflow_run(target, target, strategy, request_id, timed_out)
        if strategy == "BLOCKING_WORKFLOW":
            return _workflow_run(blocking.workflow or target, target, strategy, request_id, timed_out)
        task = task_view(blocking.tasks[0])
        return _strip_nulls({
            "targetWorkflowId": target["workflowId"], "targetWorkflowStatus": target["status"],
            "responseType": strategy, "requestId": request_id, "taskType": task.get("taskType"),
            "taskId": task.get("taskId"), "referenceTaskName": task.get("referenceTaskName"),
            "retryCount": task.get("retryCount") or 0, "taskDefName": task.get("taskDefName"),
            "retriedTaskId": task.get("retriedTaskId"), "workflowType": task.get("workflowType"),
            "reasonForIncompletion": task.get("reasonForIncompletion"),
            "priority": task.get("workflowPriority") or 0, "workflowId": task.get("workflowInstanceId"),
            "correlationId": task.get("correlationId"), "status": task.get("status"),
            "input": task.get("inputData") or {}, "output": task.get("outputData") or {},
            "createdBy": task.get("workerId"), "createTime": task.get("startTime") or 0,
            "updateTime": task.get("updateTime") or 0, "signalTimeout": timed_out,
        })

    # -- signals ----------------------------------------------------------------------------------
    def signal(self, workflow_id: str, status: str, output: Optional[JSON]) -> Optional[str]:
        """Update the workflow's first pending WAIT (or one in a running sub-workflow); its task id,
        or None when nothing is blocked."""
        with self._tx() as store:
            self._load_workflow(store, workflow_id)  # an unknown id is a 404, as on the server
            pending = self._pending_wait(store, workflow_id)
            if pending is None:
                return None
            merged = dict(pending.get("outputData") or {})
            merged.update(output or {})
            updated = self.update_task(_task_result(pending, status, merged))
            return None if updated is None else str(updated["taskId"])

    def _pending_wait(self, store: Any, workflow_id: str) -> Optional[JSON]:
        workflow = store.get_workflow(workflow_id)
        if workflow is None:
            return None
        tasks = store.workflow_tasks(workflow_id)
        for task in tasks:
            if task["taskType"] == "WAIT" and task["status"] not in TASK_TERMINAL:
                return task
        for task in tasks:
            if task["taskType"] == "SUB_WORKFLOW" and task["status"] not in TASK_TERMINAL and (
                    task.get("subWorkflowId") or "").strip():
                found = self._pending_wait(store, task["subWorkflowId"])
                if found is not None:
                    return found
        return None


def _workflow_run(shown: JSON, target: JSON, strategy: str, request_id: str, timed_out: bool) -> JSON:
    """NotificationResult.getWorkflowRun: ``shown`` as a WorkflowRun, tagged with the target."""
    return _strip_nulls({
        "workflowId": shown["workflowId"], "requestId": request_id, "correlationId": shown.get("correlationId"),
        "input": shown.get("input") or {}, "createdBy": shown.get("createdBy"), "createTime": shown.get("createTime"),
        "output": shown.get("output") or {}, "tasks": shown.get("tasks") or [], "priority": shown.get("priority") or 0,
        "updateTime": shown.get("updateTime") or 0, "status": shown["status"],
        "variables": shown.get("variables") or {}, "targetWorkflowId": target["workflowId"],
        "targetWorkflowStatus": target["status"], "responseType": strategy, "signalTimeout": timed_out,
    })


def _task_result(task: JSON, status: str, output: JSON) -> JSON:
    """``new TaskResult(task)`` with ``status`` and ``output``."""
    return {
        "workflowInstanceId": task["workflowInstanceId"], "taskId": task["taskId"], "status": status,
        "reasonForIncompletion": task.get("reasonForIncompletion"),
        "callbackAfterSeconds": task.get("callbackAfterSeconds") or 0, "workerId": task.get("workerId"),
        "outputData": output, "subWorkflowId": task.get("subWorkflowId"),
    }


def signal_strategy(value: Optional[str]) -> str:
    """A ``returnStrategy`` query value (default TARGET_WORKFLOW); BadRequest for an unknown one."""
    if value is None or value == "":
        return "TARGET_WORKFLOW"
    if value not in RETURN_STRATEGIES:
        raise BadRequest("Invalid value %r for query parameter returnStrategy: expected one of %s"
                         % (value, ", ".join(RETURN_STRATEGIES)))
    return value


__all__ = ["Signals", "RETURN_STRATEGIES", "signal_strategy"]
