"""System tasks of LocalConductor: how each is scheduled (its "mapper") and run (its "executor").

Behaviour follows conductor-oss 3.32 (its task mappers and ``WorkflowSystemTask`` classes, and
what its server was measured to do): ``SWITCH``/``DECISION`` and ``FORK`` complete as they are
created, together with the first tasks of their branches; ``NOOP``, ``SET_VARIABLE``,
``TERMINATE``, ``INLINE``, ``JSON_JQ_TRANSFORM``, ``START_WORKFLOW`` and ``SUB_WORKFLOW`` (its
start) run in the decide that schedules them; ``JOIN`` and ``DO_WHILE`` are re-evaluated on every
decide; ``WAIT`` ends at its time (the sweeper) or by an update, ``HUMAN`` by an update; ``HTTP``
runs on a bounded pool of threads, outside the engine lock, and reports back like a worker would.

:class:`SystemTasks` is a mixin of the engine: it uses the engine's store, task factory, decider
and workflow start. This module has the dispatch (the mapper and executor of each type), the
simple tasks, ``WAIT`` and the scripts; the control-flow tasks are in :mod:`.control_flow`,
``SUB_WORKFLOW`` and ``START_WORKFLOW`` in :mod:`.subworkflows`, ``HTTP`` in :mod:`.http_task`.
"""

from __future__ import annotations

import copy
import re
import time
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from .control_flow import ControlFlow, java_string
from .definitions import SYSTEM_TASK_TYPES, UNSUPPORTED_SYSTEM_TYPES, is_user_defined, walk, with_iteration
from .errors import _Terminate
from .fields import TASK_DEF_DEFAULTS
from .http_task import HttpTask
from .model import JSON, TASK_TERMINAL
from .scripts import ScriptError, Scripts
from .task_list import TaskList, as_task_list
from .subworkflows import SubWorkflows

#: What a system task without a task definition of its own runs with (conductor-oss's defaults).
SYNTHETIC_TASK_DEF: JSON = {
    "retryCount": 0, "retryDelaySeconds": 60, "responseTimeoutSeconds": 0, "timeoutSeconds": 0,
    "rateLimitFrequencyInSeconds": 1, "rateLimitPerFrequency": 0, "timeoutPolicy": "TIME_OUT_WF",
    "retryLogic": "FIXED", "inputKeys": [], "outputKeys": [], "inputTemplate": {}, "createTime": 0,
}
#: A WAIT with neither ``duration`` nor ``until`` waits "for ever" (Integer.MAX_VALUE seconds).
WAIT_FOREVER_SECONDS = 2 ** 31 - 1

_DURATION = re.compile(
    r"^\s*(?:(\d+)\s*(?:days?|d))?\s*(?:(\d+)\s*(?:hours?|hrs?|h))?\s*(?:(\d+)\s*(?:minutes?|mins?|m))?"
    r"\s*(?:(\d+)\s*(?:seconds?|secs?|s))?\s*$", re.IGNORECASE)
_UNTIL_FORMATS = ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M %Z", "%Y-%m-%d %H:%M %z", "%Y-%m-%d")


def _seconds(duration: str) -> Optional[int]:
    match = _DURATION.match(duration or "")
    if not match or not any(match.groups()):
        return None
    days, hours, minutes, seconds = (int(group or 0) for group in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def _until_ms(until: str) -> Optional[int]:
    for pattern in _UNTIL_FORMATS:
        try:
            moment = datetime.strptime(until.strip(), pattern)
        except ValueError:
            continue
        if moment.tzinfo is None:
            if until.strip().upper().endswith(("UTC", "GMT")):
                moment = moment.replace(tzinfo=timezone.utc)
            else:
                return int(moment.timestamp() * 1000)  # server local time, like conductor-oss
        return int(moment.timestamp() * 1000)
    return None


class SystemTasks(ControlFlow, SubWorkflows, HttpTask):
    """Mappers and executors of the system tasks (mixed into the engine)."""

    # what the engine provides
    _scripts: Scripts
    _deciding: Set[str]
    _store: Any
    _limits: Any
    http_allowed_hosts: Tuple[str, ...]
    _new_task: Callable[..., JSON]
    _new_workflow: Callable[..., JSON]
    _save_task: Callable[[JSON], None]
    _save_workflow: Callable[[JSON], None]
    _schedule: Callable[..., bool]
    _domain_for: Callable[[JSON, str], Optional[str]]
    _decide: Callable[[JSON, List[JSON]], None]
    _end_workflow: Callable[..., None]
    _externalize: Callable[..., None]
    _tx: Callable[[], Any]

    # -- mapping: the tasks a workflow task turns into -------------------------------------------
    def _tasks_for(self, workflow: JSON, tasks: List[JSON], workflow_task: JSON, iteration: int = 0,
                   created: Optional[List[JSON]] = None) -> List[JSON]:
        """``DeciderService.getTasksToBeScheduled``: new tasks for ``workflow_task`` (and children)."""
        created = TaskList() if created is None else created
        tasks = as_task_list(tasks)
        kind = workflow_task.get("type") or "SIMPLE"
        mapper = _MAPPERS.get(kind)
        if mapper is None:
            mapper = SystemTasks._map_user_defined if is_user_defined(kind) else SystemTasks._map_simple
        batch = mapper(self, workflow, tasks, workflow_task, iteration, created)

        def present(ref: str) -> bool:
            return any(task["status"] == "IN_PROGRESS" or task["status"] in TASK_TERMINAL
                       for task in tasks.with_ref(ref))

        return [task for task in batch if not present(task["referenceTaskName"])]

    def _task(self, workflow: JSON, tasks: List[JSON], workflow_task: JSON, iteration: int,
              created: List[JSON], task_type: Optional[str] = None, def_name: Optional[str] = None,
              status: str = "SCHEDULED") -> JSON:
        """One task of ``workflow_task``; input resolved against the tasks so far (and ``created``)."""
        task = self._new_task(workflow, tasks, workflow_task, created)
        if iteration:
            task["referenceTaskName"] = with_iteration(workflow_task["taskReferenceName"], iteration)
            task["iteration"] = iteration
        if task_type is not None:
            task["taskType"] = task_type
            task["taskDefName"] = def_name or workflow_task["name"]
            task["domain"] = None
            task["callbackFromWorker"] = False
            task["responseTimeoutSeconds"] = None
        task["status"] = status
        created.append(task)
        return task

    def _system(self, workflow: JSON, tasks: List[JSON], workflow_task: JSON, iteration: int,
                created: List[JSON]) -> List[JSON]:
        kind = workflow_task["type"]
        status = "IN_PROGRESS" if kind in ("WAIT", "HUMAN") else "SCHEDULED"
        task = self._task(workflow, tasks, workflow_task, iteration, created, kind, status=status)
        if kind == "WAIT":
            self._map_wait(task)
        elif kind == "HTTP":  # HTTPTaskMapper: the workflow task's own field, whatever the input says
            task["inputData"]["asyncComplete"] = workflow_task.get("asyncComplete")
        return [task]

    def _map_simple(self, workflow: JSON, tasks: List[JSON], workflow_task: JSON, iteration: int,
                    created: List[JSON]) -> List[JSON]:
        """SimpleTaskMapper: one task for the queue of its name."""
        return [self._task(workflow, tasks, workflow_task, iteration, created)]

    def _map_unsupported(self, workflow: JSON, tasks: List[JSON], workflow_task: JSON, iteration: int,
                         created: List[JSON]) -> List[JSON]:
        """A system task conductor-oss runs and LocalConductor does not: created failed, naming its type."""
        kind = workflow_task["type"]
        task = self._task(workflow, tasks, workflow_task, iteration, created, kind,
                          status="FAILED_WITH_TERMINAL_ERROR")
        task["reasonForIncompletion"] = (
            "LocalConductor does not run task type %s (task %r, reference %s): it is a system task of "
            "conductor-oss that LocalConductor does not implement" % (kind, workflow_task["name"],
                                                                       workflow_task["taskReferenceName"]))
        return [task]

    def _map_user_defined(self, workflow: JSON, tasks: List[JSON], workflow_task: JSON, iteration: int,
                          created: List[JSON]) -> List[JSON]:
        """A type without a mapper (``YIELD``, any made-up type): a task for the queue of its type, as
        UserDefinedTaskMapper makes."""
        task = self._task(workflow, tasks, workflow_task, iteration, created)
        task["taskType"] = workflow_task["type"]
        task["domain"] = self._domain_for(workflow, task["taskType"])
        return [task]

    def _map_wait(self, task: JSON) -> None:
        params = task["inputData"]
        duration, until = params.get("duration"), params.get("until")
        if duration and until:
            task.update(status="FAILED_WITH_TERMINAL_ERROR",
                        reasonForIncompletion="Both 'duration' and 'until' specified. Please provide only one input")
        elif duration:
            seconds = _seconds(str(duration))
            if seconds is None:
                task.update(status="FAILED_WITH_TERMINAL_ERROR",
                            reasonForIncompletion="Invalid/Unsupported duration format.  Provided: %s" % duration)
            else:
                task["callbackAfterSeconds"] = seconds
                task["waitTimeout"] = int(time.time() * 1000) + seconds * 1000
        elif until:
            when = _until_ms(str(until))
            if when is None:
                task.update(status="FAILED_WITH_TERMINAL_ERROR",
                            reasonForIncompletion="Invalid/Unsupported Wait Until format.  Provided: %s" % until)
            else:
                task["waitTimeout"] = when
        else:
            task["callbackAfterSeconds"] = WAIT_FOREVER_SECONDS

    def _attach_task_def(self, workflow_task: JSON) -> None:
        """Give ``workflow_task`` (and its children) the definition it runs with, if it has none."""
        for nested in walk([workflow_task]):
            if nested.get("taskDefinition") is not None or nested.get("type") == "DYNAMIC":
                continue
            if nested.get("type", "SIMPLE") == "SIMPLE":
                nested["taskDefinition"] = self._store.get_task_def(nested["name"]) or dict(
                    TASK_DEF_DEFAULTS, name=nested["name"])
            elif is_user_defined(nested.get("type") or "SIMPLE"):
                nested["taskDefinition"] = self._store.get_task_def(nested["name"]) or dict(
                    SYNTHETIC_TASK_DEF, name=nested["name"])
            else:
                nested["taskDefinition"] = dict(SYNTHETIC_TASK_DEF, name=nested["name"])

    # -- execution: what a decide does with the system tasks that are not done ---------------------
    def _run_system_tasks(self, workflow: JSON, tasks: List[JSON], pending: List[JSON],
                          unsaved: Dict[str, JSON]) -> bool:
        """Run every system task of ``pending`` that can move now; True when one of them changed.

        A DO_WHILE that went on to its next iteration is saved when the decide ends (``unsaved``):
        its output grows with every iteration, and writing it each time made every iteration cost
        more than the one before.
        """
        changed = False
        for task in list(pending):
            if task["taskType"] not in SYSTEM_TASK_TYPES or task["status"] in TASK_TERMINAL:
                continue
            executor = _EXECUTORS.get(task["taskType"])
            if executor is not None and executor(self, workflow, tasks, task):
                if task["status"] in TASK_TERMINAL and not task.get("endTime"):
                    task["endTime"] = int(time.time() * 1000)
                if task["taskType"] == "DO_WHILE" and task["status"] not in TASK_TERMINAL:
                    unsaved[task["taskId"]] = task
                else:
                    unsaved.pop(task["taskId"], None)
                    self._save_task(task)
                changed = True
        return changed

    def _run_inline(self, workflow: JSON, tasks: List[JSON], task: JSON) -> bool:
        params = task["inputData"]
        evaluator = params.get("evaluatorType") or "javascript"
        expression = params.get("expression")
        try:
            if not isinstance(expression, str) or not expression.strip():
                raise ScriptError("Empty 'expression' in Inline task's input parameters. A non-empty String "
                                  "value must be provided.")
            if evaluator == "value-param":
                result = params.get(expression)
            elif evaluator in ("javascript", "graaljs"):
                result = self._scripts.javascript(expression, params)
            else:
                raise ScriptError("Unknown evaluator '%s' in INLINE task." % evaluator)
        except ScriptError as error:
            # conductor-oss: a time limit (NonTransientException) leaves the task retryable, a script
            # error (TerminateWorkflowException) does not
            status = "FAILED" if error.retryable else "FAILED_WITH_TERMINAL_ERROR"
            task.update(status=status, reasonForIncompletion=str(error), outputData={"error": str(error)})
            return True
        task.update(status="COMPLETED", outputData={"result": result})
        return True

    def _run_jq(self, workflow: JSON, tasks: List[JSON], task: JSON) -> bool:
        query = task["inputData"].get("queryExpression")
        if not isinstance(query, str) or not query:
            task.update(status="FAILED", reasonForIncompletion="Missing 'queryExpression' in input parameters")
            return True
        try:
            results = self._scripts.jq(query, task["inputData"])
        except ScriptError as error:
            task.update(status="FAILED", reasonForIncompletion=str(error), outputData={"error": str(error)})
            return True
        task.update(status="COMPLETED", outputData={"result": results[0] if results else None,
                                                    "resultList": results})
        return True

    def _run_noop(self, workflow: JSON, tasks: List[JSON], task: JSON) -> bool:
        task["status"] = "COMPLETED"
        return True

    def _run_set_variable(self, workflow: JSON, tasks: List[JSON], task: JSON) -> bool:
        variables = dict(workflow.get("variables") or {})
        variables.update(copy.deepcopy(task["inputData"]))
        workflow["variables"] = variables
        self._save_workflow(workflow)
        task["status"] = "COMPLETED"
        return True

    def _run_terminate(self, workflow: JSON, tasks: List[JSON], task: JSON) -> bool:
        params = task["inputData"]
        status = params.get("terminationStatus")
        if status not in ("COMPLETED", "FAILED", "TERMINATED"):
            task.update(status="FAILED", reasonForIncompletion="The given termination status '%s' is not valid. "
                        "Allowed values: COMPLETED, FAILED, TERMINATED" % java_string(status))
            return True
        output = params.get("workflowOutput")
        task["outputData"] = output if isinstance(output, dict) else ({} if output is None else {"output": output})
        task["status"] = "COMPLETED"
        reason = params.get("terminationReason") or "Workflow is %s by TERMINATE task: %s" % (status, task["taskId"])
        raise _Terminate(reason, status, task, output=copy.deepcopy(task["outputData"]))

    def _run_wait(self, workflow: JSON, tasks: List[JSON], task: JSON) -> bool:
        due = task.get("waitTimeout")
        if due and int(time.time() * 1000) >= due:
            task["status"] = "COMPLETED"
            return True
        return False


_Mapper = Callable[..., List[JSON]]
_MAPPERS: Dict[str, _Mapper] = {
    "SWITCH": SystemTasks._map_switch, "DECISION": SystemTasks._map_switch,
    "FORK_JOIN": SystemTasks._map_fork, "JOIN": SystemTasks._map_join,
    "FORK_JOIN_DYNAMIC": SystemTasks._map_dynamic_fork, "DO_WHILE": SystemTasks._map_do_while,
    "SUB_WORKFLOW": SystemTasks._map_sub_workflow, "DYNAMIC": SystemTasks._map_dynamic,
    **{kind: SystemTasks._map_unsupported for kind in UNSUPPORTED_SYSTEM_TYPES},
    **{kind: SystemTasks._system for kind in ("START_WORKFLOW", "WAIT", "HUMAN", "NOOP", "SET_VARIABLE",
                                              "TERMINATE", "INLINE", "JSON_JQ_TRANSFORM", "HTTP")},
}
_EXECUTORS: Dict[str, Callable[[Any, JSON, List[JSON], JSON], bool]] = {
    "INLINE": SystemTasks._run_inline, "JSON_JQ_TRANSFORM": SystemTasks._run_jq, "NOOP": SystemTasks._run_noop,
    "SET_VARIABLE": SystemTasks._run_set_variable, "TERMINATE": SystemTasks._run_terminate,
    "WAIT": SystemTasks._run_wait, "JOIN": SystemTasks._run_join, "DO_WHILE": SystemTasks._run_do_while,
    "SUB_WORKFLOW": SystemTasks._run_sub_workflow, "START_WORKFLOW": SystemTasks._run_start_workflow,
    "HTTP": SystemTasks._run_http,
}

__all__ = ["SystemTasks", "SYNTHETIC_TASK_DEF"]
