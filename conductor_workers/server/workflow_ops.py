"""The workflow API that tests and scripts use beyond the life cycle: status, correlation lookups,
skip and rerun (the engine's :class:`WorkflowOps` mixin; ``execute`` and signals are in
:mod:`.signals`, test runs in :mod:`.mock_runs`).

Behaviour follows conductor-oss 3.32.1 (``WorkflowResource``, ``WorkflowExecutorOps.rerun`` and
``skipTaskFromWorkflow``) and what its server was measured to do.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Dict, List, Optional, Sequence

from .definitions import SYSTEM_TASK_TYPES, walk
from .errors import BadRequest, Conflict
from .fields import check_fields
from .model import JSON, TASK_SUCCESSFUL, TASK_TERMINAL, WORKFLOW_TERMINAL, _long, new_id
from .model import now_ms as _now
from .store import _dumps

RERUN_FIELDS: Dict[str, Any] = {
    "reRunFromWorkflowId": "str", "workflowInput": "dict", "reRunFromTaskId": "str", "taskInput": "dict",
    "correlationId": "str",
}


class WorkflowOps:
    """Workflow operations of the engine (see the module docstring)."""

    # what the engine provides
    _tx: Callable[[], Any]
    _load_workflow: Callable[[Any, str], JSON]
    _workflow_view: Callable[[JSON, List[JSON]], JSON]
    _decide: Callable[[JSON, List[JSON]], None]
    _save_task: Callable[[JSON], None]
    _save_workflow: Callable[[JSON], None]
    _persist_task: Callable[[JSON], None]
    _push: Callable[[JSON, int], None]
    _map_wait: Callable[[JSON], None]

    # -- GET /workflow/{id}/status -----------------------------------------------------------------
    def workflow_status(self, workflow_id: str, include_output: bool = False,
                        include_variables: bool = False) -> JSON:
        """The WorkflowStatus summary: id, correlation id, status (and output, variables if asked)."""
        with self._tx() as store:
            view = self._workflow_view(self._load_workflow(store, workflow_id), [])
        summary: JSON = {"workflowId": view["workflowId"]}
        if view.get("correlationId"):
            summary["correlationId"] = view["correlationId"]
        if include_output:
            summary["output"] = view.get("output") or {}
        if include_variables:
            summary["variables"] = view.get("variables") or {}
        summary["status"] = view["status"]
        return summary

    # -- correlation ------------------------------------------------------------------------------
    def correlated(self, name: str, correlation_ids: Sequence[str], include_closed: bool = False,
                   include_tasks: bool = False) -> Dict[str, List[JSON]]:
        """Workflows of ``name`` per correlation id (only RUNNING ones unless ``include_closed``)."""
        result: Dict[str, List[JSON]] = {}
        with self._tx() as store:
            for correlation_id in correlation_ids:
                needle = '"correlationId":%s' % _dumps(correlation_id)
                rows = store._bodies("SELECT body FROM workflows WHERE name = ? AND instr(body, ?) > 0",
                                     (name, needle))
                found = [w for w in rows if w.get("correlationId") == correlation_id
                         and (include_closed or w["status"] == "RUNNING")]
                found.sort(key=lambda w: w.get("createTime") or 0)
                result[correlation_id] = [
                    self._workflow_view(w, store.workflow_tasks(w["workflowId"]) if include_tasks else [])
                    for w in found]
        return result

    # -- PUT /workflow/{id}/skiptask/{ref} --------------------------------------------------------
    def skip_task(self, workflow_id: str, ref_name: str) -> None:
        """Record a SKIPPED task for ``ref_name`` (not yet scheduled); the flow passes over it.

        conductor-oss answers its three refusals with 500 (IllegalStateException); here they are 409.
        The server binds SkipTaskRequest from query parameters, so a body never reaches it: the
        skipped task's input and output stay empty.
        """
        with self._tx() as store:
            workflow = self._load_workflow(store, workflow_id)
            if workflow["status"] != "RUNNING":
                raise Conflict("The workflow %s is not running so the task referenced by %s cannot be skipped"
                               % (workflow_id, ref_name))
            wf_def = workflow["workflowDefinition"]
            workflow_task = next((t for t in walk(wf_def["tasks"]) if t.get("taskReferenceName") == ref_name), None)
            if workflow_task is None:
                raise Conflict("The task referenced by %s does not exist in the WorkflowDefinition %s"
                               % (ref_name, wf_def["name"]))
            tasks = store.workflow_tasks(workflow_id)
            if any(task["referenceTaskName"] == ref_name for task in tasks):
                raise Conflict("The task referenced %s has already been processed, cannot be skipped" % ref_name)
            now = _now()
            embedded = copy.deepcopy(workflow_task)
            embedded.pop("taskDefinition", None)
            skipped = {
                "taskType": workflow_task["name"], "status": "SKIPPED", "inputData": {}, "outputData": {},
                "referenceTaskName": ref_name, "retryCount": 0, "seq": 0, "pollCount": 0,
                "correlationId": workflow.get("correlationId"), "taskDefName": workflow_task["name"],
                "scheduledTime": now, "startTime": 0, "endTime": now, "updateTime": 0, "startDelayInSeconds": 0,
                "retried": False, "executed": False, "callbackFromWorker": True, "responseTimeoutSeconds": 0,
                "workflowInstanceId": workflow_id, "taskId": new_id(), "callbackAfterSeconds": 0,
                "workflowTask": embedded, "rateLimitPerFrequency": 0, "rateLimitFrequencyInSeconds": 0,
                "workflowPriority": workflow.get("priority") or 0, "iteration": 0, "subworkflowChanged": False,
                "firstStartTime": 0,
            }
            self._persist_task(skipped)
            tasks.insert(0, skipped)
            self._decide(workflow, tasks)

    # -- POST /workflow/{id}/rerun ----------------------------------------------------------------
    def rerun(self, workflow_id: str, request: JSON) -> str:
        """Run a terminal workflow again from one of its tasks (or from the start); its id."""
        request = check_fields(request, RERUN_FIELDS, "RerunWorkflowRequest")
        with self._tx() as store:
            if not self._rerun(store, workflow_id, request.get("reRunFromTaskId"), request.get("taskInput"),
                               request.get("workflowInput"), request.get("correlationId")):
                raise BadRequest("Task %s not found" % request.get("reRunFromTaskId"))
        return workflow_id

    def _rerun(self, store: Any, workflow_id: str, task_id: Optional[str], task_input: Optional[JSON],
               workflow_input: Optional[JSON], correlation_id: Optional[str]) -> bool:
        """WorkflowExecutorOps.rerunWF (recursive into sub-workflows); False if ``task_id`` is not there."""
        workflow = self._load_workflow(store, workflow_id)
        if workflow["status"] not in WORKFLOW_TERMINAL:
            raise Conflict("Workflow: %s is not in terminal state, unable to rerun." % _long(workflow))
        tasks = store.workflow_tasks(workflow_id)
        if task_id is None:
            store.delete_workflow_tasks(workflow_id)
            self._reset_for_rerun(workflow, workflow_input, correlation_id)
            self._decide(workflow, [])
            return True
        rerun_from = next((task for task in tasks if task["taskId"] == task_id), None)
        if rerun_from is None:
            for task in tasks:
                if task["taskType"] == "SUB_WORKFLOW" and task.get("subWorkflowId") and (
                        self._rerun(store, task["subWorkflowId"], task_id, task_input, None, None)):
                    rerun_from = task
                    break
            if rerun_from is None:
                return False
            # the child runs again: its SUB_WORKFLOW task waits for it once more
            self._reset_for_rerun(workflow, workflow_input, correlation_id)
            now = _now()
            rerun_from.update(status="IN_PROGRESS", scheduledTime=now, startTime=now, updateTime=0, endTime=0,
                              retried=False, executed=False, pollCount=0, reasonForIncompletion=None)
            self._save_task(rerun_from)
            self._decide(workflow, tasks)
            return True
        self._reset_for_rerun(workflow, workflow_input, correlation_id)
        kept = [task for task in tasks if task["seq"] <= rerun_from["seq"]]
        store.delete_workflow_tasks(workflow_id)
        now = _now()
        rerun_from.update(scheduledTime=now, startTime=0, updateTime=0, endTime=0, outputData={}, retried=False,
                          executed=False, pollCount=0, reasonForIncompletion=None)
        rerun_from.pop("externalOutputPayloadStoragePath", None)
        kind = rerun_from["taskType"]
        if kind == "SUB_WORKFLOW":
            rerun_from["subWorkflowId"] = None
        elif task_input is not None:
            rerun_from["inputData"] = task_input
            rerun_from.pop("externalInputPayloadStoragePath", None)
        rerun_from["status"] = _rerun_status(kind)
        if kind in SYSTEM_TASK_TYPES:
            rerun_from["startTime"] = now
        if kind == "WAIT":
            rerun_from.pop("waitTimeout", None)
            self._map_wait(rerun_from)
        changed = [rerun_from]
        for task in kept:
            if task is not rerun_from and task["status"] in TASK_TERMINAL and task["status"] not in TASK_SUCCESSFUL \
                    and task["referenceTaskName"] != rerun_from["referenceTaskName"]:
                self._reset_sibling(task, now)
                changed.append(task)
        for task in kept:
            if any(task is other for other in changed):
                self._save_task(task)
            else:
                self._persist_task(task)
            if task["status"] == "SCHEDULED" and task["taskType"] not in SYSTEM_TASK_TYPES:
                self._push(task, 0)
        self._decide(workflow, kept)
        return True

    def _reset_for_rerun(self, workflow: JSON, workflow_input: Optional[JSON], correlation_id: Optional[str]) -> None:
        workflow.update(status="RUNNING", reasonForIncompletion=None, failedReferenceTaskNames=[],
                        failedTaskNames=[])
        workflow.pop("failedTaskId", None)
        if correlation_id is not None:
            workflow["correlationId"] = correlation_id
        if workflow_input is not None:
            workflow["input"] = workflow_input
            workflow.pop("externalInputPayloadStoragePath", None)
        self._save_workflow(workflow)

    @staticmethod
    def _reset_sibling(task: JSON, now: int) -> None:
        """finalizeRerun: a failed or canceled task that survived the cut runs again."""
        if task["taskType"] == "SUB_WORKFLOW":
            task["subWorkflowId"] = None
            (task.get("outputData") or {}).pop("subWorkflowId", None)
        task.update(status=_rerun_status(task["taskType"]), executed=False, startTime=now, endTime=0,
                    reasonForIncompletion=None)


def _rerun_status(kind: str) -> str:
    """The status a rerun gives a task: a worker's task, HTTP and SUB_WORKFLOW are scheduled again
    (a SUB_WORKFLOW then starts a new child); the other system tasks run in the next decide."""
    if kind not in SYSTEM_TASK_TYPES or kind in ("HTTP", "SUB_WORKFLOW"):
        return "SCHEDULED"
    return "IN_PROGRESS"


__all__ = ["WorkflowOps"]
