"""Control-flow system tasks: ``SWITCH``/``DECISION``, ``FORK_JOIN`` and its ``JOIN``,
``FORK_JOIN_DYNAMIC``, ``DO_WHILE`` (over ``items`` too, with ``keepLastN``) and ``DYNAMIC``: how
each is mapped to tasks, and how a ``JOIN`` and a ``DO_WHILE`` are re-evaluated on every decide
(a mixin of :class:`~.system_tasks.SystemTasks`)."""

from __future__ import annotations

import copy
import json
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .definitions import SYSTEM_TASK_TYPES, next_task, strip_iteration, walk, with_iteration
from .errors import _Terminate
from .expressions import expression_document, resolve
from .model import JSON, TASK_TERMINAL
from .scripts import ScriptError, Scripts
from .task_list import TaskList, as_task_list
from .store import _Store
from .validation import normalise_workflow_task

#: What a JOIN and a DO_WHILE count as a success (unlike the decider's, not the running statuses).
TASK_SUCCESSFUL = frozenset({"COMPLETED", "COMPLETED_WITH_ERRORS", "SKIPPED"})


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


class ControlFlow:
    """Mappers and executors of the control-flow tasks (mixed into the system tasks)."""

    # what the system tasks and the engine provide
    _scripts: Scripts
    _store: _Store
    _task: Callable[..., JSON]
    _tasks_for: Callable[..., List[JSON]]
    _attach_task_def: Callable[[JSON], None]
    _save_task: Callable[[JSON], None]
    _schedule: Callable[..., bool]

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
        items = self._loop_items(workflow, tasks, workflow_task, created)
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

    def _loop_items(self, workflow: JSON, tasks: List[JSON], workflow_task: JSON,
                    created: Sequence[JSON] = ()) -> Optional[List[Any]]:
        source = workflow_task.get("items")
        if source is None:
            source = (workflow_task.get("inputParameters") or {}).get("_items")
        if source is None:
            return None
        items = resolve(source, expression_document(workflow, tasks, created))
        if items is None:
            return []
        return items if isinstance(items, list) else [items]

    def _map_dynamic(self, workflow: JSON, tasks: List[JSON], workflow_task: JSON, iteration: int,
                     created: List[JSON]) -> List[JSON]:
        param = workflow_task.get("dynamicTaskNameParam") or ""
        resolved = resolve(workflow_task.get("inputParameters") or {}, expression_document(workflow, tasks, created))
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

    def _run_join(self, workflow: JSON, tasks: List[JSON], task: JSON) -> bool:
        tasks = as_task_list(tasks)
        done, failures, with_errors = True, [], []
        output: JSON = {}
        for ref in task["inputData"].get("joinOn") or []:
            joined = _latest_attempt(tasks, ref)
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
        tasks = as_task_list(tasks)
        found = []  # (first attempt's seq, body ref, this iteration's latest task of it)
        for ref in body_refs:
            attempts = [t for t in tasks.with_ref(with_iteration(ref, iteration))
                        if t.get("iteration") == iteration and t is not task]
            if attempts:
                found.append((attempts[0]["seq"], ref, attempts[-1]))
        current = {ref: latest for _, ref, latest in sorted(found, key=lambda entry: entry[0])}
        if not current or any(t["status"] not in TASK_TERMINAL or not (t.get("executed") or t.get("retried"))
                              for t in current.values()):
            return False
        if any(t["status"] not in TASK_SUCCESSFUL and not t.get("retried") for t in current.values()):
            return False  # the failure rules of the decider end the workflow (or retry the task)
        output = task.get("outputData") or {}  # changed in place: a copy would cost every iteration more
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


def _latest_attempt(tasks: TaskList, ref: str) -> Optional[JSON]:
    """The attempt of ``ref`` with the highest ``seq`` (the later one in the list at equal ``seq``)."""
    latest: Optional[JSON] = None
    for task in tasks.with_ref(ref):
        if latest is None or task["seq"] >= latest["seq"]:
            latest = task
    return latest

