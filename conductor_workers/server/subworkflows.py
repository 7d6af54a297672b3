"""Sub-workflows: ``SUB_WORKFLOW`` (starts its child, with an id derived from the parent task so
that a retry is idempotent, waits for it and takes its output) and ``START_WORKFLOW`` (fire and
forget); a parent is decided when its child ends, and children are terminated with their parent
(a mixin of :class:`~.system_tasks.SystemTasks`)."""

from __future__ import annotations

import copy
import hashlib
import uuid
from typing import Any, Callable, List, Optional, Set

from .errors import EngineError, NotFound
from .model import JSON, WORKFLOW_TERMINAL, _java_str
from .payloads import WORKFLOW_PAYLOADS, PayloadLimits
from .store import _Store
from .validation import normalise_workflow_def


def subworkflow_id(parent_id: str, task_id: str, retry_count: int) -> str:
    """The child id conductor-oss derives (``UUID.nameUUIDFromBytes``), so that retries are idempotent."""
    digest = hashlib.md5(("subworkflow:%s:%s:%d" % (parent_id, task_id, retry_count)).encode("utf-8")).digest()
    return str(uuid.UUID(bytes=digest, version=3))


class SubWorkflows:
    """Mapper and executors of SUB_WORKFLOW and START_WORKFLOW (mixed into the system tasks)."""

    # what the system tasks and the engine provide
    _deciding: Set[str]
    _store: _Store
    _limits: PayloadLimits
    _task: Callable[..., JSON]
    _new_workflow: Callable[..., JSON]
    _save_task: Callable[[JSON], None]
    _save_workflow: Callable[[JSON], None]
    _decide: Callable[[JSON, List[JSON]], None]
    _end_workflow: Callable[..., None]
    _externalize: Callable[..., None]

    def _map_sub_workflow(self, workflow: JSON, tasks: List[JSON], workflow_task: JSON, iteration: int,
                          created: List[JSON]) -> List[JSON]:
        task = self._task(workflow, tasks, workflow_task, iteration, created, "SUB_WORKFLOW")
        params = workflow_task.get("subWorkflowParam") or {}
        inline = params.get("workflowDefinition")
        task["inputData"] = {
            "subWorkflowName": (inline or {}).get("name") or params.get("name"),
            "subWorkflowVersion": None if inline else params.get("version"),
            "subWorkflowDefinition": inline, "workflowInput": task["inputData"],
            "subWorkflowTaskToDomain": params.get("taskToDomain"), "priority": params.get("priority"),
            "idempotencyKey": params.get("idempotencyKey"),
            "idempotencyStrategy": params.get("idempotencyStrategy"),
        }
        return [task]

    def _run_sub_workflow(self, workflow: JSON, tasks: List[JSON], task: JSON) -> bool:
        if task["status"] == "SCHEDULED":
            return self._start_sub_workflow(workflow, task)
        child = self._store.get_workflow(task.get("subWorkflowId") or "")
        if child is None or child["status"] not in WORKFLOW_TERMINAL:
            return False
        status = {"COMPLETED": "COMPLETED", "TERMINATED": "CANCELED", "TIMED_OUT": "TIMED_OUT"}.get(
            child["status"], "FAILED")
        output = dict(task.get("outputData") or {})
        output.update(child.get("output") or {})
        task.update(status=status, outputData=output)
        if status != "COMPLETED":
            wf_def = child["workflowDefinition"]
            task["reasonForIncompletion"] = "Sub workflow %s.%s/%s failure reason: %s" % (
                wf_def["name"], wf_def["version"], child["workflowId"], child.get("reasonForIncompletion"))
        return True

    def _start_sub_workflow(self, workflow: JSON, task: JSON) -> bool:
        params = task["inputData"]
        child_input = dict(params.get("workflowInput") or {}) or copy.deepcopy(params)
        if params.get("subWorkflowDefinition"):
            child_input["_systemMetadata"] = {"dynamic": True}
        request = _start_request(workflow, params.get("subWorkflowName"), params.get("subWorkflowVersion"),
                                 child_input, None, params.get("subWorkflowTaskToDomain"), params.get("priority"))
        child_id = self._try_start(task, request, params.get("subWorkflowDefinition"), workflow)
        if child_id is None:
            return True
        task.update(status="IN_PROGRESS", subWorkflowId=child_id,
                    outputData=dict(task.get("outputData") or {}, subWorkflowId=child_id))
        self._save_task(task)
        self._run_sub_workflow(workflow, [task], task)  # the child may have finished already
        return True

    def _run_start_workflow(self, workflow: JSON, tasks: List[JSON], task: JSON) -> bool:
        spec = task["inputData"].get("startWorkflow")
        if not isinstance(spec, dict) or not spec.get("name"):
            task.update(status="FAILED", reasonForIncompletion="Missing 'startWorkflow' (with a name) in input")
            return True
        request = _start_request(workflow, spec["name"], spec.get("version"), spec.get("input") or {},
                                 spec.get("correlationId"), spec.get("taskToDomain"), spec.get("priority"))
        started = self._try_start(task, request, spec.get("workflowDef"), None)  # fire and forget: no parent
        if started is not None:
            task.update(status="COMPLETED", outputData={"workflowId": started})
        return True

    def _try_start(self, task: JSON, request: JSON, inline: Optional[JSON], parent: Optional[JSON]) -> Optional[str]:
        """Start a workflow for ``task``; None (and the task FAILED with the reason) if it cannot start."""
        try:
            return self._start_child(request, inline, parent, task if parent is not None else None)
        except EngineError as error:
            task.update(status="FAILED", reasonForIncompletion=error.message)
            return None

    def _start_child(self, request: JSON, inline: Optional[JSON], parent: Optional[JSON],
                     parent_task: Optional[JSON]) -> str:
        """Start a workflow from inside a decide (SUB_WORKFLOW, START_WORKFLOW); its id."""
        wf_def = normalise_workflow_def(inline, "subWorkflowParam.workflowDefinition") if inline else (
            self._store.get_workflow_def(request["name"], request.get("version")))
        if wf_def is None:
            raise NotFound("No such workflow found by name: %s, version: %s"
                           % (request["name"], _java_str(request.get("version"))))
        child = self._new_workflow(self._store, wf_def, request, request.get("priority") or 0,
                                   request.get("taskToDomain") or {})
        if parent is not None and parent_task is not None:
            wanted = subworkflow_id(parent["workflowId"], parent_task["taskId"], parent_task["retryCount"])
            if self._store.get_workflow(wanted) is None:
                child["workflowId"] = wanted
            child["parentWorkflowId"] = parent["workflowId"]
            child["parentWorkflowTaskId"] = parent_task["taskId"]
        self._externalize(child, WORKFLOW_PAYLOADS, self._limits.workflow_threshold)
        self._store.put_workflow(child, None)
        self._save_workflow(child)
        self._decide(child, [])
        return str(child["workflowId"])

    def _notify_parent(self, workflow: JSON) -> None:
        """A sub-workflow ended: let its parent's SUB_WORKFLOW task see it now."""
        parent_id = workflow.get("parentWorkflowId")
        if not parent_id or parent_id in self._deciding:
            return
        parent = self._store.get_workflow(parent_id)
        if parent is not None and parent["status"] not in WORKFLOW_TERMINAL:
            self._decide(parent, self._store.workflow_tasks(parent_id))

    def _cancel_children(self, tasks: List[JSON], status: str, reason: Optional[str]) -> None:
        """The workflow ended: terminate the sub-workflows it still runs."""
        for task in tasks:
            if task["taskType"] != "SUB_WORKFLOW" or not task.get("subWorkflowId"):
                continue
            child = self._store.get_workflow(task["subWorkflowId"])
            if child is None or child["status"] in WORKFLOW_TERMINAL:
                continue
            why = ("Parent workflow has been terminated with reason: %s" % reason if reason
                   else "Parent workflow has been terminated with status %s" % status)
            self._end_workflow(child, self._store.workflow_tasks(child["workflowId"]), "TERMINATED", why)


def _start_request(workflow: JSON, name: Any, version: Any, workflow_input: JSON, correlation_id: Optional[str],
                   task_to_domain: Optional[JSON], priority: Optional[int]) -> JSON:
    """A StartWorkflowRequest from inside ``workflow``: its correlation id and domains carry over."""
    return {
        "name": name, "version": version, "input": workflow_input,
        "correlationId": correlation_id or workflow.get("correlationId"),
        "taskToDomain": task_to_domain or workflow.get("taskToDomain") or {}, "priority": priority or 0,
    }
