"""Sub-workflows: ``SUB_WORKFLOW`` (starts its child, with an id derived from the parent task so
that a retry is idempotent, waits for it and takes its output) and ``START_WORKFLOW`` (fire and
forget); a parent is decided when its child ends, and children are terminated with their parent
(a mixin of :class:`~.system_tasks.SystemTasks`).

However deep sub-workflows nest (a workflow may start itself: conductor-oss accepts that, the
recursion happening as the children run), no call nests deeper than a few levels:

* a child is decided as it starts while fewer than :data:`MAX_NESTED_DECIDES` workflows are being
  decided; deeper, its first decide is left to the sweeper's next round (as conductor-oss leaves a
  child to its system-task workers), so an endless recursion grows by at most that many levels
  per ``sweep_interval`` and every call that starts it answers;
* parents told of their child's end, and children terminated with their parent, are worked through
  one after another (:class:`Trampoline`), not one inside the other.
"""

from __future__ import annotations

import copy
import hashlib
import uuid
from collections import deque
from typing import Any, Callable, Deque, Generic, List, Optional, Set, Tuple, TypeVar

from .errors import EngineError, NotFound
from .model import JSON, WORKFLOW_TERMINAL, _java_str
from .payloads import WORKFLOW_PAYLOADS, PayloadLimits
from .store import _Store
from .validation import normalise_workflow_def


#: Workflows decided one inside the other (a child as it starts) before a child is left to the sweeper.
MAX_NESTED_DECIDES = 16

T = TypeVar("T")


class Trampoline(Generic[T]):
    """Runs ``run(item)`` for each item added, one after another, never one inside another: an item
    added while one runs (by that run) waits its turn, so a chain of any length costs no stack.
    Not thread-safe by itself: the engine lock is held around every use."""

    def __init__(self, run: Callable[[T], None]) -> None:
        self._run = run
        self._items: Deque[T] = deque()
        self._running = False

    def add(self, item: T) -> None:
        self._items.append(item)
        if self._running:
            return
        self._running = True
        try:
            while self._items:
                self._run(self._items.popleft())
        finally:
            self._running = False
            self._items.clear()


def subworkflow_id(parent_id: str, task_id: str, retry_count: int) -> str:
    """The child id conductor-oss derives (``UUID.nameUUIDFromBytes``), so that retries are idempotent."""
    digest = hashlib.md5(("subworkflow:%s:%s:%d" % (parent_id, task_id, retry_count)).encode("utf-8")).digest()
    return str(uuid.UUID(bytes=digest, version=3))


class SubWorkflows:
    """Mapper and executors of SUB_WORKFLOW and START_WORKFLOW (mixed into the system tasks)."""

    # what the system tasks and the engine provide
    _deciding: Set[str]
    _deferred_decides: Deque[str]
    _parents_to_decide: Trampoline[str]
    _children_to_end: Trampoline[Tuple[str, str]]
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
        if len(self._deciding) < MAX_NESTED_DECIDES:
            self._decide(child, [])
        else:
            self._deferred_decides.append(child["workflowId"])  # the sweeper's next round decides it
        return str(child["workflowId"])

    def _notify_parent(self, workflow: JSON) -> None:
        """A sub-workflow ended: let its parent's SUB_WORKFLOW task see it now."""
        parent_id = workflow.get("parentWorkflowId")
        if parent_id and parent_id not in self._deciding:
            self._parents_to_decide.add(parent_id)

    def _decide_parent(self, parent_id: str) -> None:
        if parent_id in self._deciding:
            return  # being decided further up: that decide sees its child's end
        parent = self._store.get_workflow(parent_id)
        if parent is not None and parent["status"] not in WORKFLOW_TERMINAL:
            self._decide(parent, self._store.workflow_tasks(parent_id))

    def _cancel_children(self, tasks: List[JSON], status: str, reason: Optional[str]) -> None:
        """The workflow ended: terminate the sub-workflows it still runs."""
        why = ("Parent workflow has been terminated with reason: %s" % reason if reason
               else "Parent workflow has been terminated with status %s" % status)
        for task in tasks:
            if task["taskType"] == "SUB_WORKFLOW" and task.get("subWorkflowId"):
                self._children_to_end.add((task["subWorkflowId"], why))

    def _end_child(self, child_and_reason: Tuple[str, str]) -> None:
        child_id, why = child_and_reason
        child = self._store.get_workflow(child_id)
        if child is not None and child["status"] not in WORKFLOW_TERMINAL:
            self._end_workflow(child, self._store.workflow_tasks(child_id), "TERMINATED", why)


def _start_request(workflow: JSON, name: Any, version: Any, workflow_input: JSON, correlation_id: Optional[str],
                   task_to_domain: Optional[JSON], priority: Optional[int]) -> JSON:
    """A StartWorkflowRequest from inside ``workflow``: its correlation id and domains carry over."""
    return {
        "name": name, "version": version, "input": workflow_input,
        "correlationId": correlation_id or workflow.get("correlationId"),
        "taskToDomain": task_to_domain or workflow.get("taskToDomain") or {}, "priority": priority or 0,
    }
