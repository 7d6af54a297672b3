"""Test runs (``POST /api/workflow/test``, conductor-oss's WorkflowTestService): start a workflow and
run it with mocked outputs for its worker tasks, in its sub-workflows too (the engine's
:class:`MockRuns` mixin)."""

from __future__ import annotations

import json
import uuid
from typing import Any, Callable, Dict, List, Optional

from .errors import BadRequest
from .model import JSON, RESULT_STATUSES, TASK_TERMINAL, WORKFLOW_TERMINAL
from .model import now_ms as _now
from .signals import _task_result

#: ``WorkflowTestService.MAX_LOOPS``: a test run gives up (and answers what it has) after these rounds.
TEST_MAX_LOOPS = 20_000
#: Task types a test run never needs a mock for (WorkflowTestService's "operators").
TEST_OPERATORS = frozenset({
    "JOIN", "DO_WHILE", "SET_VARIABLE", "FORK", "INLINE", "TERMINATE", "DECISION", "DYNAMIC", "FORK_JOIN",
    "FORK_JOIN_DYNAMIC", "SWITCH", "SUB_WORKFLOW",
})


class MockRuns:
    """Test runs with mocked task outputs (a mixin of the engine)."""

    # what the engine provides
    _tx: Callable[[], Any]
    _load_workflow: Callable[[Any, str], JSON]
    _workflow_view: Callable[[JSON, List[JSON]], JSON]
    _decide: Callable[[JSON, List[JSON]], None]
    _save_task: Callable[[JSON], None]
    start_workflow: Callable[[Any], str]
    update_task: Callable[[Any], Optional[JSON]]

    # -- POST /workflow/test ----------------------------------------------------------------------
    def test_workflow(self, request: JSON) -> JSON:
        """Start a workflow and run it with mocked outputs for its worker tasks (WorkflowTestService).

        The SIMPLE tasks go to a random domain, so that no worker polls them. Each round looks at the
        workflow: when a task that needs a worker has no mock, the workflow is answered as it is
        (RUNNING); otherwise every pending task gets its next mock (system tasks really run).
        """
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


def _check_test_request(request: Any, what: str) -> Dict[str, List[JSON]]:
    """The ``taskRefToMockOutput`` of a WorkflowTestRequest, type-checked (a copy the run consumes)."""
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
