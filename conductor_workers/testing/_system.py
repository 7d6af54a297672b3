"""System tasks of LocalConductor: how each is scheduled (its "mapper") and run (its "executor").

Behaviour follows conductor-oss 3.32 (its task mappers and ``WorkflowSystemTask`` classes, and
what its server was measured to do): ``SWITCH``/``DECISION`` and ``FORK`` complete as they are
created, together with the first tasks of their branches; ``NOOP``, ``SET_VARIABLE``,
``TERMINATE``, ``INLINE``, ``JSON_JQ_TRANSFORM``, ``START_WORKFLOW`` and ``SUB_WORKFLOW`` (its
start) run in the decide that schedules them; ``JOIN`` and ``DO_WHILE`` are re-evaluated on every
decide; ``WAIT`` ends at its time (the sweeper) or by an update, ``HUMAN`` by an update; ``HTTP``
runs on a thread of its own, outside the engine lock, and reports back like a worker would.

:class:`SystemTasks` is a mixin of the engine: it uses the engine's store, task factory, decider
and workflow start.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple
from urllib.parse import urlsplit

from ._definitions import BUILT_IN_TYPES, SYSTEM_TASK_TYPES, next_task, strip_iteration, walk, with_iteration
from ._scripts import ScriptError, Scripts

log = logging.getLogger(__name__)

JSON = Dict[str, Any]

TASK_TERMINAL = frozenset({"COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED", "FAILED_WITH_TERMINAL_ERROR",
                           "TIMED_OUT", "CANCELED", "SKIPPED"})
TASK_SUCCESSFUL = frozenset({"COMPLETED", "COMPLETED_WITH_ERRORS", "SKIPPED"})
WORKFLOW_TERMINAL = frozenset({"COMPLETED", "FAILED", "TIMED_OUT", "TERMINATED"})

#: What a system task without a task definition of its own runs with (conductor-oss's defaults).
SYNTHETIC_TASK_DEF: JSON = {
    "retryCount": 0, "retryDelaySeconds": 60, "responseTimeoutSeconds": 0, "timeoutSeconds": 0,
    "rateLimitFrequencyInSeconds": 1, "rateLimitPerFrequency": 0, "timeoutPolicy": "TIME_OUT_WF",
    "retryLogic": "FIXED", "inputKeys": [], "outputKeys": [], "inputTemplate": {}, "createTime": 0,
}
#: A WAIT with neither ``duration`` nor ``until`` waits "for ever" (Integer.MAX_VALUE seconds).
WAIT_FOREVER_SECONDS = 2 ** 31 - 1
#: Hosts an HTTP task may call by default: this machine only.
LOOPBACK_HOSTS = ("localhost",)

_DURATION = re.compile(
    r"^\s*(?:(\d+)\s*(?:days?|d))?\s*(?:(\d+)\s*(?:hours?|hrs?|h))?\s*(?:(\d+)\s*(?:minutes?|mins?|m))?"
    r"\s*(?:(\d+)\s*(?:seconds?|secs?|s))?\s*$", re.IGNORECASE)
_UNTIL_FORMATS = ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M %Z", "%Y-%m-%d %H:%M %z", "%Y-%m-%d")


def java_string(value: Any) -> str:
    """``"" + value`` as Java prints it: how a SWITCH result is matched to a case name."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 31:
        return str(int(value))
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _truthy(value: Any) -> bool:
    """A DO_WHILE condition's verdict: a true boolean or a positive number (strings are false)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value > 0
    return False


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


def subworkflow_id(parent_id: str, task_id: str, retry_count: int) -> str:
    """The child id conductor-oss derives (``UUID.nameUUIDFromBytes``), so that retries are idempotent."""
    digest = hashlib.md5(("subworkflow:%s:%s:%d" % (parent_id, task_id, retry_count)).encode("utf-8")).digest()
    return str(uuid.UUID(bytes=digest, version=3))


def host_allowed(url: str, allowed: Iterable[str]) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    patterns = list(allowed)
    if "*" in patterns or host in patterns:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in LOOPBACK_HOSTS


class SystemTasks:
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
    _decide: Callable[[JSON, List[JSON]], None]
    _end_workflow: Callable[..., None]
    _externalize: Callable[..., None]
    _tx: Callable[[], Any]

    # -- mapping: the tasks a workflow task turns into -------------------------------------------
    def _tasks_for(self, workflow: JSON, tasks: List[JSON], workflow_task: JSON, iteration: int = 0,
                   created: Optional[List[JSON]] = None) -> List[JSON]:
        """``DeciderService.getTasksToBeScheduled``: new tasks for ``workflow_task`` (and children)."""
        created = [] if created is None else created
        kind = workflow_task.get("type") or "SIMPLE"
        mapper = _MAPPERS.get(kind)
        batch = mapper(self, workflow, tasks, workflow_task, iteration, created) if mapper else [
            self._task(workflow, tasks, workflow_task, iteration, created)]
        present = {task["referenceTaskName"] for task in tasks
                   if task["status"] == "IN_PROGRESS" or task["status"] in TASK_TERMINAL}
        return [task for task in batch if task["referenceTaskName"] not in present]

    def _task(self, workflow: JSON, tasks: List[JSON], workflow_task: JSON, iteration: int,
              created: List[JSON], task_type: Optional[str] = None, def_name: Optional[str] = None,
              status: str = "SCHEDULED") -> JSON:
        """One task of ``workflow_task``; input resolved against the tasks so far (and ``created``)."""
        task = self._new_task(workflow, tasks + created, workflow_task)
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
        elif kind == "HTTP":
            task["inputData"].setdefault("asyncComplete", False)
        return [task]

    def _map_switch(self, workflow: JSON, tasks: List[JSON], workflow_task: JSON, iteration: int,
                    created: List[JSON]) -> List[JSON]:
        legacy = workflow_task["type"] == "DECISION"
        task = self._task(workflow, tasks, workflow_task, iteration, created, workflow_task["type"],
                          def_name=workflow_task["type"], status="COMPLETED")
        resolved = task["inputData"]
        try:
            case = java_string(self._case_value(workflow_task, resolved))
        except ScriptError as error:
            task.update(status="FAILED", reasonForIncompletion=str(error))
            return [task]
        cases = workflow_task.get("decisionCases") or {}
        branch = cases.get(case)
        if branch is None or (legacy and not branch):
            branch = workflow_task.get("defaultCase") or []
        task["inputData"] = {"case": case} if legacy else dict(resolved, case=case)
        task["outputData"] = {"caseOutput": [case]} if legacy else {"evaluationResult": [case], "selectedCase": case}
        batch = [task]
        if branch:
            task["inputData"]["hasChildren"] = "true"
            batch += self._tasks_for(workflow, tasks, branch[0], iteration, created)
        return batch

    def _case_value(self, workflow_task: JSON, resolved: JSON) -> Any:
        if workflow_task["type"] == "DECISION":
            if workflow_task.get("caseValueParam"):
                return resolved.get(workflow_task["caseValueParam"])
            return self._scripts.javascript(workflow_task.get("caseExpression") or "", resolved)
        evaluator = workflow_task.get("evaluatorType") or "value-param"
        expression = workflow_task.get("expression") or ""
        if evaluator == "value-param":
            return resolved.get(expression)
        if evaluator in ("javascript", "graaljs"):
            return self._scripts.javascript(expression, copy.deepcopy(resolved))
        raise ScriptError("No evaluator registered for type: %s" % evaluator)

    def _map_fork(self, workflow: JSON, tasks: List[JSON], workflow_task: JSON, iteration: int,
                  created: List[JSON]) -> List[JSON]:
        from ._engine import _Terminate

        fork = self._task(workflow, tasks, workflow_task, iteration, created, "FORK", def_name="FORK",
                          status="COMPLETED")
        batch = [fork]
        for branch in workflow_task.get("forkTasks") or []:
            if branch:
                batch += self._tasks_for(workflow, tasks, branch[0], iteration, created)
        join = next_task(workflow["workflowDefinition"]["tasks"], workflow_task["taskReferenceName"])
        if join is None or join.get("type") != "JOIN":
            raise _Terminate("Fork task definition is not followed by a join task.  Check the blueprint")
        return batch + self._tasks_for(workflow, tasks, join, iteration, created)

    def _map_join(self, workflow: JSON, tasks: List[JSON], workflow_task: JSON, iteration: int,
                  created: List[JSON], join_on: Optional[List[str]] = None) -> List[JSON]:
        task = self._task(workflow, tasks, workflow_task, iteration, created, "JOIN", def_name="JOIN",
                          status="IN_PROGRESS")
        refs = list(workflow_task.get("joinOn") or []) if join_on is None else join_on
        if iteration and join_on is None:
            refs = [with_iteration(ref, iteration) for ref in refs]
        task["inputData"] = {"joinOn": refs}
        return [task]

    def _map_dynamic_fork(self, workflow: JSON, tasks: List[JSON], workflow_task: JSON, iteration: int,
                          created: List[JSON]) -> List[JSON]:
        from ._engine import _Terminate, normalise_workflow_task

        fork = self._task(workflow, tasks, workflow_task, iteration, created, "FORK", def_name="FORK",
                          status="COMPLETED")
        resolved = fork["inputData"]
        forked: List[Tuple[JSON, JSON]] = []  # (workflow task, input)
        if "forkTaskName" in resolved or "forkTaskInputs" in resolved:
            inputs = resolved.get("forkTaskInputs")
            if not isinstance(inputs, list):
                raise _Terminate("Input 'forkTaskInputs' is invalid: expected a list")
            kind = resolved.get("forkTaskType") or "SIMPLE"
            name = resolved.get("forkTaskName") or kind
            again = any(t.get("workflowTask", {}).get("type") == "FORK_JOIN_DYNAMIC" for t in tasks)
            for index, item in enumerate(inputs):
                ref = ("_%s_%s_%d" % (workflow_task["taskReferenceName"], name, index) if again
                       else "_%s_%d" % (name, index))
                task_input = dict(item) if isinstance(item, dict) else {"input": item}
                task_input["__index"] = index
                fields = {k: v for k, v in (item.items() if isinstance(item, dict) else ())
                          if k in ("evaluatorType", "expression")}
                raw = dict(fields, name=name, taskReferenceName=ref, type=kind, inputParameters=task_input)
                forked.append((raw, task_input))
        else:
            dynamic = resolved.get(workflow_task.get("dynamicForkTasksParam") or "")
            inputs = resolved.get(workflow_task.get("dynamicForkTasksInputParamName") or "")
            if not isinstance(dynamic, list) or not all(
                    isinstance(item, dict) and item.get("taskReferenceName") for item in dynamic):
                raise _Terminate("Input '%s' is invalid. Cannot fork a task with no taskReferenceName"
                                 % workflow_task.get("dynamicForkTasksParam"))
            if not isinstance(inputs, dict):
                raise _Terminate("Input to the dynamically forked tasks is not a map -> expecting a map of K,V "
                                 "but found %s" % java_string(inputs))
            for item in dynamic:
                task_input = dict(item.get("inputParameters") or {})
                task_input.update(inputs.get(item["taskReferenceName"]) or {})
                forked.append((dict(item), task_input))
        batch = [fork]
        refs, definitions = [], []
        for raw, task_input in forked:
            errors: List[JSON] = []
            forked_task = normalise_workflow_task(raw, "dynamicForkTasks", errors)
            if errors:
                raise _Terminate("Input '%s' is invalid: %s" % (raw.get("taskReferenceName"), errors[0]["message"]))
            self._attach_task_def(forked_task)
            made = self._tasks_for(workflow, tasks, forked_task, iteration, created)
            for task in made:
                if task["referenceTaskName"] in (forked_task["taskReferenceName"],
                                                 with_iteration(forked_task["taskReferenceName"], iteration)):
                    task["inputData"] = copy.deepcopy(task_input)
            batch += made
            refs.append(made[0]["referenceTaskName"] if made else forked_task["taskReferenceName"])
            definitions.append(dict(forked_task, inputParameters=task_input))
        fork["inputData"] = dict(resolved, forkedTasks=refs, forkedTaskDefs=definitions)
        join = next_task(workflow["workflowDefinition"]["tasks"], workflow_task["taskReferenceName"])
        if join is None or join.get("type") != "JOIN":
            raise _Terminate("Dynamic join definition is not followed by a join task.  Check the blueprint")
        return batch + self._map_join(workflow, tasks, join, iteration, created, join_on=refs)

    def _map_do_while(self, workflow: JSON, tasks: List[JSON], workflow_task: JSON, iteration: int,
                      created: List[JSON]) -> List[JSON]:
        loop = self._task(workflow, tasks, workflow_task, iteration, created, "DO_WHILE", status="IN_PROGRESS")
        loop["referenceTaskName"] = workflow_task["taskReferenceName"]  # the loop keeps its own name
        items = self._loop_items(workflow, tasks + created, workflow_task)
        loop["iteration"] = 1
        loop["outputData"] = {"iteration": 1}
        if items is not None:
            if not items:
                loop.update(status="COMPLETED", iteration=0, outputData={"iteration": 0})
                return [loop]
            loop["outputData"].update(loopIndex=0, loopItem=items[0])
        body = workflow_task.get("loopOver") or []
        batch = [loop]
        if body:
            batch += self._tasks_for(workflow, tasks, body[0], 1, created)
        return batch

    def _loop_items(self, workflow: JSON, tasks: List[JSON], workflow_task: JSON) -> Optional[List[Any]]:
        from ._engine import expression_document, resolve

        source = workflow_task.get("items")
        if source is None:
            source = (workflow_task.get("inputParameters") or {}).get("_items")
        if source is None:
            return None
        items = resolve(source, expression_document(workflow, tasks))
        if items is None:
            return []
        return items if isinstance(items, list) else [items]

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

    def _map_dynamic(self, workflow: JSON, tasks: List[JSON], workflow_task: JSON, iteration: int,
                     created: List[JSON]) -> List[JSON]:
        from ._engine import _Terminate, expression_document, resolve

        param = workflow_task.get("dynamicTaskNameParam") or ""
        resolved = resolve(workflow_task.get("inputParameters") or {}, expression_document(workflow, tasks + created))
        name = resolved.get(param)
        if not isinstance(name, str) or not name:
            raise _Terminate("Cannot map a dynamic task based on the parameter and input. Parameter= %s, input= %s"
                             % (param, java_string(resolved)))
        concrete = dict(workflow_task, name=name, type=name if name in SYSTEM_TASK_TYPES else "SIMPLE")
        concrete.pop("taskDefinition", None)
        self._attach_task_def(concrete)
        batch = self._tasks_for(workflow, tasks, concrete, iteration, created)
        for task in batch:
            task["workflowTask"] = dict(task["workflowTask"], type="DYNAMIC")
        return batch

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
                from ._engine import TASK_DEF_DEFAULTS

                nested["taskDefinition"] = self._store.get_task_def(nested["name"]) or dict(
                    TASK_DEF_DEFAULTS, name=nested["name"])
            else:
                nested["taskDefinition"] = dict(SYNTHETIC_TASK_DEF, name=nested["name"])

    # -- execution: what a decide does with the system tasks that are not done ---------------------
    def _run_system_tasks(self, workflow: JSON, tasks: List[JSON]) -> bool:
        """Run every system task that can move now; True when one of them changed."""
        changed = False
        for task in list(tasks):
            if task["taskType"] not in SYSTEM_TASK_TYPES or task["status"] in TASK_TERMINAL:
                continue
            executor = _EXECUTORS.get(task["taskType"])
            if executor is not None and executor(self, workflow, tasks, task):
                if task["status"] in TASK_TERMINAL and not task.get("endTime"):
                    task["endTime"] = int(time.time() * 1000)
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
                result = self._scripts.javascript(expression, copy.deepcopy(params))
            else:
                raise ScriptError("Unknown evaluator '%s' in INLINE task." % evaluator)
        except ScriptError as error:
            task.update(status="FAILED_WITH_TERMINAL_ERROR", reasonForIncompletion=str(error),
                        outputData={"error": str(error)})
            return True
        task.update(status="COMPLETED", outputData={"result": result})
        return True

    def _run_jq(self, workflow: JSON, tasks: List[JSON], task: JSON) -> bool:
        query = task["inputData"].get("queryExpression")
        if not isinstance(query, str) or not query:
            task.update(status="FAILED", reasonForIncompletion="Missing 'queryExpression' in input parameters")
            return True
        try:
            results = self._scripts.jq(query, copy.deepcopy(task["inputData"]))
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
        from ._engine import _Terminate

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

    def _run_join(self, workflow: JSON, tasks: List[JSON], task: JSON) -> bool:
        latest = _latest_by_ref(tasks)
        done, failures, with_errors = True, [], []
        output: JSON = {}
        for ref in task["inputData"].get("joinOn") or []:
            joined = latest.get(ref)
            if joined is None:
                done = False
                break
            if joined.get("outputData"):
                output[ref] = joined["outputData"]
            if joined["status"] not in TASK_TERMINAL:
                done = False
            elif joined["status"] not in TASK_SUCCESSFUL and not (joined["workflowTask"].get("optional")
                                                                  or joined["workflowTask"].get("permissive")):
                failures.append(joined.get("reasonForIncompletion") or "")
                break
            elif joined["status"] == "COMPLETED_WITH_ERRORS":
                with_errors.append("%s/%s completed with errors" % (joined["taskDefName"], joined["taskId"]))
        changed = output != task.get("outputData")
        task["outputData"] = output
        if failures:
            task.update(status="FAILED", reasonForIncompletion=" ".join(failures))
        elif done and with_errors:
            task.update(status="COMPLETED_WITH_ERRORS", reasonForIncompletion=" ".join(with_errors))
        elif done:
            task["status"] = "COMPLETED"
        else:
            return changed
        return True

    def _run_do_while(self, workflow: JSON, tasks: List[JSON], task: JSON) -> bool:
        workflow_task = task["workflowTask"]
        iteration = task.get("iteration") or 1
        body_refs = {t["taskReferenceName"] for t in walk(workflow_task.get("loopOver") or [])}
        current = {strip_iteration(t["referenceTaskName"]): t for t in tasks
                   if t.get("iteration") == iteration and t is not task
                   and strip_iteration(t["referenceTaskName"]) in body_refs
                   and t["referenceTaskName"].endswith("__%d" % iteration)}
        if not current or any(t["status"] not in TASK_TERMINAL or not (t.get("executed") or t.get("retried"))
                              for t in current.values()):
            return False
        if any(t["status"] not in TASK_SUCCESSFUL and not t.get("retried") for t in current.values()):
            return False  # the failure rules of the decider end the workflow (or retry the task)
        output = dict(task.get("outputData") or {})
        output[str(iteration)] = {ref: t.get("outputData") or {} for ref, t in current.items()}
        self._keep_last(task, tasks, output, iteration, body_refs)
        task["outputData"] = output
        condition_input = dict(task.get("inputData") or {})
        condition_input[workflow_task["taskReferenceName"]] = output
        for ref, t in current.items():
            condition_input[ref] = t.get("outputData") or {}
        items = self._loop_items(workflow, tasks, workflow_task)
        again = True
        if items is not None:
            again = (output.get("loopIndex") or 0) < len(items) - 1
            condition_input.update(loopIndex=output.get("loopIndex"), loopItem=output.get("loopItem"))
        condition = workflow_task.get("loopCondition")
        if items is None and not (condition or "").strip():
            again = False  # an empty condition evaluates to null: false
        elif again and condition and condition.strip():
            try:
                again = _truthy(self._scripts.javascript(condition, condition_input))
            except ScriptError as error:
                task.update(status="FAILED_WITH_TERMINAL_ERROR",
                            reasonForIncompletion="Unable to evaluate condition %s, exception %s" % (condition, error))
                return True
        if not again:
            task["status"] = "COMPLETED"
            return True
        iteration += 1
        output["iteration"] = iteration
        if items is not None:
            index = (output.get("loopIndex") or 0) + 1
            output.update(loopIndex=index, loopItem=items[index])
        task["iteration"] = iteration
        self._save_task(task)
        body = workflow_task.get("loopOver") or []
        self._schedule(workflow, tasks, self._tasks_for(workflow, tasks, body[0], iteration))
        return True

    def _keep_last(self, task: JSON, tasks: List[JSON], output: JSON, iteration: int, body_refs: set) -> None:
        """``keepLastN``: forget the iterations before the last N (their output and their tasks)."""
        try:
            keep = int(task["inputData"].get("keepLastN") or 0)
        except (TypeError, ValueError):
            return
        if keep <= 0:
            return
        oldest_kept = iteration - keep + 1
        for key in [k for k in output if k.isdigit() and int(k) < oldest_kept]:
            del output[key]
        for old in [t for t in tasks if t is not task and 0 < (t.get("iteration") or 0) < oldest_kept
                    and strip_iteration(t["referenceTaskName"]) in body_refs]:
            self._store.delete_task(old["taskId"])
            tasks.remove(old)

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
        from ._engine import EngineError

        try:
            return self._start_child(request, inline, parent, task if parent is not None else None)
        except EngineError as error:
            task.update(status="FAILED", reasonForIncompletion=error.message)
            return None

    def _start_child(self, request: JSON, inline: Optional[JSON], parent: Optional[JSON],
                     parent_task: Optional[JSON]) -> str:
        """Start a workflow from inside a decide (SUB_WORKFLOW, START_WORKFLOW); its id."""
        from ._engine import WORKFLOW_PAYLOADS, NotFound, _java_str, normalise_workflow_def

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

    # -- HTTP: on a thread of its own ------------------------------------------------------------
    def _run_http(self, workflow: JSON, tasks: List[JSON], task: JSON) -> bool:
        if task["status"] != "SCHEDULED":
            return False
        params = task["inputData"]
        spec = params.get("http_request") if isinstance(params.get("http_request"), dict) else params
        uri, method = spec.get("uri"), spec.get("method")
        if not uri:
            task.update(status="FAILED",
                        reasonForIncompletion="Missing HTTP URI.  See documentation for HttpTask for required input parameters")
            return True
        if not method:
            task.update(status="FAILED", reasonForIncompletion="No HTTP method specified")
            return True
        if not host_allowed(str(uri), self.http_allowed_hosts):
            task.update(status="FAILED", reasonForIncompletion=(
                "LocalConductor does not call %s: HTTP tasks may call loopback hosts only, unless the host is "
                "allowed (LocalConductor(http_allowed_hosts=[...]) or --http-allow-host)" % urlsplit(str(uri)).hostname))
            return True
        task.update(status="IN_PROGRESS", workerId="local-conductor", pollCount=1,
                    startTime=task.get("startTime") or int(time.time() * 1000))
        thread = threading.Thread(target=self._call_http, args=(task["taskId"], dict(spec)),
                                  name="local-conductor-http-task", daemon=True)
        thread.start()  # it waits for the engine lock, so it sees this decide's result
        return True

    def _call_http(self, task_id: str, spec: JSON) -> None:
        status, output, reason = _http_call(spec)
        self.finish_system_task(task_id, status, output, reason)

    def finish_system_task(self, task_id: str, status: str, output: JSON, reason: Optional[str]) -> None:
        """Report the result of a system task that ran outside the lock (HTTP)."""
        with self._tx() as store:
            task = store.get_task(task_id)
            if task is None or task["status"] != "IN_PROGRESS":
                return
            task.update(status=status, outputData=output, reasonForIncompletion=reason)
            self._save_task(task)
            workflow = store.get_workflow(task["workflowInstanceId"])
            if workflow is not None:
                self._decide(workflow, store.workflow_tasks(workflow["workflowId"]))


def _start_request(workflow: JSON, name: Any, version: Any, workflow_input: JSON, correlation_id: Optional[str],
                   task_to_domain: Optional[JSON], priority: Optional[int]) -> JSON:
    """A StartWorkflowRequest from inside ``workflow``: its correlation id and domains carry over."""
    return {
        "name": name, "version": version, "input": workflow_input,
        "correlationId": correlation_id or workflow.get("correlationId"),
        "taskToDomain": task_to_domain or workflow.get("taskToDomain") or {}, "priority": priority or 0,
    }


def _latest_by_ref(tasks: List[JSON]) -> Dict[str, JSON]:
    latest: Dict[str, JSON] = {}
    for task in sorted(tasks, key=lambda t: t["seq"]):
        latest[task["referenceTaskName"]] = task
    return latest


def _http_call(spec: JSON) -> Tuple[str, JSON, Optional[str]]:
    """Run one HTTP task request: (status, outputData, reason)."""
    method = str(spec.get("method")).upper()
    body = spec.get("body")
    headers = {str(k): str(v) for k, v in (spec.get("headers") or {}).items()}
    data = None
    if body is not None and method not in ("GET", "HEAD", "DELETE"):
        data = body.encode("utf-8") if isinstance(body, str) else json.dumps(body).encode("utf-8")
        headers.setdefault("Content-Type", spec.get("contentType") or "application/json")
    headers.setdefault("Accept", spec.get("accept") or "application/json")
    timeout = max(int(spec.get("connectionTimeOut") or 3000), int(spec.get("readTimeOut") or 3000)) / 1000.0
    request = urllib.request.Request(str(spec["uri"]), data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 (checked host)
            raw, code, phrase, answer_headers = answer.read(), answer.status, answer.reason, answer.headers
    except urllib.error.HTTPError as error:
        text = error.read().decode("utf-8", "replace").replace("\n", "<EOL>")
        message = 'java.lang.Exception: %d %s on %s request for "%s": "%s"' % (
            error.code, error.reason, method, spec["uri"], text)
        return "FAILED", {"response": message}, "Failed to invoke HTTP task due to: " + message
    except (OSError, ValueError) as error:
        cause = getattr(error, "reason", error)
        if isinstance(cause, ConnectionRefusedError):
            parts = urlsplit(str(spec["uri"]))
            cause = "Connect to %s://%s failed: Connection refused" % (parts.scheme, parts.netloc)
        message = 'java.lang.Exception: I/O error on %s request for "%s": %s' % (method, spec["uri"], cause)
        return "FAILED", {"response": message}, "Failed to invoke HTTP task due to: " + message
    text = raw.decode("utf-8", "replace")
    try:
        parsed: Any = json.loads(text) if text.strip() else None
    except ValueError:
        parsed = text
    grouped: Dict[str, List[str]] = {}
    for key, value in answer_headers.items():
        grouped.setdefault(key, []).append(value)
    response = {"statusCode": code, "reasonPhrase": phrase, "headers": grouped, "body": parsed}
    return "COMPLETED", {"response": response}, None


_Mapper = Callable[..., List[JSON]]
_MAPPERS: Dict[str, _Mapper] = {
    "SWITCH": SystemTasks._map_switch, "DECISION": SystemTasks._map_switch,
    "FORK_JOIN": SystemTasks._map_fork, "JOIN": SystemTasks._map_join,
    "FORK_JOIN_DYNAMIC": SystemTasks._map_dynamic_fork, "DO_WHILE": SystemTasks._map_do_while,
    "SUB_WORKFLOW": SystemTasks._map_sub_workflow, "DYNAMIC": SystemTasks._map_dynamic,
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

__all__ = ["SystemTasks", "BUILT_IN_TYPES", "java_string", "subworkflow_id"]
