"""Workflow life cycle operations: start (a registered or an inline definition), get, terminate,
pause, resume, retry, restart, remove, and the running list (the engine's :class:`Workflows`
mixin). The rest of the workflow API is in :mod:`.workflow_ops`, :mod:`.signals` and
:mod:`.mock_runs`."""

from __future__ import annotations

import copy
from typing import Any, Callable, Dict, List, Optional

from .errors import BadRequest, Conflict, NotFound, ValidationFailed, _violation
from .fields import START_REQUEST_FIELDS, check_fields
from .model import JSON, WORKFLOW_TERMINAL, _java_str, _long, _short, _strip_nulls, new_id, now_ms
from .payloads import WORKFLOW_PAYLOADS, PayloadLimits, _externalized
from .store import _Store
from .timeouts import _workflow_deadline
from .validation import check_priority, normalise_workflow_def
from .views import task_view


class Workflows:
    """The workflow life cycle (a mixin of the engine)."""

    # what the engine provides
    _limits: PayloadLimits
    _tx: Callable[[], Any]
    _decide: Callable[[JSON, List[JSON]], None]
    _externalize: Callable[..., None]
    _attach_task_def: Callable[[JSON], None]
    _end_workflow: Callable[..., None]
    _save_task: Callable[[JSON], None]
    _save_workflow: Callable[[JSON], None]
    _copy_for_retry: Callable[..., JSON]
    _schedule: Callable[..., bool]

    # Workflows ------------------------------------------------------------------------------
    def start_workflow(self, request: Any) -> str:
        """Start a workflow from a StartWorkflowRequest document; return its id."""
        request = check_fields(request, START_REQUEST_FIELDS, "StartWorkflowRequest")
        if request.get("name") is None:
            raise ValidationFailed([_violation("startWorkflow.startWorkflowRequest.name",
                                               "Workflow name cannot be null or empty")])
        priority = request.get("priority") or 0
        check_priority(priority)
        task_to_domain = request.get("taskToDomain") or {}
        if not all(isinstance(value, str) for value in task_to_domain.values()):
            raise BadRequest("Invalid StartWorkflowRequest.taskToDomain: values must be strings")
        inline = request.get("workflowDef")
        inline_def = normalise_workflow_def(inline, "startWorkflow.workflowDef") if inline else None
        with self._tx() as store:
            wf_def = inline_def or store.get_workflow_def(request["name"], request.get("version"))
            if wf_def is None:
                raise NotFound("No such workflow found by name: %s, version: %s"
                               % (request["name"], _java_str(request.get("version"))))
            if "input" in request and request["input"] is None:  # checked after the lookup, as there
                raise BadRequest("NULL input passed when starting workflow")
            workflow = self._new_workflow(store, wf_def, request, priority, task_to_domain)
            self._externalize(workflow, WORKFLOW_PAYLOADS, self._limits.workflow_threshold)
            store.put_workflow(workflow, _workflow_deadline(workflow))
            self._decide(workflow, [])
            return workflow["workflowId"]

    def _new_workflow(self, store: _Store, wf_def: JSON, request: JSON, priority: int,
                      task_to_domain: Dict[str, str]) -> JSON:
        wf_def = copy.deepcopy(wf_def)
        for workflow_task in wf_def["tasks"]:
            self._attach_task_def(workflow_task)
        workflow_input = dict(request.get("input") or {})
        for key, value in (wf_def.get("inputTemplate") or {}).items():
            workflow_input.setdefault(key, value)
        now = now_ms()
        return {
            "createTime": now, "updateTime": now, "createdBy": request.get("createdBy"),
            "status": "RUNNING", "endTime": 0, "workflowId": new_id(), "input": workflow_input,
            "output": {}, "correlationId": request.get("correlationId"), "taskToDomain": task_to_domain,
            "failedReferenceTaskNames": [], "failedTaskNames": [], "workflowDefinition": wf_def,
            "priority": priority, "variables": copy.deepcopy(wf_def.get("variables") or {}),
            "lastRetriedTime": 0, "history": [], "idempotencyKey": request.get("idempotencyKey"),
            "rateLimited": False,
        }

    def get_workflow(self, workflow_id: str, include_tasks: bool = True) -> JSON:
        with self._tx() as store:
            workflow = self._load_workflow(store, workflow_id)
            tasks = store.workflow_tasks(workflow_id) if include_tasks else []
        return self._workflow_view(workflow, tasks)

    @staticmethod
    def _workflow_view(workflow: JSON, tasks: List[JSON]) -> JSON:
        view = _externalized(_strip_nulls(workflow), WORKFLOW_PAYLOADS)
        view["tasks"] = [task_view(task) for task in tasks]
        view["startTime"] = workflow["createTime"]
        view["workflowName"] = workflow["workflowDefinition"]["name"]
        view["workflowVersion"] = workflow["workflowDefinition"]["version"]
        return view

    @staticmethod
    def _load_workflow(store: _Store, workflow_id: str) -> JSON:
        workflow = store.get_workflow(workflow_id)
        if workflow is None:
            raise NotFound("No such workflow found by id: %s" % workflow_id)
        return workflow

    def terminate(self, workflow_id: str, reason: Optional[str]) -> None:
        with self._tx() as store:
            workflow = self._load_workflow(store, workflow_id)
            if workflow["status"] == "COMPLETED":
                raise Conflict("Cannot terminate a COMPLETED workflow.")
            if workflow["status"] == "TERMINATED":
                return
            tasks = store.workflow_tasks(workflow_id)
            self._end_workflow(workflow, tasks, "TERMINATED", reason, force_status=True)

    def pause(self, workflow_id: str) -> None:
        with self._tx() as store:
            workflow = self._load_workflow(store, workflow_id)
            if workflow["status"] in WORKFLOW_TERMINAL:
                raise Conflict("Workflow %s has ended, status cannot be updated." % _short(workflow))
            if workflow["status"] != "PAUSED":
                workflow["status"] = "PAUSED"
                self._save_workflow(workflow)

    def resume(self, workflow_id: str) -> None:
        with self._tx() as store:
            workflow = self._load_workflow(store, workflow_id)
            if workflow["status"] != "PAUSED":
                # conductor-oss answers 500 (IllegalStateException); a state conflict is a 409
                raise Conflict("The workflow %s is not PAUSED so cannot resume. Current status is %s"
                               % (workflow_id, workflow["status"]))
            workflow["status"] = "RUNNING"
            workflow["lastRetriedTime"] = now_ms()
            self._save_workflow(workflow)
            self._decide(workflow, store.workflow_tasks(workflow_id))

    def retry(self, workflow_id: str) -> None:
        """Reschedule the last unsuccessful attempt of every failed reference name."""
        with self._tx() as store:
            workflow = self._load_workflow(store, workflow_id)
            if workflow["status"] not in WORKFLOW_TERMINAL:
                raise NotFound("Workflow is still running.  status=%s" % workflow["status"])
            tasks = store.workflow_tasks(workflow_id)
            if not tasks:
                raise Conflict("Workflow has not started yet")
            retriable: Dict[str, JSON] = {}
            for task in tasks:
                if task["status"] in ("FAILED", "FAILED_WITH_TERMINAL_ERROR", "TIMED_OUT", "CANCELED"):
                    retriable[task["referenceTaskName"]] = task
                else:
                    retriable.pop(task["referenceTaskName"], None)
            if not retriable and workflow["status"] != "TIMED_OUT":
                raise Conflict("There are no retryable tasks! Use restart if you want to attempt "
                               "entire workflow execution again.")
            workflow.update(status="RUNNING", lastRetriedTime=now_ms(), reasonForIncompletion=None)
            self._save_workflow(workflow)
            for old in sorted(retriable.values(), key=lambda t: t["seq"]):
                new = self._copy_for_retry(workflow, tasks, old, delay=0)
                # taskToBeRescheduled: queued at once (callbackAfterSeconds 0), startDelay kept
                new["startDelayInSeconds"] = old.get("startDelayInSeconds") or 0
                old["retried"] = old["executed"] = True
                self._save_task(old)
                self._schedule(workflow, tasks, [new])
            self._decide(workflow, tasks)

    def restart(self, workflow_id: str, use_latest_definitions: bool = False) -> None:
        with self._tx() as store:
            workflow = self._load_workflow(store, workflow_id)
            if workflow["status"] not in WORKFLOW_TERMINAL:
                raise Conflict("Workflow: %s is not in terminal state, unable to restart." % _long(workflow))
            if use_latest_definitions:
                latest = store.get_workflow_def(workflow["workflowDefinition"]["name"], None)
                if latest is None:
                    raise NotFound("Unable to find latest definition for %s" % workflow_id)
                workflow["workflowDefinition"] = self._new_workflow(store, latest, {}, 0, {})[
                    "workflowDefinition"]
            restartable = workflow["workflowDefinition"].get("restartable", True)
            if not restartable and workflow["status"] == "COMPLETED":
                raise NotFound("Workflow: %s is non-restartable" % _long(workflow))
            store.delete_workflow_tasks(workflow_id)
            workflow.update(status="RUNNING", reasonForIncompletion=None, createTime=now_ms(), endTime=0,
                            lastRetriedTime=0, output={})
            self._save_workflow(workflow)
            self._decide(workflow, [])

    def remove(self, workflow_id: str, archive: bool = True) -> None:
        with self._tx() as store:
            workflow = self._load_workflow(store, workflow_id)
            if archive and workflow["status"] not in WORKFLOW_TERMINAL:
                raise BadRequest("Cannot archive workflow: %s with status: %s"
                                 % (workflow_id, workflow["status"]))
            store.delete_workflow(workflow_id)

    def running(self, name: str, version: int) -> List[str]:
        """Ids of the non-terminal workflows of ``name``.

        Like conductor-oss 3.32 (SQLite and Postgres stores), ``version`` is accepted but not used:
        every version's executions are listed.
        """
        with self._tx() as store:
            return store.pending_workflow_ids(name)
