"""The decider, which advances a workflow after every change (DeciderService.decide): it
evaluates the pending tasks (timeouts, retries, what follows a finished task), schedules and
enqueues the new ones, runs the system tasks until the workflow settles, and ends the workflow
(completed, failed, timed out, terminated) with its output (the engine's :class:`Decider` mixin).
Timeouts are in :mod:`.timeouts`, retries in :mod:`.retries`."""

from __future__ import annotations

import copy
import time
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

from .definitions import SYSTEM_TASK_TYPES, next_task, strip_iteration
from .errors import _Terminate
from .expressions import expression_document, resolve, resolve_task_input
from .fields import TASK_DEF_DEFAULTS
from .model import JSON, TASK_SUCCESSFUL, TASK_TERMINAL, WORKFLOW_TERMINAL, new_id, now_ms
from .store import _Store
from .task_list import TaskList, as_task_list

#: How long one decide may run before the sweeper takes over the rest (the engine's lock is free in between).
DECIDE_SLICE_SECONDS = 0.1
#: How long a poll keeps a domain "active" for ``taskToDomain`` values with several domains.
ACTIVE_DOMAIN_WINDOW_MS = 10_000


class Decider:
    """The decider (a mixin of the engine)."""

    # what the engine provides
    _deciding: Set[str]
    _store: _Store
    _save_task: Callable[[JSON], None]
    _persist_task: Callable[[JSON], None]
    _save_workflow: Callable[[JSON], None]
    _push: Callable[[JSON, int], None]
    _check_workflow_timeout: Callable[[JSON], None]
    _check_task_timeouts: Callable[[JSON], bool]
    _retry: Callable[[JSON, List[JSON], JSON], Optional[JSON]]
    _tasks_for: Callable[..., List[JSON]]
    _run_system_tasks: Callable[[JSON, List[JSON], List[JSON], Dict[str, JSON]], bool]
    _continue_later: Callable[[str], None]
    _notify_parent: Callable[[JSON], None]
    _cancel_children: Callable[[List[JSON], str, Optional[str]], None]

    # The decider ----------------------------------------------------------------------------
    def _decide(self, workflow: JSON, tasks: List[JSON]) -> None:
        """Advance ``workflow`` (DeciderService.decide, then the system tasks, until it settles).

        One decide works for at most :data:`DECIDE_SLICE_SECONDS`: a workflow whose system tasks
        keep it moving (an endless DO_WHILE of system tasks) is then handed to the sweeper to go on,
        which gives the engine's lock back in between, as conductor-oss re-queues a workflow whose
        decide nears its lock's lease. Each round costs what it schedules and what is pending, not
        what the workflow has done before.
        """
        workflow_id = workflow["workflowId"]
        if workflow["status"] in WORKFLOW_TERMINAL or workflow_id in self._deciding:
            return
        self._deciding.add(workflow_id)
        tasks = as_task_list(tasks)
        unsaved: Dict[str, JSON] = {}  # loop tasks whose new iteration is saved when the decide ends
        try:
            self._check_workflow_timeout(workflow)
            if workflow["status"] == "PAUSED":
                return
            pending = [task for task in tasks if _is_pending(task)]
            seen_seq = tasks.max_seq()
            deadline = time.monotonic() + DECIDE_SLICE_SECONDS
            while True:
                stored = {task["taskId"]: dict(task) for task in pending}
                to_schedule = self._evaluate_pending(workflow, tasks, pending)
                if not to_schedule and self._is_complete(workflow, tasks):
                    self._save_unsaved(unsaved)
                    self._complete(workflow, tasks)
                    self._keep_stored(stored, tasks)
                    return
                scheduled = self._schedule(workflow, tasks, to_schedule)
                pending = [task for task in pending if _is_pending(task)]
                pending += _scheduled_since(tasks, seen_seq)
                seen_seq = tasks.max_seq()
                ran = self._run_system_tasks(workflow, tasks, pending, unsaved)
                pending = [task for task in pending if _is_pending(task)]
                pending += _scheduled_since(tasks, seen_seq)
                seen_seq = tasks.max_seq()
                if not ran and not scheduled:
                    break
                if time.monotonic() >= deadline:
                    self._continue_later(workflow_id)
                    break
            self._save_unsaved(unsaved)
        except _Terminate as stop:
            self._save_unsaved(unsaved)
            if stop.task is not None:
                self._save_task(stop.task)
            self._end_workflow(workflow, tasks, stop.status, stop.reason, output=stop.output)
        finally:
            self._deciding.discard(workflow_id)

    def _save_unsaved(self, unsaved: Dict[str, JSON]) -> None:
        for task in unsaved.values():
            self._save_task(task)
        unsaved.clear()

    def _keep_stored(self, stored: Dict[str, JSON], tasks: List[JSON]) -> None:
        """Undo what the completing decide changed in its tasks' stored state, as conductor-oss does.

        Its WorkflowExecutorOps.decide completes the workflow and returns before it saves the
        decider's task updates: a failed optional last task stays FAILED (not COMPLETED_WITH_ERRORS)
        and the last task stays ``executed: false`` (measured on 3.32.1). The output and the failed
        task lists were computed from the decided tasks, as there. (``stored`` holds shallow copies
        taken before the round: the round changes only top-level fields of pending tasks.)
        """
        for task in tasks:
            before = stored.get(task["taskId"])
            if before is not None and before != task:
                self._persist_task(before)

    def _evaluate_pending(self, workflow: JSON, tasks: TaskList, pending: List[JSON]) -> List[JSON]:
        """The tasks to schedule after the pending ones: retries, and what follows those that ended."""
        pending_ids = {id(task) for task in pending}
        retried_refs: Set[str] = set()
        to_schedule: Dict[str, JSON] = {}
        for task in list(pending):
            changed = self._check_task_timeouts(task)
            if task["status"] in TASK_TERMINAL and task["status"] not in TASK_SUCCESSFUL:
                retry = self._retry(workflow, tasks, task)
                changed = True
                if retry is not None:
                    to_schedule[retry["referenceTaskName"]] = retry
                    retried_refs.add(retry["referenceTaskName"])
                elif task["workflowTask"].get("optional"):
                    task["status"] = "COMPLETED_WITH_ERRORS"
            if not task.get("executed") and not task.get("retried") and task["status"] in TASK_TERMINAL:
                task["executed"] = True
                changed = True
                for following in self._next_tasks(workflow, tasks, task):
                    to_schedule.setdefault(following["referenceTaskName"], following)
            if changed:
                self._save_task(task)
        if not tasks:
            first = workflow["workflowDefinition"]["tasks"][0]
            for new in self._tasks_for(workflow, tasks, first):
                to_schedule.setdefault(new["referenceTaskName"], new)

        def executed_before(ref: str) -> bool:  # executed before this round began
            return ref not in retried_refs and any(
                task.get("executed") and id(task) not in pending_ids for task in tasks.with_ref(ref))

        return [task for ref, task in to_schedule.items() if not executed_before(ref)]

    def _next_tasks(self, workflow: JSON, tasks: List[JSON], task: JSON) -> List[JSON]:
        """DeciderService.getNextTask: what follows ``task`` (a case, a branch, a loop: see definitions)."""
        if task["taskType"] in ("SWITCH", "DECISION") and task["inputData"].get("hasChildren") is not None:
            return []  # its branch is running: the branch's last task leads on
        definition = workflow["workflowDefinition"]["tasks"]
        in_loop = bool(task.get("iteration")) and task["taskType"] != "DO_WHILE"
        ref = strip_iteration(task["referenceTaskName"]) if in_loop else task["referenceTaskName"]
        following = next_task(definition, ref)
        tasks = as_task_list(tasks)
        while following is not None and any(
                t["status"] == "SKIPPED" for t in tasks.with_ref(following["taskReferenceName"])):
            following = next_task(definition, following["taskReferenceName"])
        if following is None:
            return []
        if following.get("type") == "DO_WHILE" and tasks.with_ref(following["taskReferenceName"]):
            return []  # the end of a loop's body: the DO_WHILE decides (see _run_do_while)
        return self._tasks_for(workflow, tasks, following, task.get("iteration") or 0 if in_loop else 0)

    @staticmethod
    def _next_workflow_task(workflow: JSON, ref_name: str) -> Optional[JSON]:
        return next_task(workflow["workflowDefinition"]["tasks"], strip_iteration(ref_name))

    def _new_task(self, workflow: JSON, tasks: List[JSON], workflow_task: JSON,
                  created: Sequence[JSON] = ()) -> JSON:
        """SimpleTaskMapper: a SCHEDULED task for ``workflow_task`` (not yet persisted); its input is
        resolved against ``tasks`` and then ``created`` (those made in the same step)."""
        task_def = workflow_task.get("taskDefinition") or dict(TASK_DEF_DEFAULTS, name=workflow_task["name"])
        task_input = resolve_task_input(workflow_task, task_def, expression_document(workflow, tasks, created))
        start_delay = workflow_task.get("startDelay") or 0
        return {
            "taskType": workflow_task["name"], "status": "SCHEDULED", "inputData": task_input,
            "referenceTaskName": workflow_task["taskReferenceName"], "retryCount": 0, "seq": 0,
            "correlationId": workflow.get("correlationId"), "pollCount": 0,
            "taskDefName": workflow_task["name"], "scheduledTime": 0, "startTime": 0, "endTime": 0,
            "updateTime": 0, "startDelayInSeconds": start_delay, "retried": False, "executed": False,
            "callbackFromWorker": True, "responseTimeoutSeconds": task_def.get("responseTimeoutSeconds"),
            "workflowInstanceId": workflow["workflowId"],
            "workflowType": workflow["workflowDefinition"]["name"],
            "taskId": new_id(), "callbackAfterSeconds": start_delay, "outputData": {},
            "workflowTask": workflow_task, "rateLimitPerFrequency": task_def.get("rateLimitPerFrequency", 0),
            "rateLimitFrequencyInSeconds": task_def.get("rateLimitFrequencyInSeconds", 1),
            "workflowPriority": workflow.get("priority") or 0, "iteration": 0, "subworkflowChanged": False,
            "firstStartTime": 0, "isolationGroupId": task_def.get("isolationGroupId"),
            "executionNameSpace": task_def.get("executionNameSpace"),
            "domain": self._domain_for(workflow, workflow_task["name"]),
        }

    def _domain_for(self, workflow: JSON, task_type: str) -> Optional[str]:
        """WorkflowExecutor.getActiveDomain: first domain polled in the last 10 s, else the last."""
        mapping = workflow.get("taskToDomain") or {}
        value = mapping.get(task_type) or mapping.get("*")
        if not value:
            return None
        domains = [domain.strip() for domain in value.split(",") if domain.strip()]
        if not domains:
            return None
        recent = {domain: when for _, domain, _, when in self._store.poll_data(task_type)}
        for domain in domains:
            if domain == "NO_DOMAIN":
                return None
            if now_ms() - recent.get(domain, 0) <= ACTIVE_DOMAIN_WINDOW_MS:
                return domain
        last = domains[-1]
        return None if last == "NO_DOMAIN" else last

    def _schedule(self, workflow: JSON, tasks: List[JSON], new_tasks: List[JSON]) -> bool:
        """Persist and enqueue ``new_tasks`` (deduplicated on refName + retryCount); True if any was new.

        The new tasks are appended to ``tasks`` (the decide's :class:`TaskList`, or a plain list).
        """
        index = as_task_list(tasks)
        added: Set[Tuple[str, int]] = set()
        seq = index.max_seq()
        scheduled = False
        for task in new_tasks:
            key = (task["referenceTaskName"], task["retryCount"])
            if index.has_attempt(*key) and key not in added:
                continue
            added.add(key)
            seq += 1
            delay_ms = task.pop("_delayMs", (task.get("callbackAfterSeconds") or 0) * 1000)
            task["seq"] = seq
            task["scheduledTime"] = now_ms()
            system = task["taskType"] in SYSTEM_TASK_TYPES
            if system and not task.get("startTime"):
                task["startTime"] = task["scheduledTime"]  # the server starts them itself
            if task["status"] in TASK_TERMINAL and not task.get("endTime"):
                task["endTime"] = task["scheduledTime"]
            self._persist_task(task)
            if not system:
                self._push(task, delay_ms)
            tasks.append(task)
            if index is not tasks:
                index.append(task)
            scheduled = True
        if scheduled:
            self._save_workflow(workflow)
        return scheduled

    def _is_complete(self, workflow: JSON, tasks: List[JSON]) -> bool:
        """DeciderService.checkForWorkflowCompletion: every top-level task done, nothing left to run."""
        if not tasks or any(task["status"] not in TASK_TERMINAL for task in tasks):
            return False
        status_by_ref = {strip_iteration(task["referenceTaskName"]) if task.get("iteration") else
                         task["referenceTaskName"]: task["status"] for task in tasks}
        for workflow_task in workflow["workflowDefinition"]["tasks"]:
            if workflow_task["taskReferenceName"] not in status_by_ref:
                return False
        for task in tasks:
            if task["taskType"] in ("SWITCH", "DECISION") and task["inputData"].get("hasChildren") is not None:
                continue
            if not task.get("retried") or not task.get("executed"):
                following = self._next_workflow_task(workflow, task["referenceTaskName"])
                if following is not None and following["taskReferenceName"] not in status_by_ref:
                    return False
        return True

    def _workflow_output(self, workflow: JSON, tasks: List[JSON]) -> JSON:
        output_parameters = workflow["workflowDefinition"].get("outputParameters") or {}
        if output_parameters:
            return resolve(output_parameters, expression_document(workflow, tasks))
        return copy.deepcopy(tasks[-1].get("outputData") or {}) if tasks else workflow.get("output") or {}

    def _record_failed_tasks(self, workflow: JSON, tasks: List[JSON]) -> None:
        failed = [task for task in tasks if task["status"] in ("FAILED", "FAILED_WITH_TERMINAL_ERROR")]
        refs = set(workflow.get("failedReferenceTaskNames") or [])
        names = set(workflow.get("failedTaskNames") or [])
        refs.update(task["referenceTaskName"] for task in failed)
        names.update(task["taskDefName"] for task in failed)
        workflow["failedReferenceTaskNames"] = sorted(refs)
        workflow["failedTaskNames"] = sorted(names)

    def _complete(self, workflow: JSON, tasks: List[JSON]) -> None:
        workflow["output"] = self._workflow_output(workflow, tasks)
        workflow["status"] = "COMPLETED"
        self._record_failed_tasks(workflow, tasks)
        self._save_workflow(workflow)
        self._notify_parent(workflow)

    def _end_workflow(self, workflow: JSON, tasks: List[JSON], status: str, reason: Optional[str],
                      force_status: bool = False, output: Optional[JSON] = None) -> None:
        """terminateWorkflow: set status and reason, compute output, cancel pending tasks."""
        if force_status or workflow["status"] not in WORKFLOW_TERMINAL:
            workflow["status"] = status
        workflow["output"] = self._workflow_output(workflow, tasks) if output is None else output
        self._record_failed_tasks(workflow, tasks)
        workflow["reasonForIncompletion"] = reason
        for task in tasks:
            self._store.remove_from_queue(task["taskId"])
            if task["status"] not in TASK_TERMINAL:
                task["status"] = "CANCELED"
                self._save_task(task)
        self._save_workflow(workflow)
        self._cancel_children(tasks, workflow["status"], reason)
        self._notify_parent(workflow)


def _scheduled_since(tasks: TaskList, seq: int) -> List[JSON]:
    """The tasks scheduled after the one numbered ``seq`` (they are at the end of the list)."""
    start = len(tasks)
    while start > 0 and (tasks[start - 1].get("seq") or 0) > seq:
        start -= 1
    return [task for task in tasks[start:] if _is_pending(task)]


def _is_pending(task: JSON) -> bool:
    """Still part of the decider's work: not retried, not executed, not skipped."""
    return not task.get("retried") and not task.get("executed") and task["status"] != "SKIPPED"
