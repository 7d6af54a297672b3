"""The workflow API that tests and scripts use beyond start/get: status, execute, correlation
lookups, test runs with mocked outputs, skip, rerun and signals (a mixin of the engine).

Behaviour follows conductor-oss 3.32.1 (``WorkflowResource``, ``WorkflowSignalResponder``,
``NotificationResult``, ``WorkflowTestService``, ``WorkflowExecutorOps.rerun`` and
``skipTaskFromWorkflow``, ``TaskServiceImpl.signalTask``) and what its server was measured to do.

Waiting (``execute``, ``signal/sync``) never holds the engine lock: each look at the workflow is a
short transaction of its own, and the waiter sleeps :data:`AWAIT_POLL_SECONDS` between looks (the
real server looks every 100 ms).
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Sequence

from ._definitions import SYSTEM_TASK_TYPES, walk

log = logging.getLogger(__name__)

JSON = Dict[str, Any]

TASK_TERMINAL = frozenset({"COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED", "FAILED_WITH_TERMINAL_ERROR",
                           "TIMED_OUT", "CANCELED", "SKIPPED"})
TASK_SUCCESSFUL = frozenset({"COMPLETED", "COMPLETED_WITH_ERRORS", "SKIPPED", "IN_PROGRESS", "SCHEDULED"})
WORKFLOW_TERMINAL = frozenset({"COMPLETED", "FAILED", "TIMED_OUT", "TERMINATED"})

#: ``returnStrategy`` of ``execute`` and ``signal/sync`` (WorkflowSignalReturnStrategy).
RETURN_STRATEGIES = ("TARGET_WORKFLOW", "BLOCKING_WORKFLOW", "BLOCKING_TASK", "BLOCKING_TASK_INPUT")
#: How often a waiting ``execute`` / ``signal/sync`` looks at the workflow again (seconds).
AWAIT_POLL_SECONDS = 0.02
#: ``WorkflowTestService.MAX_LOOPS``: a test run gives up (and answers what it has) after these rounds.
TEST_MAX_LOOPS = 20_000
#: Task types a test run never needs a mock for (WorkflowTestService's "operators").
TEST_OPERATORS = frozenset({
    "JOIN", "DO_WHILE", "SET_VARIABLE", "FORK", "INLINE", "TERMINATE", "DECISION", "DYNAMIC", "FORK_JOIN",
    "FORK_JOIN_DYNAMIC", "SWITCH", "SUB_WORKFLOW",
})
RERUN_FIELDS: Dict[str, Any] = {
    "reRunFromWorkflowId": "str", "workflowInput": "dict", "reRunFromTaskId": "str", "taskInput": "dict",
    "correlationId": "str",
}


def _now() -> int:
    return int(time.time() * 1000)


def _strip_nulls(obj: JSON) -> JSON:
    return {key: value for key, value in obj.items() if value is not None}


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


class _Blocking:
    """What ``WorkflowSignalResponder.findBlockingTasks`` found: the tasks and the workflow (view)."""

    __slots__ = ("tasks", "workflow")

    def __init__(self) -> None:
        self.tasks: List[JSON] = []
        self.workflow: Optional[JSON] = None


class WorkflowOps:
    """Workflow operations of the engine (see the module docstring)."""

    # what the engine provides
    _lock: Any
    _store: Any
    _closed: bool
    _tx: Callable[[], Any]
    _load_workflow: Callable[[Any, str], JSON]
    _workflow_view: Callable[[JSON, List[JSON]], JSON]
    _decide: Callable[[JSON, List[JSON]], None]
    _save_task: Callable[[JSON], None]
    _save_workflow: Callable[[JSON], None]
    _persist_task: Callable[[JSON], None]
    _push: Callable[[JSON, int], None]
    start_workflow: Callable[[Any], str]
    update_task: Callable[[Any], Optional[JSON]]
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
        from ._engine import task_view

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

    # -- PUT /workflow/{id}/skiptask/{ref} --------------------------------------------------------
    def skip_task(self, workflow_id: str, ref_name: str) -> None:
        """Record a SKIPPED task for ``ref_name`` (not yet scheduled); the flow passes over it.

        conductor-oss answers its three refusals with 500 (IllegalStateException); here they are 409.
        The server binds SkipTaskRequest from query parameters, so a body never reaches it: the
        skipped task's input and output stay empty.
        """
        from ._engine import Conflict, new_id

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
        from ._engine import BadRequest, check_fields

        request = check_fields(request, RERUN_FIELDS, "RerunWorkflowRequest")
        with self._tx() as store:
            if not self._rerun(store, workflow_id, request.get("reRunFromTaskId"), request.get("taskInput"),
                               request.get("workflowInput"), request.get("correlationId")):
                raise BadRequest("Task %s not found" % request.get("reRunFromTaskId"))
        return workflow_id

    def _rerun(self, store: Any, workflow_id: str, task_id: Optional[str], task_input: Optional[JSON],
               workflow_input: Optional[JSON], correlation_id: Optional[str]) -> bool:
        """WorkflowExecutorOps.rerunWF (recursive into sub-workflows); False if ``task_id`` is not there."""
        from ._engine import Conflict, _long

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

    # -- POST /workflow/test ----------------------------------------------------------------------
    def test_workflow(self, request: JSON) -> JSON:
        """Start a workflow and run it with mocked outputs for its worker tasks (WorkflowTestService).

        The SIMPLE tasks go to a random domain, so that no worker polls them. Each round looks at the
        workflow: when a task that needs a worker has no mock, the workflow is answered as it is
        (RUNNING); otherwise every pending task gets its next mock (system tasks really run).
        """
        from ._engine import BadRequest

        mocks = _check_test_request(request, "WorkflowTestRequest")
        start = {key: value for key, value in request.items()
                 if key not in ("taskRefToMockOutput", "subWorkflowTestRequest")}
        task_to_domain = request.get("taskToDomain") or {}
        if not isinstance(task_to_domain, dict):
            raise BadRequest("Invalid WorkflowTestRequest.taskToDomain: expected a JSON object")
        # as on the server: the test's tasks go to a domain of their own, so that no worker polls them
        start["taskToDomain"] = dict(task_to_domain, **{"*": str(uuid.uuid4())})
        workflow_id = self.start_workflow(start)
        return self._run_test(request, mocks, workflow_id)

    def _run_test(self, request: JSON, mocks: Dict[str, List[JSON]], workflow_id: str) -> JSON:
        sub_requests = request.get("subWorkflowTestRequest") or {}
        loops = 0
        while True:
            loops += 1
            with self._tx() as store:
                view = self._workflow_view(self._load_workflow(store, workflow_id),
                                           store.workflow_tasks(workflow_id))
            if loops > TEST_MAX_LOOPS:
                return view
            running = [task for task in view["tasks"] if task["status"] not in TASK_TERMINAL]
            if any(task["taskType"] not in TEST_OPERATORS and task["referenceTaskName"] not in mocks
                   for task in running):
                break
            for task in running:
                ref = task["referenceTaskName"]
                sub_request = sub_requests.get(ref)
                if task["taskType"] == "SUB_WORKFLOW" and task.get("subWorkflowId") and isinstance(sub_request, dict):
                    self._run_test(sub_request, _check_test_request(sub_request, "subWorkflowTestRequest"),
                                   task["subWorkflowId"])
                queue = mocks.get(ref)
                if not queue or task["taskType"] in TEST_OPERATORS:
                    mocks.pop(ref, None)
                    self._decide_by_id(workflow_id)
                    continue
                self._apply_mock(workflow_id, task, queue.pop(0))
            if view["status"] in WORKFLOW_TERMINAL or not mocks:
                break
        return view

    def _apply_mock(self, workflow_id: str, task: JSON, mock: JSON) -> None:
        status = mock.get("status") or "COMPLETED"
        output = mock.get("output") or {}
        execution_time = mock.get("executionTime") or 0
        queue_wait_time = mock.get("queueWaitTime") or 0
        if execution_time <= 0 and queue_wait_time <= 0:
            merged = dict(task.get("outputData") or {})
            merged.update(output)
            self.update_task(_task_result(task, status, merged))
            return
        with self._tx() as store:  # the times are written as they are, then the workflow is decided
            stored = store.get_task(task["taskId"])
            if stored is None:
                return
            now = _now()
            stored.update(scheduledTime=now - (execution_time + queue_wait_time), startTime=now - execution_time,
                          status=status)
            stored["outputData"] = dict(stored.get("outputData") or {}, **output)
            if status in TASK_TERMINAL:
                store.remove_from_queue(stored["taskId"])
            self._save_task(stored)
            self._decide_by_id(workflow_id)

    def _decide_by_id(self, workflow_id: str) -> None:
        with self._tx() as store:
            workflow = store.get_workflow(workflow_id)
            if workflow is not None:
                self._decide(workflow, store.workflow_tasks(workflow_id))


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


def _rerun_status(kind: str) -> str:
    """The status a rerun gives a task: a worker's task, HTTP and SUB_WORKFLOW are scheduled again
    (a SUB_WORKFLOW then starts a new child); the other system tasks run in the next decide."""
    if kind not in SYSTEM_TASK_TYPES or kind in ("HTTP", "SUB_WORKFLOW"):
        return "SCHEDULED"
    return "IN_PROGRESS"


def _task_result(task: JSON, status: str, output: JSON) -> JSON:
    """``new TaskResult(task)`` with ``status`` and ``output``."""
    return {
        "workflowInstanceId": task["workflowInstanceId"], "taskId": task["taskId"], "status": status,
        "reasonForIncompletion": task.get("reasonForIncompletion"),
        "callbackAfterSeconds": task.get("callbackAfterSeconds") or 0, "workerId": task.get("workerId"),
        "outputData": output, "subWorkflowId": task.get("subWorkflowId"),
    }


def _check_test_request(request: Any, what: str) -> Dict[str, List[JSON]]:
    """The ``taskRefToMockOutput`` of a WorkflowTestRequest, type-checked (a copy the run consumes)."""
    from ._engine import RESULT_STATUSES, BadRequest

    if not isinstance(request, dict):
        raise BadRequest("Invalid %s: expected a JSON object" % what)
    raw = request.get("taskRefToMockOutput") or {}
    if not isinstance(raw, dict):
        raise BadRequest("Invalid %s.taskRefToMockOutput: expected a JSON object" % what)
    subs = request.get("subWorkflowTestRequest") or {}
    if not isinstance(subs, dict) or not all(isinstance(sub, dict) for sub in subs.values()):
        raise BadRequest("Invalid %s.subWorkflowTestRequest: expected a JSON object of WorkflowTestRequest" % what)
    mocks: Dict[str, List[JSON]] = {}
    for ref, queue in raw.items():
        if queue is None:
            queue = []
        if not isinstance(queue, list):
            raise BadRequest("Invalid %s.taskRefToMockOutput.%s: expected a JSON array of TaskMock" % (what, ref))
        checked = []
        for mock in queue:
            if not isinstance(mock, dict):
                raise BadRequest("Invalid %s.taskRefToMockOutput.%s: expected TaskMock objects" % (what, ref))
            status = mock.get("status")
            if status is not None and status not in RESULT_STATUSES:
                raise BadRequest("Invalid value %s for TaskMock.status: not one of the values accepted for Enum "
                                 "class: [%s]" % (json.dumps(status), ", ".join(RESULT_STATUSES)))
            if mock.get("output") is not None and not isinstance(mock["output"], dict):
                raise BadRequest("Invalid %s.taskRefToMockOutput.%s: TaskMock.output must be a JSON object"
                                 % (what, ref))
            for key in ("executionTime", "queueWaitTime"):
                value = mock.get(key)
                if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                    raise BadRequest("Invalid value %s for TaskMock.%s: expected an integer" % (json.dumps(value), key))
            checked.append(dict(mock))
        mocks[str(ref)] = checked
    return mocks


def signal_strategy(value: Optional[str]) -> str:
    """A ``returnStrategy`` query value (default TARGET_WORKFLOW); BadRequest for an unknown one."""
    from ._engine import BadRequest

    if value is None or value == "":
        return "TARGET_WORKFLOW"
    if value not in RETURN_STRATEGIES:
        raise BadRequest("Invalid value %r for query parameter returnStrategy: expected one of %s"
                         % (value, ", ".join(RETURN_STRATEGIES)))
    return value


__all__ = ["WorkflowOps", "RETURN_STRATEGIES", "signal_strategy"]
