"""System tasks (SWITCH, FORK_JOIN, DO_WHILE, SUB_WORKFLOW, WAIT, INLINE, HTTP, ...) on both servers.

Every test registers a workflow that uses one system task type (plus SIMPLE tasks this test completes
by polling), runs it and compares a normalised view of the result with explicit expectations: the
task list in ``seq`` order as rows of taskType, referenceTaskName, status, inputData and outputData,
plus the workflow's status, output, variables, reasonForIncompletion and failedReferenceTaskNames.
The expected values are what the real conductor-oss 3.32.1 server was measured to do, so a server
that behaves differently fails them. Ids are not normalised away: where an id appears in an output
or a reason, the expectation is built from the ids of the workflow itself, which checks them too.
Times are left out.

JavaScript (SWITCH/INLINE/DO_WHILE conditions) and jq need optional extras on LocalConductor
(mini-racer, jq); those tests skip on the local server only when the module is missing.
"""

from __future__ import annotations

import http.server
import json
import re
import socket
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence

import pytest
from _helpers import OWNER, finished, poll_none, poll_one, status_of, task_def, unique, wait_until
from differences import expect_difference

from conductor_workers import APIError
from conductor_workers.models import TaskResult, Workflow, WorkflowDef

# -- helpers ---------------------------------------------------------------------------------------


def needs_module(conductor: Any, module: str) -> None:
    """Skip on LocalConductor when its optional script engine ``module`` is not installed."""
    if conductor.kind == "local":
        pytest.importorskip(module)


def needs_js(conductor: Any) -> None:
    needs_module(conductor, "py_mini_racer")


def needs_jq(conductor: Any) -> None:
    needs_module(conductor, "jq")


def task_types(client: Any, *keys: str) -> Dict[str, str]:
    """Register one SIMPLE task definition per key; returns key -> unique task type name."""
    names = {key: unique(f"sy_{key}") for key in keys}
    client.metadata.register_task_defs([task_def(name) for name in names.values()])
    return names


def register(client: Any, tasks: Sequence[Mapping[str, Any]], **fields: Any) -> str:
    """Register a workflow (version 1) of ``tasks`` under a unique name and return the name."""
    name = unique("sy_wf")
    definition = {
        "name": name,
        "version": 1,
        "schemaVersion": 2,
        "ownerEmail": OWNER,
        "timeoutSeconds": 0,
        "tasks": list(tasks),
        **fields,
    }
    client.metadata.register_workflow_def(WorkflowDef.from_json(definition))
    return name


def simple(
    task_type: str, ref: str, inputs: Optional[Mapping[str, Any]] = None, **fields: Any
) -> Dict[str, Any]:
    params = {"v": "${workflow.input.x}"} if inputs is None else dict(inputs)
    return {
        "name": task_type,
        "taskReferenceName": ref,
        "type": "SIMPLE",
        "inputParameters": params,
        **fields,
    }


def system(
    task_type: str, ref: str, inputs: Optional[Mapping[str, Any]] = None, **fields: Any
) -> Dict[str, Any]:
    """A system task named like its reference."""
    return {
        "name": ref,
        "taskReferenceName": ref,
        "type": task_type,
        "inputParameters": dict(inputs or {}),
        **fields,
    }


def work(
    client: Any,
    task_type: str,
    output: Any = None,
    *,
    status: str = "COMPLETED",
    reason: Optional[str] = None,
    timeout: float = 10.0,
) -> Any:
    """Poll one ``task_type`` task and report ``status`` with ``output`` (a dict or a function of the task).

    The default output is ``{"ok": <referenceTaskName>}``. Returns the polled task.
    """
    task = poll_one(client, task_type, timeout)
    if output is None:
        data = {"ok": task.reference_task_name}
    elif callable(output):
        data = output(task)
    else:
        data = dict(output)
    client.tasks.update_task(
        TaskResult.for_task(task, status=status, output_data=data, reason_for_incompletion=reason)
    )
    return task


def row(task_type: str, ref: str, status: str, inputs: Any = None, output: Any = None) -> Dict[str, Any]:
    return {"type": task_type, "ref": ref, "status": status, "input": inputs or {}, "output": output or {}}


def rows(workflow: Workflow, drop_input: Mapping[str, Sequence[str]] = ()) -> List[Dict[str, Any]]:
    """The task list as comparable rows; ``seq`` must be 1, 2, 3... in list order.

    ``drop_input[ref]`` names input keys left out of that task's row (checked separately).
    """
    drop = dict(drop_input or {})
    assert [task.seq for task in workflow.tasks] == list(range(1, len(workflow.tasks) + 1)), [
        (task.seq, task.reference_task_name) for task in workflow.tasks
    ]
    return [
        {
            "type": task.task_type,
            "ref": task.reference_task_name,
            "status": status_of(task.status),
            "input": {
                k: v for k, v in task.input_data.items() if k not in drop.get(task.reference_task_name, ())
            },
            "output": task.output_data,
        }
        for task in workflow.tasks
    ]


def summary(workflow: Workflow) -> Dict[str, Any]:
    return {
        "status": status_of(workflow.status),
        "output": workflow.output,
        "variables": workflow.variables,
        "reason": workflow.reason_for_incompletion,
        "failedRefs": sorted(workflow.failed_reference_task_names),
    }


def expected_summary(
    status: str,
    output: Any = None,
    *,
    variables: Any = None,
    reason: Optional[str] = None,
    failed_refs: Sequence[str] = (),
) -> Dict[str, Any]:
    return {
        "status": status,
        "output": output or {},
        "variables": variables or {},
        "reason": reason,
        "failedRefs": sorted(failed_refs),
    }


def get(client: Any, workflow_id: str) -> Workflow:
    return client.workflows.get(workflow_id, include_tasks=True)


def reached(
    client: Any, workflow_id: str, predicate: Callable[[Workflow], bool], what: str, timeout: float = 10.0
) -> Workflow:
    """The workflow once ``predicate`` holds for it."""

    def check() -> Optional[Workflow]:
        workflow = get(client, workflow_id)
        return workflow if predicate(workflow) else None

    return wait_until(check, timeout=timeout, message=what)


def task_count(n: int) -> Callable[[Workflow], bool]:
    return lambda workflow: len(workflow.tasks) >= n


def by_ref(workflow: Workflow, ref: str) -> Any:
    task = workflow.task_by_ref(ref)
    assert task is not None, f"no task {ref} in {[t.reference_task_name for t in workflow.tasks]}"
    return task


def failed_reason(task: Any, reason: Optional[str]) -> str:
    """A workflow's reasonForIncompletion when ``task`` failed it (§0 of the notes)."""
    return (
        f"Task {task.task_id} failed with status: FAILED and reason: '{'null' if reason is None else reason}'"
    )


# -- SWITCH / DECISION -----------------------------------------------------------------------------


def _switch_value_param(client: Any, default: bool = True) -> tuple:
    t = task_types(client, "b", "c", "d")
    switch = system(
        "SWITCH",
        "sw",
        {"switchCaseValue": "${workflow.input.c}"},
        evaluatorType="value-param",
        expression="switchCaseValue",
        decisionCases={"one": [simple(t["b"], "a1")], "two": [simple(t["b"], "b1"), simple(t["b"], "b2")]},
        defaultCase=[simple(t["c"], "d1")] if default else [],
    )
    return t, register(client, [switch, simple(t["d"], "after")])


def test_switch_value_param_selects_the_matching_case(client):
    t, name = _switch_value_param(client)
    workflow_id = client.workflows.start_by_name(name, {"c": "two", "x": 5})
    switch_row = row(
        "SWITCH",
        "sw",
        "COMPLETED",
        {"switchCaseValue": "two", "case": "two", "hasChildren": "true"},
        {"evaluationResult": ["two"], "selectedCase": "two"},
    )
    mid = reached(client, workflow_id, task_count(2), "switch and first case task")
    assert rows(mid) == [switch_row, row(t["b"], "b1", "SCHEDULED", {"v": 5})]
    assert mid.tasks[0].task_def_name == "SWITCH"
    work(client, t["b"])
    work(client, t["b"])
    work(client, t["d"])
    done = finished(client, workflow_id)
    assert rows(done) == [
        switch_row,
        row(t["b"], "b1", "COMPLETED", {"v": 5}, {"ok": "b1"}),
        row(t["b"], "b2", "COMPLETED", {"v": 5}, {"ok": "b2"}),
        row(t["d"], "after", "COMPLETED", {"v": 5}, {"ok": "after"}),
    ]
    assert summary(done) == expected_summary("COMPLETED", {"ok": "after"})


def test_switch_value_param_falls_back_to_the_default_case(client):
    t, name = _switch_value_param(client)
    workflow_id = client.workflows.start_by_name(name, {"c": "zzz", "x": 5})
    work(client, t["c"])
    work(client, t["d"])
    done = finished(client, workflow_id)
    assert rows(done) == [
        row(
            "SWITCH",
            "sw",
            "COMPLETED",
            {"switchCaseValue": "zzz", "case": "zzz", "hasChildren": "true"},
            {"evaluationResult": ["zzz"], "selectedCase": "zzz"},
        ),
        row(t["c"], "d1", "COMPLETED", {"v": 5}, {"ok": "d1"}),
        row(t["d"], "after", "COMPLETED", {"v": 5}, {"ok": "after"}),
    ]
    assert summary(done) == expected_summary("COMPLETED", {"ok": "after"})


def test_switch_without_a_match_and_an_empty_default_goes_on_after_the_switch(client):
    t, name = _switch_value_param(client, default=False)
    workflow_id = client.workflows.start_by_name(name, {"c": "nomatch", "x": 1})
    work(client, t["d"])
    done = finished(client, workflow_id)
    assert rows(done) == [
        # no "hasChildren" when the selected branch is empty
        row(
            "SWITCH",
            "sw",
            "COMPLETED",
            {"switchCaseValue": "nomatch", "case": "nomatch"},
            {"evaluationResult": ["nomatch"], "selectedCase": "nomatch"},
        ),
        row(t["d"], "after", "COMPLETED", {"v": 1}, {"ok": "after"}),
    ]
    assert summary(done) == expected_summary("COMPLETED", {"ok": "after"})


@pytest.mark.parametrize("x, case", [(5, "big"), (0, "small")])
def test_switch_javascript(conductor, client, x, case):
    needs_js(conductor)
    t = task_types(client, "big", "small")
    switch = system(
        "SWITCH",
        "swj",
        {"x": "${workflow.input.x}"},
        evaluatorType="javascript",
        expression="$.x > 1 ? 'big' : 'small'",
        decisionCases={"big": [simple(t["big"], "big1")], "small": [simple(t["small"], "small1")]},
    )
    workflow_id = client.workflows.start_by_name(register(client, [switch]), {"x": x})
    work(client, t[case])
    done = finished(client, workflow_id)
    assert rows(done) == [
        row(
            "SWITCH",
            "swj",
            "COMPLETED",
            {"x": x, "case": case, "hasChildren": "true"},
            {"evaluationResult": [case], "selectedCase": case},
        ),
        row(t[case], f"{case}1", "COMPLETED", {"v": x}, {"ok": f"{case}1"}),
    ]
    assert summary(done) == expected_summary("COMPLETED", {"ok": f"{case}1"})


def test_switch_javascript_number_result_is_matched_as_an_integer_string(conductor, client):
    """``"" + 4`` in Java: an integral JS number selects case "4", not "4.0"."""
    needs_js(conductor)
    switch = system(
        "SWITCH",
        "sw",
        {"x": "${workflow.input.x}"},
        evaluatorType="javascript",
        expression="$.x * 2",
        decisionCases={"4": [system("NOOP", "n_4")], "4.0": [system("NOOP", "n_4_0")]},
        defaultCase=[system("NOOP", "n_default")],
    )
    workflow_id = client.workflows.start_by_name(register(client, [switch]), {"x": 2})
    done = finished(client, workflow_id)
    assert rows(done) == [
        row(
            "SWITCH",
            "sw",
            "COMPLETED",
            {"x": 2, "case": "4", "hasChildren": "true"},
            {"evaluationResult": ["4"], "selectedCase": "4"},
        ),
        row("NOOP", "n_4", "COMPLETED"),
    ]
    assert summary(done) == expected_summary("COMPLETED", {})


def test_switch_case_with_an_empty_list_does_not_fall_back_to_the_default(client):
    switch = system(
        "SWITCH",
        "sw",
        {"k": "e"},
        evaluatorType="value-param",
        expression="k",
        decisionCases={"e": []},
        defaultCase=[system("NOOP", "d")],
    )
    done = finished(client, client.workflows.start_by_name(register(client, [switch]), {}))
    assert rows(done) == [
        row(
            "SWITCH",
            "sw",
            "COMPLETED",
            {"k": "e", "case": "e"},
            {"evaluationResult": ["e"], "selectedCase": "e"},
        )
    ]
    assert summary(done) == expected_summary("COMPLETED", {"evaluationResult": ["e"], "selectedCase": "e"})


def test_switch_script_error_fails_the_workflow(conductor, client):
    needs_js(conductor)
    switch = system(
        "SWITCH",
        "sw",
        evaluatorType="javascript",
        expression="$.undefinedThing.x",
        decisionCases={"e": [system("NOOP", "n")]},
    )
    done = finished(client, client.workflows.start_by_name(register(client, [switch]), {}))
    task = done.tasks[0]
    message = task.reason_for_incompletion
    assert re.fullmatch(expect_difference(conductor, "script_error_message"), message or ""), message
    assert rows(done) == [row("SWITCH", "sw", "FAILED")]
    assert summary(done) == expected_summary(
        "FAILED", {}, reason=failed_reason(task, message), failed_refs=["sw"]
    )


@pytest.mark.parametrize("value, ref", [("one", "da"), ("other", "dd")])
def test_decision_case_value_param(client, value, ref):
    t = task_types(client, "a", "c")
    decision = system(
        "DECISION",
        "dec",
        {"cv": "${workflow.input.c}"},
        caseValueParam="cv",
        decisionCases={"one": [simple(t["a"], "da")]},
        defaultCase=[simple(t["c"], "dd")],
    )
    workflow_id = client.workflows.start_by_name(register(client, [decision]), {"c": value, "x": 3})
    work(client, t["a"] if ref == "da" else t["c"])
    done = finished(client, workflow_id)
    assert rows(done) == [
        # DECISION's inputData does not contain its own inputParameters
        row("DECISION", "dec", "COMPLETED", {"case": value, "hasChildren": "true"}, {"caseOutput": [value]}),
        row(t["a"] if ref == "da" else t["c"], ref, "COMPLETED", {"v": 3}, {"ok": ref}),
    ]
    assert done.tasks[0].task_def_name == "DECISION"
    assert summary(done) == expected_summary("COMPLETED", {"ok": ref})


def test_decision_without_a_match_or_default_completes_with_the_case_output(client):
    decision = system(
        "DECISION",
        "dec",
        {"cv": "${workflow.input.c}"},
        caseValueParam="cv",
        decisionCases={"one": [system("NOOP", "n1")]},
    )
    workflow_id = client.workflows.start_by_name(register(client, [decision]), {"c": "zz"})
    done = finished(client, workflow_id)
    assert rows(done) == [row("DECISION", "dec", "COMPLETED", {"case": "zz"}, {"caseOutput": ["zz"]})]
    # the last task's output is the workflow output
    assert summary(done) == expected_summary("COMPLETED", {"caseOutput": ["zz"]})


def test_decision_case_with_an_empty_list_falls_back_to_the_default(client):
    decision = system(
        "DECISION",
        "dec",
        {"k": "e"},
        caseValueParam="k",
        decisionCases={"e": []},
        defaultCase=[system("NOOP", "d")],
    )
    done = finished(client, client.workflows.start_by_name(register(client, [decision]), {}))
    assert rows(done) == [
        row("DECISION", "dec", "COMPLETED", {"case": "e", "hasChildren": "true"}, {"caseOutput": ["e"]}),
        row("NOOP", "d", "COMPLETED"),
    ]
    assert summary(done) == expected_summary("COMPLETED", {})


def test_decision_case_expression(conductor, client):
    needs_js(conductor)
    t = task_types(client, "a", "c")
    decision = system(
        "DECISION",
        "dec",
        {"x": "${workflow.input.x}"},
        caseExpression="$.x > 1 ? 'big' : 'small'",
        decisionCases={"big": [simple(t["a"], "da")]},
        defaultCase=[simple(t["c"], "dd")],
    )
    workflow_id = client.workflows.start_by_name(register(client, [decision]), {"x": 3})
    work(client, t["a"])
    done = finished(client, workflow_id)
    assert rows(done) == [
        row("DECISION", "dec", "COMPLETED", {"case": "big", "hasChildren": "true"}, {"caseOutput": ["big"]}),
        row(t["a"], "da", "COMPLETED", {"v": 3}, {"ok": "da"}),
    ]


# -- FORK_JOIN / JOIN ------------------------------------------------------------------------------


def _fork_workflow(client: Any) -> tuple:
    t = task_types(client, "a", "b", "c", "d")
    fork = system(
        "FORK_JOIN",
        "fork",
        {"fi": "${workflow.input.x}"},
        forkTasks=[
            [simple(t["a"], "a1"), simple(t["b"], "a2")],
            [simple(t["c"], "c1"), simple(t["d"], "c2")],
        ],
    )
    join = system("JOIN", "join", {"ji": "${workflow.input.x}"}, joinOn=["a2", "c2"])
    name = register(
        client,
        [fork, join, simple(t["a"], "after", {"j": "${join.output}"})],
        outputParameters={"j": "${join.output}"},
    )
    return t, name


def test_fork_join_runs_the_branches_and_joins_their_outputs(client):
    t, name = _fork_workflow(client)
    workflow_id = client.workflows.start_by_name(name, {"x": 7})
    fork_row = row("FORK", "fork", "COMPLETED", {"fi": 7})
    mid = reached(client, workflow_id, task_count(4), "fork, branch heads and join")
    # created in one batch: FORK, the first task of each branch, the JOIN (IN_PROGRESS, only joinOn as input)
    assert rows(mid) == [
        fork_row,
        row(t["a"], "a1", "SCHEDULED", {"v": 7}),
        row(t["c"], "c1", "SCHEDULED", {"v": 7}),
        row("JOIN", "join", "IN_PROGRESS", {"joinOn": ["a2", "c2"]}),
    ]
    assert [mid.tasks[0].task_def_name, mid.tasks[3].task_def_name] == ["FORK", "JOIN"]
    assert mid.tasks[0].workflow_task.type == "FORK_JOIN"
    work(client, t["a"])
    a2 = poll_one(client, t["b"])  # a2 is scheduled (seq 5) before c2
    work(client, t["c"])
    c2 = poll_one(client, t["d"])
    for task in (a2, c2):
        client.tasks.update_task(
            TaskResult.for_task(task, status="COMPLETED", output_data={"ok": task.reference_task_name})
        )
    work(client, t["a"])  # after
    done = finished(client, workflow_id)
    joined = {"a2": {"ok": "a2"}, "c2": {"ok": "c2"}}
    assert rows(done) == [
        fork_row,
        row(t["a"], "a1", "COMPLETED", {"v": 7}, {"ok": "a1"}),
        row(t["c"], "c1", "COMPLETED", {"v": 7}, {"ok": "c1"}),
        row("JOIN", "join", "COMPLETED", {"joinOn": ["a2", "c2"]}, joined),
        row(t["b"], "a2", "COMPLETED", {"v": 7}, {"ok": "a2"}),
        row(t["d"], "c2", "COMPLETED", {"v": 7}, {"ok": "c2"}),
        row(t["a"], "after", "COMPLETED", {"j": joined}, {"ok": "after"}),
    ]
    assert summary(done) == expected_summary("COMPLETED", {"j": joined})


def test_fork_failing_branch_task_fails_the_workflow_and_cancels_the_join(client):
    t, name = _fork_workflow(client)
    workflow_id = client.workflows.start_by_name(name, {"x": 7})
    a1 = work(client, t["a"], status="FAILED", reason="boom")
    done = finished(client, workflow_id)
    assert rows(done) == [
        row("FORK", "fork", "COMPLETED", {"fi": 7}),
        row(t["a"], "a1", "FAILED", {"v": 7}, {"ok": "a1"}),
        row(t["c"], "c1", "CANCELED", {"v": 7}),
        row("JOIN", "join", "CANCELED", {"joinOn": ["a2", "c2"]}),
    ]
    assert summary(done) == expected_summary(
        "FAILED", {"j": {}}, reason=failed_reason(a1, "boom"), failed_refs=["a1"]
    )
    assert done.failed_task_names == [t["a"]]
    poll_none(client, t["c"])


def test_fork_optional_failing_task_completes_with_errors(client):
    t = task_types(client, "a", "b", "c")
    fork = system(
        "FORK_JOIN",
        "fork",
        {"fi": "${workflow.input.x}"},
        forkTasks=[[simple(t["a"], "a1", optional=True), simple(t["b"], "a2")], [simple(t["c"], "c1")]],
    )
    join = system("JOIN", "join", joinOn=["a1", "c1"])
    workflow_id = client.workflows.start_by_name(register(client, [fork, join]), {"x": 1})
    a1 = work(client, t["a"], status="FAILED", reason="soft")
    a2 = poll_one(client, t["b"])  # the failed optional task's successor is scheduled
    work(client, t["c"])
    reached(client, workflow_id, lambda w: by_ref(w, "join").status != "IN_PROGRESS", "join evaluated")
    client.tasks.update_task(TaskResult.for_task(a2, status="COMPLETED", output_data={"ok": "a2"}))
    done = finished(client, workflow_id)
    assert rows(done) == [
        row("FORK", "fork", "COMPLETED", {"fi": 1}),
        row(t["a"], "a1", "COMPLETED_WITH_ERRORS", {"v": 1}, {"ok": "a1"}),
        row(t["c"], "c1", "COMPLETED", {"v": 1}, {"ok": "c1"}),
        row(
            "JOIN",
            "join",
            "COMPLETED_WITH_ERRORS",
            {"joinOn": ["a1", "c1"]},
            {"a1": {"ok": "a1"}, "c1": {"ok": "c1"}},
        ),
        row(t["b"], "a2", "COMPLETED", {"v": 1}, {"ok": "a2"}),
    ]
    assert by_ref(done, "a1").reason_for_incompletion == "soft"
    assert by_ref(done, "join").reason_for_incompletion == f"{t['a']}/{a1.task_id} completed with errors"
    # the last task (highest seq) gives the output; the workflow is COMPLETED, nothing is "failed"
    assert summary(done) == expected_summary("COMPLETED", {"ok": "a2"})


def test_join_on_one_branch_does_not_wait_for_the_other(client):
    t = task_types(client, "a", "b", "c", "d", "e")
    fork = system(
        "FORK_JOIN",
        "fork",
        {"fi": "${workflow.input.x}"},
        forkTasks=[
            [simple(t["a"], "a1"), simple(t["b"], "a2")],
            [simple(t["c"], "c1"), simple(t["d"], "c2")],
        ],
    )
    name = register(client, [fork, system("JOIN", "join", joinOn=["a2"]), simple(t["e"], "after", {"z": 1})])
    workflow_id = client.workflows.start_by_name(name, {"x": 1})
    work(client, t["a"])
    work(client, t["b"])
    work(client, t["e"])  # scheduled once a2 is done, while c1 still waits
    assert status_of(get(client, workflow_id).status) == "RUNNING"
    work(client, t["c"])
    work(client, t["d"])
    done = finished(client, workflow_id)
    assert rows(done) == [
        row("FORK", "fork", "COMPLETED", {"fi": 1}),
        row(t["a"], "a1", "COMPLETED", {"v": 1}, {"ok": "a1"}),
        row(t["c"], "c1", "COMPLETED", {"v": 1}, {"ok": "c1"}),
        row("JOIN", "join", "COMPLETED", {"joinOn": ["a2"]}, {"a2": {"ok": "a2"}}),
        row(t["b"], "a2", "COMPLETED", {"v": 1}, {"ok": "a2"}),
        row(t["e"], "after", "COMPLETED", {"z": 1}, {"ok": "after"}),
        row(t["d"], "c2", "COMPLETED", {"v": 1}, {"ok": "c2"}),
    ]
    # no outputParameters: the output of the last task in the list (c2), not of the definition's last task
    assert summary(done) == expected_summary("COMPLETED", {"ok": "c2"})


# -- FORK_JOIN_DYNAMIC -----------------------------------------------------------------------------


def _echo_input(task: Any) -> Dict[str, Any]:
    return {"r": task.input_data}


def test_dynamic_fork_legacy_form(client):
    t = task_types(client, "gen", "w")
    gen = simple(t["gen"], "gen", {})
    dfork = system(
        "FORK_JOIN_DYNAMIC",
        "dfork",
        {"dynamicTasks": "${gen.output.tasks}", "dynamicTasksInput": "${gen.output.inputs}"},
        dynamicForkTasksParam="dynamicTasks",
        dynamicForkTasksInputParamName="dynamicTasksInput",
    )
    workflow_id = client.workflows.start_by_name(register(client, [gen, dfork, system("JOIN", "djoin")]), {})
    dynamic_tasks = [
        {"name": t["w"], "taskReferenceName": "w_1", "type": "SIMPLE"},
        {"name": t["w"], "taskReferenceName": "w_2", "type": "SIMPLE"},
    ]
    inputs = {"w_1": {"n": 1}, "w_2": {"n": 2}}
    work(client, t["gen"], {"tasks": dynamic_tasks, "inputs": inputs})
    work(client, t["w"], _echo_input)
    work(client, t["w"], _echo_input)
    done = finished(client, workflow_id)
    joined = {"w_1": {"r": {"n": 1}}, "w_2": {"r": {"n": 2}}}
    assert rows(done, drop_input={"dfork": ["forkedTaskDefs"]}) == [
        row(t["gen"], "gen", "COMPLETED", {}, {"tasks": dynamic_tasks, "inputs": inputs}),
        row(
            "FORK",
            "dfork",
            "COMPLETED",
            {"dynamicTasks": dynamic_tasks, "dynamicTasksInput": inputs, "forkedTasks": ["w_1", "w_2"]},
        ),
        row(t["w"], "w_1", "COMPLETED", {"n": 1}, {"r": {"n": 1}}),
        row(t["w"], "w_2", "COMPLETED", {"n": 2}, {"r": {"n": 2}}),
        row("JOIN", "djoin", "COMPLETED", {"joinOn": ["w_1", "w_2"]}, joined),
    ]
    fork = by_ref(done, "dfork")
    assert fork.workflow_task.type == "FORK_JOIN_DYNAMIC"
    assert [
        (d["name"], d["taskReferenceName"], d["type"], d["inputParameters"])
        for d in fork.input_data["forkedTaskDefs"]
    ] == [
        (t["w"], "w_1", "SIMPLE", {"n": 1}),
        (t["w"], "w_2", "SIMPLE", {"n": 2}),
    ]
    assert summary(done) == expected_summary("COMPLETED", joined)


def test_dynamic_fork_fork_task_name_and_inputs(client):
    t = task_types(client, "w", "after")
    dfork = system(
        "FORK_JOIN_DYNAMIC", "dfork", {"forkTaskName": t["w"], "forkTaskInputs": "${workflow.input.items}"}
    )
    name = register(
        client, [dfork, system("JOIN", "djoin"), simple(t["after"], "after", {"j": "${djoin.output}"})]
    )
    items = [{"a": 1}, {"a": 2}, "plain"]
    workflow_id = client.workflows.start_by_name(name, {"items": items})
    for _ in items:
        work(client, t["w"], _echo_input)
    work(client, t["after"])
    done = finished(client, workflow_id)
    refs = [f"_{t['w']}_{i}" for i in range(3)]
    forked_inputs = [{"a": 1, "__index": 0}, {"a": 2, "__index": 1}, {"input": "plain", "__index": 2}]
    joined = {ref: {"r": data} for ref, data in zip(refs, forked_inputs)}
    assert rows(done, drop_input={"dfork": ["forkedTaskDefs"]}) == [
        row(
            "FORK",
            "dfork",
            "COMPLETED",
            {"forkTaskName": t["w"], "forkTaskInputs": items, "forkedTasks": refs},
        ),
        *[row(t["w"], ref, "COMPLETED", data, {"r": data}) for ref, data in zip(refs, forked_inputs)],
        row("JOIN", "djoin", "COMPLETED", {"joinOn": refs}, joined),
        row(t["after"], "after", "COMPLETED", {"j": joined}, {"ok": "after"}),
    ]
    defs = by_ref(done, "dfork").input_data["forkedTaskDefs"]
    assert [(d["taskReferenceName"], d["type"], d["inputParameters"]) for d in defs] == [
        (ref, "SIMPLE", data) for ref, data in zip(refs, forked_inputs)
    ]
    assert summary(done) == expected_summary("COMPLETED", {"ok": "after"})


def test_dynamic_fork_with_no_inputs_joins_at_once(client):
    t = task_types(client, "w", "after")
    dfork = system(
        "FORK_JOIN_DYNAMIC", "dfork", {"forkTaskName": t["w"], "forkTaskInputs": "${workflow.input.items}"}
    )
    name = register(
        client, [dfork, system("JOIN", "djoin"), simple(t["after"], "after", {"j": "${djoin.output}"})]
    )
    workflow_id = client.workflows.start_by_name(name, {"items": []})
    work(client, t["after"])
    done = finished(client, workflow_id)
    assert rows(done) == [
        row(
            "FORK",
            "dfork",
            "COMPLETED",
            {"forkTaskName": t["w"], "forkTaskInputs": [], "forkedTasks": [], "forkedTaskDefs": []},
        ),
        row("JOIN", "djoin", "COMPLETED", {"joinOn": []}),
        row(t["after"], "after", "COMPLETED", {"j": {}}, {"ok": "after"}),
    ]


def test_dynamic_fork_of_inline_tasks(conductor, client):
    needs_js(conductor)
    fork_inputs = [
        {"evaluatorType": "javascript", "expression": "1+2"},
        {"evaluatorType": "javascript", "expression": "2+2"},
    ]
    dfork = system(
        "FORK_JOIN_DYNAMIC",
        "dfork",
        {"forkTaskType": "INLINE", "forkTaskName": "inl", "forkTaskInputs": fork_inputs},
    )
    done = finished(
        client, client.workflows.start_by_name(register(client, [dfork, system("JOIN", "djoin")]), {})
    )
    joined = {"_inl_0": {"result": 3}, "_inl_1": {"result": 4}}
    assert rows(done, drop_input={"dfork": ["forkedTaskDefs"]}) == [
        row(
            "FORK",
            "dfork",
            "COMPLETED",
            {
                "forkTaskType": "INLINE",
                "forkTaskName": "inl",
                "forkTaskInputs": fork_inputs,
                "forkedTasks": ["_inl_0", "_inl_1"],
            },
        ),
        row("INLINE", "_inl_0", "COMPLETED", {**fork_inputs[0], "__index": 0}, {"result": 3}),
        row("INLINE", "_inl_1", "COMPLETED", {**fork_inputs[1], "__index": 1}, {"result": 4}),
        row("JOIN", "djoin", "COMPLETED", {"joinOn": ["_inl_0", "_inl_1"]}, joined),
    ]
    assert [task.task_def_name for task in done.tasks[1:3]] == ["inl", "inl"]
    assert summary(done) == expected_summary("COMPLETED", joined)


# -- DO_WHILE --------------------------------------------------------------------------------------


def test_do_while_loop_condition_over_two_simple_tasks(conductor, client):
    needs_js(conductor)
    t = task_types(client, "la", "lb", "after")
    loop = system(
        "DO_WHILE",
        "loop",
        {"li": "${workflow.input.x}"},
        loopCondition="if ($.loop['iteration'] < 3) { true; } else { false; }",
        loopOver=[
            simple(t["la"], "la", {"it": "${loop.output.iteration}", "prev": "${lb.output}"}),
            simple(t["lb"], "lb", {"a": "${la.output.n}"}),
        ],
    )
    name = register(client, [loop, simple(t["after"], "after", {"l": "${loop.output}"})])
    workflow_id = client.workflows.start_by_name(name, {"x": 1})
    mid = reached(client, workflow_id, task_count(2), "loop and its first task")
    assert rows(mid) == [
        row("DO_WHILE", "loop", "IN_PROGRESS", {"li": 1}, {"iteration": 1}),
        row(t["la"], "la__1", "SCHEDULED", {"it": 1, "prev": None}),
    ]
    assert mid.tasks[0].task_def_name == "loop"
    for _ in range(3):
        work(client, t["la"], lambda task: {"n": task.input_data["it"] * 10, "ref": task.reference_task_name})
        work(client, t["lb"], lambda task: {"b": task.reference_task_name})
    work(client, t["after"])
    done = finished(client, workflow_id)
    per_iteration = {
        str(i): {"la": {"n": i * 10, "ref": f"la__{i}"}, "lb": {"b": f"lb__{i}"}} for i in (1, 2, 3)
    }
    loop_output = {"iteration": 3, **per_iteration}
    assert rows(done) == [
        row("DO_WHILE", "loop", "COMPLETED", {"li": 1}, loop_output),
        row(t["la"], "la__1", "COMPLETED", {"it": 1, "prev": None}, {"n": 10, "ref": "la__1"}),
        row(t["lb"], "lb__1", "COMPLETED", {"a": 10}, {"b": "lb__1"}),
        row(t["la"], "la__2", "COMPLETED", {"it": 2, "prev": {"b": "lb__1"}}, {"n": 20, "ref": "la__2"}),
        row(t["lb"], "lb__2", "COMPLETED", {"a": 20}, {"b": "lb__2"}),
        row(t["la"], "la__3", "COMPLETED", {"it": 3, "prev": {"b": "lb__2"}}, {"n": 30, "ref": "la__3"}),
        row(t["lb"], "lb__3", "COMPLETED", {"a": 30}, {"b": "lb__3"}),
        row(t["after"], "after", "COMPLETED", {"l": loop_output}, {"ok": "after"}),
    ]
    assert [task.iteration for task in done.tasks] == [3, 1, 1, 2, 2, 3, 3, 0]
    assert summary(done) == expected_summary("COMPLETED", {"ok": "after"})


def test_do_while_items(client):
    t = task_types(client, "la")
    loop = system(
        "DO_WHILE",
        "loop",
        items="${workflow.input.items}",
        loopCondition="",
        loopOver=[
            simple(t["la"], "la", {"item": "${loop.output.loopItem}", "idx": "${loop.output.loopIndex}"})
        ],
    )
    name = register(client, [loop])
    workflow_id = client.workflows.start_by_name(name, {"items": ["p", "q", "r"]})
    for _ in range(3):
        work(client, t["la"], lambda task: {"got": task.input_data})
    done = finished(client, workflow_id)
    got = [{"item": item, "idx": i} for i, item in enumerate("pqr")]
    assert rows(done) == [
        row(
            "DO_WHILE",
            "loop",
            "COMPLETED",
            {},
            {
                "iteration": 3,
                "loopIndex": 2,
                "loopItem": "r",
                **{str(i + 1): {"la": {"got": g}} for i, g in enumerate(got)},
            },
        ),
        *[row(t["la"], f"la__{i + 1}", "COMPLETED", g, {"got": g}) for i, g in enumerate(got)],
    ]
    assert [task.iteration for task in done.tasks] == [3, 1, 2, 3]
    assert summary(done) == expected_summary("COMPLETED", {"got": {"item": "r", "idx": 2}})

    empty = finished(client, client.workflows.start_by_name(name, {"items": []}))
    assert rows(empty) == [row("DO_WHILE", "loop", "COMPLETED", {}, {"iteration": 0})]
    assert empty.tasks[0].iteration == 0
    assert summary(empty) == expected_summary("COMPLETED", {"iteration": 0})


def test_do_while_with_inline_only_runs_on_its_own(conductor, client):
    needs_js(conductor)
    inline = system(
        "INLINE",
        "inl",
        {"evaluatorType": "javascript", "expression": "$.i * 2", "i": "${loop.output.iteration}"},
    )
    loop = system("DO_WHILE", "loop", loopCondition="$.loop['iteration'] < 3", loopOver=[inline])
    done = finished(client, client.workflows.start_by_name(register(client, [loop]), {}))
    inline_input = {"evaluatorType": "javascript", "expression": "$.i * 2"}
    assert rows(done) == [
        row(
            "DO_WHILE",
            "loop",
            "COMPLETED",
            {},
            {
                "iteration": 3,
                "1": {"inl": {"result": 2}},
                "2": {"inl": {"result": 4}},
                "3": {"inl": {"result": 6}},
            },
        ),
        *[
            row("INLINE", f"inl__{i}", "COMPLETED", {**inline_input, "i": i}, {"result": 2 * i})
            for i in (1, 2, 3)
        ],
    ]
    assert [task.iteration for task in done.tasks] == [3, 1, 2, 3]
    assert summary(done) == expected_summary("COMPLETED", {"result": 6})


def test_do_while_keep_last_n_drops_older_iterations(conductor, client):
    needs_js(conductor)
    inline = system(
        "INLINE",
        "inl",
        {"evaluatorType": "javascript", "expression": "$.i * 2", "i": "${loop.output.iteration}"},
    )
    loop = system(
        "DO_WHILE", "loop", {"keepLastN": 2}, loopCondition="$.loop['iteration'] < 4", loopOver=[inline]
    )
    done = finished(client, client.workflows.start_by_name(register(client, [loop]), {}))
    assert [(t.seq, t.reference_task_name, status_of(t.status)) for t in done.tasks] == [
        (1, "loop", "COMPLETED"),
        (4, "inl__3", "COMPLETED"),
        (5, "inl__4", "COMPLETED"),
    ]
    assert done.tasks[0].output_data == {
        "iteration": 4,
        "3": {"inl": {"result": 6}},
        "4": {"inl": {"result": 8}},
    }
    assert summary(done) == expected_summary("COMPLETED", {"result": 8})


def test_do_while_inner_failure_fails_the_workflow_and_cancels_the_loop(conductor, client):
    needs_js(conductor)
    t = task_types(client, "la")
    loop = system(
        "DO_WHILE",
        "loop",
        loopCondition="$.loop['iteration'] < 3",
        loopOver=[simple(t["la"], "la", {"it": "${loop.output.iteration}"})],
    )
    workflow_id = client.workflows.start_by_name(register(client, [loop]), {})
    failed = work(client, t["la"], status="FAILED", reason="inner")
    done = finished(client, workflow_id)
    assert rows(done) == [
        row("DO_WHILE", "loop", "CANCELED", {}, {"iteration": 1}),
        row(t["la"], "la__1", "FAILED", {"it": 1}, {"ok": "la__1"}),
    ]
    assert summary(done) == expected_summary(
        "FAILED", {"ok": "la__1"}, reason=failed_reason(failed, "inner"), failed_refs=["la__1"]
    )


def test_do_while_with_a_switch_inside_suffixes_the_case_tasks_too(conductor, client):
    needs_js(conductor)  # the loop condition is JavaScript
    switch = system(
        "SWITCH",
        "sw",
        {"k": "a"},
        evaluatorType="value-param",
        expression="k",
        decisionCases={"a": [system("NOOP", "n")]},
    )
    loop = system("DO_WHILE", "loop", loopCondition="$.loop['iteration'] < 2", loopOver=[switch])
    done = finished(client, client.workflows.start_by_name(register(client, [loop]), {}))
    switch_output = {"evaluationResult": ["a"], "selectedCase": "a"}
    assert rows(done) == [
        row(
            "DO_WHILE",
            "loop",
            "COMPLETED",
            {},
            {"iteration": 2, "1": {"sw": switch_output, "n": {}}, "2": {"sw": switch_output, "n": {}}},
        ),
        row("SWITCH", "sw__1", "COMPLETED", {"k": "a", "case": "a", "hasChildren": "true"}, switch_output),
        row("NOOP", "n__1", "COMPLETED"),
        row("SWITCH", "sw__2", "COMPLETED", {"k": "a", "case": "a", "hasChildren": "true"}, switch_output),
        row("NOOP", "n__2", "COMPLETED"),
    ]
    assert [task.iteration for task in done.tasks] == [2, 1, 1, 2, 2]
    assert summary(done) == expected_summary("COMPLETED", {})


def test_do_while_retried_inner_task_keeps_its_reference_name(conductor, client):
    needs_js(conductor)
    name_a = unique("sy_retry")
    client.metadata.register_task_defs([task_def(name_a, retryCount=1, retryDelaySeconds=0)])
    loop = system(
        "DO_WHILE", "loop", loopCondition="$.loop['iteration'] < 2", loopOver=[simple(name_a, "a", {})]
    )
    workflow_id = client.workflows.start_by_name(register(client, [loop]), {})
    work(client, name_a, status="FAILED", reason="first try")
    work(client, name_a)
    work(client, name_a)
    done = finished(client, workflow_id)
    assert rows(done) == [
        row(
            "DO_WHILE",
            "loop",
            "COMPLETED",
            {},
            {"iteration": 2, "1": {"a": {"ok": "a__1"}}, "2": {"a": {"ok": "a__2"}}},
        ),
        row(name_a, "a__1", "FAILED", {}, {"ok": "a__1"}),
        row(name_a, "a__1", "COMPLETED", {}, {"ok": "a__1"}),
        row(name_a, "a__2", "COMPLETED", {}, {"ok": "a__2"}),
    ]
    assert [(task.retry_count, task.retried) for task in done.tasks[1:]] == [
        (0, True),
        (1, False),
        (0, False),
    ]
    # the retried failure stays listed in failedReferenceTaskNames although the workflow COMPLETED
    assert summary(done) == expected_summary("COMPLETED", {"ok": "a__2"}, failed_refs=["a__1"])


def test_do_while_condition_error_fails_the_loop(conductor, client):
    needs_js(conductor)
    loop = system("DO_WHILE", "loop", loopCondition="$.undefinedThing.x", loopOver=[system("NOOP", "n")])
    done = finished(client, client.workflows.start_by_name(register(client, [loop]), {}))
    task = done.tasks[0]
    message = task.reason_for_incompletion or ""
    prefix = "Unable to evaluate condition $.undefinedThing.x, exception "
    assert message.startswith(prefix), message
    assert re.fullmatch(expect_difference(conductor, "script_error_message"), message[len(prefix) :]), message
    assert rows(done) == [
        row("DO_WHILE", "loop", "FAILED_WITH_TERMINAL_ERROR", {}, {"iteration": 1, "1": {"n": {}}}),
        row("NOOP", "n__1", "COMPLETED"),
    ]
    # the output is the last task's (n__1), not the failed loop's
    assert summary(done) == expected_summary(
        "FAILED", {}, reason=failed_reason(task, message), failed_refs=["loop"]
    )


# -- SUB_WORKFLOW / START_WORKFLOW -----------------------------------------------------------------


def _child_workflow(client: Any) -> tuple:
    t = task_types(client, "child", "after")
    child = register(
        client,
        [simple(t["child"], "ct", {"p": "${workflow.input.p}"})],
        outputParameters={"co": "${ct.output.v}"},
    )
    return t, child


def _sub_workflow_input(child: str, workflow_input: Any, version: Any = 1) -> Dict[str, Any]:
    return {
        "subWorkflowName": child,
        "subWorkflowVersion": version,
        "subWorkflowDefinition": None,
        "workflowInput": workflow_input,
        "subWorkflowTaskToDomain": None,
        "priority": None,
        "idempotencyKey": None,
        "idempotencyStrategy": None,
    }


def _subworkflow_started(workflow: Workflow) -> bool:
    return bool(workflow.tasks) and bool(workflow.tasks[0].sub_workflow_id)


def test_sub_workflow_by_name(client):
    t, child = _child_workflow(client)
    sub = system(
        "SUB_WORKFLOW", "subw", {"p": "${workflow.input.p}"}, subWorkflowParam={"name": child, "version": 1}
    )
    name = register(client, [sub, simple(t["after"], "after", {"s": "${subw.output}"})])
    correlation = unique("corr")
    workflow_id = client.workflows.start_by_name(name, {"p": 42}, correlation_id=correlation)
    mid = reached(client, workflow_id, _subworkflow_started, "sub workflow started")
    subw = mid.tasks[0]
    child_id = subw.sub_workflow_id
    assert rows(mid) == [
        row(
            "SUB_WORKFLOW",
            "subw",
            "IN_PROGRESS",
            _sub_workflow_input(child, {"p": 42}),
            {"subWorkflowId": child_id},
        )
    ]
    assert subw.task_def_name == "subw"
    running_child = get(client, child_id)
    assert status_of(running_child.status) == "RUNNING"
    assert running_child.workflow_name == child
    assert running_child.parent_workflow_id == workflow_id
    assert running_child.extra.get("parentWorkflowTaskId") == subw.task_id
    assert running_child.correlation_id == correlation
    assert running_child.input == {"p": 42}

    work(client, t["child"], lambda task: {"v": task.input_data["p"] + 1})
    work(client, t["after"])
    done = finished(client, workflow_id)
    merged = {"subWorkflowId": child_id, "co": 43}
    assert rows(done) == [
        row("SUB_WORKFLOW", "subw", "COMPLETED", _sub_workflow_input(child, {"p": 42}), merged),
        row(t["after"], "after", "COMPLETED", {"s": merged}, {"ok": "after"}),
    ]
    assert done.tasks[0].sub_workflow_id == child_id
    assert summary(done) == expected_summary("COMPLETED", {"ok": "after"})
    finished_child = get(client, child_id)
    assert rows(finished_child) == [row(t["child"], "ct", "COMPLETED", {"p": 42}, {"v": 43})]
    assert summary(finished_child) == expected_summary("COMPLETED", {"co": 43})


def test_sub_workflow_child_failure_fails_the_parent(client):
    t, child = _child_workflow(client)
    sub = system(
        "SUB_WORKFLOW", "subw", {"p": "${workflow.input.p}"}, subWorkflowParam={"name": child, "version": 1}
    )
    workflow_id = client.workflows.start_by_name(register(client, [sub]), {"p": 5})
    failed = work(client, t["child"], {"err": 1}, status="FAILED", reason="child broke")
    done = finished(client, workflow_id)
    subw = done.tasks[0]
    child_id = subw.sub_workflow_id
    assert child_id == failed.workflow_instance_id
    child_reason = failed_reason(failed, "child broke")
    task_reason = f"Sub workflow {child}.1/{child_id} failure reason: {child_reason}"
    assert rows(done) == [
        row(
            "SUB_WORKFLOW",
            "subw",
            "FAILED",
            _sub_workflow_input(child, {"p": 5}),
            {"subWorkflowId": child_id, "co": None},
        )
    ]
    assert subw.reason_for_incompletion == task_reason
    assert summary(done) == expected_summary(
        "FAILED",
        {"subWorkflowId": child_id, "co": None},
        reason=failed_reason(subw, task_reason),
        failed_refs=["subw"],
    )
    failed_child = get(client, child_id)
    assert rows(failed_child) == [row(t["child"], "ct", "FAILED", {"p": 5}, {"err": 1})]
    assert summary(failed_child) == expected_summary(
        "FAILED", {"co": None}, reason=child_reason, failed_refs=["ct"]
    )


def test_sub_workflow_with_an_inline_definition(client):
    t = task_types(client, "child")
    child = unique("sy_inline_child")
    definition = {
        "name": child,
        "version": 1,
        "schemaVersion": 2,
        "tasks": [simple(t["child"], "ct", {"p": "${workflow.input.p}"})],
    }
    sub = system(
        "SUB_WORKFLOW",
        "subw",
        {"p": "${workflow.input.p}"},
        subWorkflowParam={"name": child, "workflowDefinition": definition},
    )
    workflow_id = client.workflows.start_by_name(register(client, [sub]), {"p": 1})
    work(client, t["child"], {"v": 2})
    done = finished(client, workflow_id)
    subw = done.tasks[0]
    child_id = subw.sub_workflow_id
    assert rows(done, drop_input={"subw": ["subWorkflowDefinition"]}) == [
        row(
            "SUB_WORKFLOW",
            "subw",
            "COMPLETED",
            {
                k: v
                for k, v in _sub_workflow_input(child, {"p": 1}, version=None).items()
                if k != "subWorkflowDefinition"
            },
            {"subWorkflowId": child_id, "v": 2},
        )
    ]
    embedded = subw.input_data["subWorkflowDefinition"]
    assert (embedded["name"], embedded["version"]) == (child, 1)
    assert [(task["name"], task["taskReferenceName"]) for task in embedded["tasks"]] == [(t["child"], "ct")]
    assert summary(done) == expected_summary("COMPLETED", {"subWorkflowId": child_id, "v": 2})
    child_run = get(client, child_id)
    assert child_run.workflow_name == child
    assert child_run.parent_workflow_id == workflow_id
    assert child_run.input == {"p": 1, "_systemMetadata": {"dynamic": True}}
    assert rows(child_run) == [row(t["child"], "ct", "COMPLETED", {"p": 1}, {"v": 2})]
    assert summary(child_run) == expected_summary("COMPLETED", {"v": 2})


def test_terminating_the_parent_terminates_the_sub_workflow(client):
    t, child = _child_workflow(client)
    sub = system("SUB_WORKFLOW", "subw", subWorkflowParam={"name": child, "version": 1})
    name = register(client, [sub])
    for reason, child_reason in [
        ("stop it", "Parent workflow has been terminated with reason: stop it"),
        (None, "Parent workflow has been terminated with status TERMINATED"),
    ]:
        workflow_id = client.workflows.start_by_name(name, {})
        child_id = (
            reached(client, workflow_id, _subworkflow_started, "sub workflow started")
            .tasks[0]
            .sub_workflow_id
        )
        reached(client, child_id, task_count(1), "the child's task")
        client.workflows.terminate(workflow_id, reason)
        parent = finished(client, workflow_id)
        assert rows(parent) == [
            row(
                "SUB_WORKFLOW",
                "subw",
                "CANCELED",
                _sub_workflow_input(child, {}),
                {"subWorkflowId": child_id},
            )
        ]
        assert summary(parent) == expected_summary("TERMINATED", {"subWorkflowId": child_id}, reason=reason)
        terminated_child = finished(client, child_id)
        assert rows(terminated_child) == [row(t["child"], "ct", "CANCELED", {"p": None})]
        assert summary(terminated_child) == expected_summary("TERMINATED", {"co": None}, reason=child_reason)


def test_terminated_sub_workflow_terminates_the_parent(client):
    t, child = _child_workflow(client)
    sub = system("SUB_WORKFLOW", "subw", subWorkflowParam={"name": child, "version": 1})
    workflow_id = client.workflows.start_by_name(register(client, [sub]), {})
    child_id = (
        reached(client, workflow_id, _subworkflow_started, "sub workflow started").tasks[0].sub_workflow_id
    )
    reached(client, child_id, task_count(1), "the child's task")
    client.workflows.terminate(child_id, "kill child")
    parent = finished(client, workflow_id)
    subw = parent.tasks[0]
    task_reason = f"Sub workflow {child}.1/{child_id} failure reason: kill child"
    # the terminated child's output ({"co": null}) is merged into the task output
    merged = {"subWorkflowId": child_id, "co": None}
    assert rows(parent) == [row("SUB_WORKFLOW", "subw", "CANCELED", _sub_workflow_input(child, {}), merged)]
    assert subw.reason_for_incompletion == task_reason
    assert summary(finished(client, child_id)) == expected_summary(
        "TERMINATED", {"co": None}, reason="kill child"
    )
    # TERMINATED (the child's status mapped back), and no failed task names
    assert summary(parent) == expected_summary(
        "TERMINATED",
        merged,
        reason=f"Task {subw.task_id} failed with status: TERMINATED and reason: '{task_reason}'",
    )


def test_start_workflow_starts_an_independent_workflow(client):
    t, child = _child_workflow(client)
    start = system(
        "START_WORKFLOW",
        "stw",
        {
            "startWorkflow": {
                "name": child,
                "version": 1,
                "input": {"p": "${workflow.input.p}"},
                "correlationId": "cc",
            }
        },
    )
    done = finished(client, client.workflows.start_by_name(register(client, [start]), {"p": 9}))
    started_id = done.tasks[0].output_data.get("workflowId")
    assert isinstance(started_id, str) and started_id
    assert rows(done) == [
        row(
            "START_WORKFLOW",
            "stw",
            "COMPLETED",
            {"startWorkflow": {"name": child, "version": 1, "input": {"p": 9}, "correlationId": "cc"}},
            {"workflowId": started_id},
        )
    ]
    assert summary(done) == expected_summary("COMPLETED", {"workflowId": started_id})
    started = get(client, started_id)
    assert status_of(started.status) == "RUNNING"
    assert started.workflow_name == child
    assert started.parent_workflow_id is None  # fire and forget
    assert started.correlation_id == "cc"
    assert started.input == {"p": 9}
    work(client, t["child"], {"v": 10})
    assert summary(finished(client, started_id)) == expected_summary("COMPLETED", {"co": 10})


# -- WAIT / HUMAN / NOOP ---------------------------------------------------------------------------


def test_wait_completed_by_reference_name(client):
    name = register(client, [system("WAIT", "w", {"a": "${workflow.input.a}"})])
    workflow_id = client.workflows.start_by_name(name, {"a": 1})
    mid = reached(client, workflow_id, task_count(1), "wait task")
    assert rows(mid) == [row("WAIT", "w", "IN_PROGRESS", {"a": 1})]
    assert mid.tasks[0].task_def_name == "w"
    assert summary(get(client, workflow_id))["status"] == "RUNNING"
    task_id = client.tasks.update_task_by_ref_name(
        workflow_id=workflow_id, ref_name="w", status="COMPLETED", output={"res": "done"}
    )
    assert task_id == mid.tasks[0].task_id
    done = finished(client, workflow_id)
    assert rows(done) == [row("WAIT", "w", "COMPLETED", {"a": 1}, {"res": "done"})]
    assert summary(done) == expected_summary("COMPLETED", {"res": "done"})


def test_wait_with_a_duration_completes_on_its_own(client):
    name = register(client, [system("WAIT", "w", {"duration": "1s"})])
    started = time.monotonic()
    workflow_id = client.workflows.start_by_name(name, {})
    mid = get(client, workflow_id)
    assert rows(mid) == [row("WAIT", "w", "IN_PROGRESS", {"duration": "1s"})]
    done = finished(client, workflow_id, timeout=15)
    elapsed = time.monotonic() - started
    assert elapsed >= 0.9, f"WAIT 1s completed after {elapsed:.2f}s"
    assert rows(done) == [row("WAIT", "w", "COMPLETED", {"duration": "1s"})]
    assert summary(done) == expected_summary("COMPLETED", {})


def test_wait_failed_by_reference_name_fails_the_workflow(client):
    workflow_id = client.workflows.start_by_name(register(client, [system("WAIT", "w")]), {})
    reached(client, workflow_id, task_count(1), "wait task")
    client.tasks.update_task_by_ref_name(
        workflow_id=workflow_id, ref_name="w", status="FAILED", output={"why": "x"}
    )
    done = finished(client, workflow_id)
    assert rows(done) == [row("WAIT", "w", "FAILED", {}, {"why": "x"})]
    assert summary(done) == expected_summary(
        "FAILED", {"why": "x"}, reason=failed_reason(done.tasks[0], None), failed_refs=["w"]
    )


@pytest.mark.parametrize("until", ["2020-01-01 00:00 UTC", "2020-01-01"], ids=["with-zone", "date"])
def test_wait_until_a_past_time_completes_at_once(client, until):
    # (An unsupported format such as "2030-01-01 10:00:00" fails the task, FAILED_WITH_TERMINAL_ERROR
    # "Invalid/Unsupported Wait Until format.  Provided: ...", but the real server takes ~30 s to get there.)
    name = register(client, [system("WAIT", "w", {"until": "${workflow.input.u}"})])
    done = finished(client, client.workflows.start_by_name(name, {"u": until}))
    assert rows(done) == [row("WAIT", "w", "COMPLETED", {"until": until})]
    assert summary(done) == expected_summary("COMPLETED", {})


def test_human_task_completed_with_a_task_result(client):
    name = register(client, [system("HUMAN", "h", {"q": "${workflow.input.q}"}), system("NOOP", "n")])
    workflow_id = client.workflows.start_by_name(name, {"q": "?"})
    mid = reached(client, workflow_id, task_count(1), "human task")
    assert rows(mid) == [row("HUMAN", "h", "IN_PROGRESS", {"q": "?"})]
    human = mid.tasks[0]
    assert human.task_def_name == "h"
    poll_none(client, "HUMAN", timeout_ms=100)  # nothing to poll: HUMAN waits for an update
    assert status_of(get(client, workflow_id).status) == "RUNNING"
    result = TaskResult.for_task(human, status="COMPLETED", output_data={"ans": 42})
    assert client.tasks.update_task(result) == human.task_id
    done = finished(client, workflow_id)
    assert rows(done) == [
        row("HUMAN", "h", "COMPLETED", {"q": "?"}, {"ans": 42}),
        row("NOOP", "n", "COMPLETED"),
    ]
    assert summary(done) == expected_summary("COMPLETED", {})


def test_noop(client):
    done = finished(
        client,
        client.workflows.start_by_name(register(client, [system("NOOP", "n1"), system("NOOP", "n2")]), {}),
    )
    assert rows(done) == [row("NOOP", "n1", "COMPLETED"), row("NOOP", "n2", "COMPLETED")]
    assert [task.task_def_name for task in done.tasks] == ["n1", "n2"]
    assert summary(done) == expected_summary("COMPLETED", {})


# -- SET_VARIABLE / TERMINATE ----------------------------------------------------------------------


def test_set_variable_then_a_task_using_the_variables(client):
    t = task_types(client, "use")
    name = register(
        client,
        [
            system("SET_VARIABLE", "sv", {"foo": "${workflow.input.x}", "bar": {"n": 1}}),
            system("SET_VARIABLE", "sv2", {"foo": "overwritten"}),
            simple(t["use"], "use", {"f": "${workflow.variables.foo}", "b": "${workflow.variables.bar.n}"}),
        ],
        variables={"init": 1},
        outputParameters={"vars": "${workflow.variables}"},
    )
    workflow_id = client.workflows.start_by_name(name, {"x": "hello"})
    variables = {"init": 1, "bar": {"n": 1}, "foo": "overwritten"}
    mid = reached(client, workflow_id, task_count(3), "task after the SET_VARIABLEs")
    assert mid.variables == variables
    work(client, t["use"], lambda task: {"in": task.input_data})
    done = finished(client, workflow_id)
    assert rows(done) == [
        row("SET_VARIABLE", "sv", "COMPLETED", {"foo": "hello", "bar": {"n": 1}}),
        row("SET_VARIABLE", "sv2", "COMPLETED", {"foo": "overwritten"}),
        row(t["use"], "use", "COMPLETED", {"f": "overwritten", "b": 1}, {"in": {"f": "overwritten", "b": 1}}),
    ]
    assert summary(done) == expected_summary("COMPLETED", {"vars": variables}, variables=variables)


@pytest.mark.parametrize("termination_status", ["COMPLETED", "FAILED"])
def test_terminate_with_workflow_output(client, termination_status):
    t = task_types(client, "never")
    term_input = {
        "terminationStatus": termination_status,
        "terminationReason": "because",
        "workflowOutput": {"o": "${workflow.input.x}"},
    }
    name = register(
        client,
        [system("NOOP", "n0"), system("TERMINATE", "term", term_input), simple(t["never"], "never")],
        outputParameters={"op": "${workflow.input.x}"},
    )
    done = finished(client, client.workflows.start_by_name(name, {"x": 3}))
    assert rows(done) == [
        row("NOOP", "n0", "COMPLETED"),
        row("TERMINATE", "term", "COMPLETED", {**term_input, "workflowOutput": {"o": 3}}, {"o": 3}),
    ]
    # outputParameters are ignored: the TERMINATE output is the workflow output; no "failed" task
    assert summary(done) == expected_summary(termination_status, {"o": 3}, reason="because")
    poll_none(client, t["never"], timeout_ms=100)


def test_terminate_without_workflow_output_or_reason(client):
    name = register(
        client,
        [system("NOOP", "n0"), system("TERMINATE", "term", {"terminationStatus": "COMPLETED"})],
        outputParameters={"op": "${n0.output}"},
    )
    done = finished(client, client.workflows.start_by_name(name, {}))
    term = by_ref(done, "term")
    assert rows(done) == [
        row("NOOP", "n0", "COMPLETED"),
        row("TERMINATE", "term", "COMPLETED", {"terminationStatus": "COMPLETED"}),
    ]
    assert summary(done) == expected_summary(
        "COMPLETED", {}, reason=f"Workflow is COMPLETED by TERMINATE task: {term.task_id}"
    )


def test_terminate_inside_a_fork_cancels_the_other_branch(client):
    t = task_types(client, "slow")
    term = system("TERMINATE", "term", {"terminationStatus": "COMPLETED", "workflowOutput": {"o": 1}})
    fork = system(
        "FORK_JOIN", "fork", forkTasks=[[simple(t["slow"], "slow", {})], [system("WAIT", "w"), term]]
    )
    name = register(client, [fork, system("JOIN", "j", joinOn=["slow", "term"])])
    workflow_id = client.workflows.start_by_name(name, {})
    reached(client, workflow_id, task_count(4), "fork, branch heads and join")
    client.tasks.update_task_by_ref_name(workflow_id=workflow_id, ref_name="w", status="COMPLETED", output={})
    done = finished(client, workflow_id)
    term_task = by_ref(done, "term")
    assert rows(done) == [
        row("FORK", "fork", "COMPLETED"),
        row(t["slow"], "slow", "CANCELED"),
        row("WAIT", "w", "COMPLETED"),
        row("JOIN", "j", "CANCELED", {"joinOn": ["slow", "term"]}),
        row(
            "TERMINATE",
            "term",
            "COMPLETED",
            {"terminationStatus": "COMPLETED", "workflowOutput": {"o": 1}},
            {"o": 1},
        ),
    ]
    assert summary(done) == expected_summary(
        "COMPLETED", {"o": 1}, reason=f"Workflow is COMPLETED by TERMINATE task: {term_task.task_id}"
    )
    poll_none(client, t["slow"], timeout_ms=100)


# -- INLINE / JSON_JQ_TRANSFORM --------------------------------------------------------------------


@pytest.mark.parametrize(
    "evaluator, expression, result",
    [
        (
            "javascript",
            "function f(){ return {sum: $.a + $.b, arr:[1,2], s:'x'}; } f();",
            {"sum": 5, "arr": [1, 2], "s": "x"},
        ),
        ("graaljs", "(function(){ return {n: null, s: 'x' + $.a}; })()", {"n": None, "s": "x3"}),
        ("javascript", "$.a + $.b", 5),
        ("javascript", "$.a * 1.5", 4.5),
        ("value-param", "a", 3),
    ],
    ids=["object", "graaljs", "int", "float", "value-param"],
)
def test_inline(conductor, client, evaluator, expression, result):
    if evaluator != "value-param":
        needs_js(conductor)
    inputs = {"evaluatorType": evaluator, "expression": expression, "a": "${workflow.input.a}", "b": 2}
    done = finished(
        client, client.workflows.start_by_name(register(client, [system("INLINE", "inl", inputs)]), {"a": 3})
    )
    assert rows(done) == [
        row("INLINE", "inl", "COMPLETED", {**inputs, "a": 3}, {"result": result}),
    ]
    assert type(done.tasks[0].output_data["result"]) is type(result)  # 5 stays an int, 4.5 a float
    assert done.tasks[0].task_def_name == "inl"
    assert summary(done) == expected_summary("COMPLETED", {"result": result})


def test_inline_script_error_fails_with_a_terminal_error(conductor, client):
    needs_js(conductor)
    inputs = {"evaluatorType": "javascript", "expression": "$.undefinedThing.x"}
    done = finished(
        client, client.workflows.start_by_name(register(client, [system("INLINE", "inl", inputs)]), {})
    )
    inline = done.tasks[0]
    message = inline.reason_for_incompletion
    assert re.fullmatch(expect_difference(conductor, "script_error_message"), message or ""), message
    assert rows(done) == [row("INLINE", "inl", "FAILED_WITH_TERMINAL_ERROR", inputs, {"error": message})]
    assert summary(done) == expected_summary(
        "FAILED", {"error": message}, reason=failed_reason(inline, message), failed_refs=["inl"]
    )


def test_inline_blank_expression_fails_with_a_terminal_error(client):
    inputs = {"evaluatorType": "javascript", "expression": ""}
    done = finished(
        client, client.workflows.start_by_name(register(client, [system("INLINE", "inl", inputs)]), {})
    )
    message = (
        "Empty 'expression' in Inline task's input parameters. A non-empty String value must be provided."
    )
    assert rows(done) == [row("INLINE", "inl", "FAILED_WITH_TERMINAL_ERROR", inputs, {"error": message})]
    assert done.tasks[0].reason_for_incompletion == message
    assert summary(done) == expected_summary(
        "FAILED", {"error": message}, reason=failed_reason(done.tasks[0], message), failed_refs=["inl"]
    )


@pytest.mark.parametrize(
    "query, output",
    [
        (".a + .b", {"result": 3, "resultList": [3]}),
        (".items[] | .x", {"result": 1, "resultList": [1, 2]}),
        ("{s: (.a + .b)}", {"result": {"s": 3}, "resultList": [{"s": 3}]}),
    ],
    ids=["sum", "stream", "object"],
)
def test_json_jq_transform(conductor, client, query, output):
    needs_jq(conductor)
    inputs = {"queryExpression": query, "a": 1, "b": "${workflow.input.b}", "items": [{"x": 1}, {"x": 2}]}
    done = finished(
        client,
        client.workflows.start_by_name(
            register(client, [system("JSON_JQ_TRANSFORM", "jq", inputs)]), {"b": 2}
        ),
    )
    assert rows(done) == [row("JSON_JQ_TRANSFORM", "jq", "COMPLETED", {**inputs, "b": 2}, output)]
    assert done.tasks[0].task_def_name == "jq"
    assert summary(done) == expected_summary("COMPLETED", output)


def test_json_jq_transform_query_error_fails_the_task(conductor, client):
    needs_jq(conductor)
    inputs = {"queryExpression": "invalid (((", "a": 1}
    done = finished(
        client,
        client.workflows.start_by_name(register(client, [system("JSON_JQ_TRANSFORM", "jq", inputs)]), {}),
    )
    jq_task = done.tasks[0]
    message = jq_task.reason_for_incompletion
    assert re.match(expect_difference(conductor, "jq_error_message"), message or ""), message
    # FAILED, not FAILED_WITH_TERMINAL_ERROR; the message is also the task's output "error"
    assert rows(done) == [row("JSON_JQ_TRANSFORM", "jq", "FAILED", inputs, {"error": message})]
    assert summary(done) == expected_summary(
        "FAILED", {"error": message}, reason=failed_reason(jq_task, message), failed_refs=["jq"]
    )


# -- DYNAMIC ---------------------------------------------------------------------------------------


def test_dynamic_resolving_to_a_simple_task(client):
    t = task_types(client, "dyn")
    dyn = system("DYNAMIC", "dyn", {"tn": "${workflow.input.tn}", "v": 5}, dynamicTaskNameParam="tn")
    workflow_id = client.workflows.start_by_name(register(client, [dyn]), {"tn": t["dyn"]})
    mid = reached(client, workflow_id, task_count(1), "dynamic task")
    assert rows(mid) == [row(t["dyn"], "dyn", "SCHEDULED", {"tn": t["dyn"], "v": 5})]
    assert mid.tasks[0].task_def_name == t["dyn"]
    assert mid.tasks[0].workflow_task.type == "DYNAMIC"
    work(client, t["dyn"], lambda task: {"in": task.input_data})
    done = finished(client, workflow_id)
    assert rows(done) == [
        row(t["dyn"], "dyn", "COMPLETED", {"tn": t["dyn"], "v": 5}, {"in": {"tn": t["dyn"], "v": 5}})
    ]
    assert summary(done) == expected_summary("COMPLETED", {"in": {"tn": t["dyn"], "v": 5}})


def test_dynamic_resolving_to_a_system_task(client):
    dyn = system("DYNAMIC", "dyn", {"tn": "${workflow.input.tn}", "v": 5}, dynamicTaskNameParam="tn")
    done = finished(client, client.workflows.start_by_name(register(client, [dyn]), {"tn": "NOOP"}))
    assert rows(done) == [row("NOOP", "dyn", "COMPLETED", {"tn": "NOOP", "v": 5})]
    assert done.tasks[0].task_def_name == "NOOP"
    assert summary(done) == expected_summary("COMPLETED", {})


# -- HTTP ------------------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server API
        if self.path == "/data.json":
            self._send(200, "application/json", json.dumps({"hello": "world", "n": 1}).encode())
        elif self.path == "/text":
            self._send(200, "text/plain", b"plain text\n")
        else:
            self._send(404, "text/plain", b"nope")

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass


@pytest.fixture(scope="module")
def http_base() -> Iterator[str]:
    """A small loopback HTTP server (both servers under test run on this machine)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="conformance-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.parametrize(
    "path, content_type, body",
    [("/data.json", "application/json", {"hello": "world", "n": 1}), ("/text", "text/plain", "plain text\n")],
    ids=["json", "text"],
)
def test_http_get(client, http_base, path, content_type, body):
    request = {"uri": f"{http_base}{path}", "method": "GET"}
    name = register(client, [system("HTTP", "http", {"http_request": request})])
    done = finished(client, client.workflows.start_by_name(name, {}), timeout=20)
    http_task = done.tasks[0]
    response = http_task.output_data.get("response")
    assert isinstance(response, dict), http_task.output_data
    headers = {key.lower(): value for key, value in response.get("headers", {}).items()}
    # header values are lists; JSON bodies are parsed, others are a string
    assert headers.get("content-type") == [content_type]
    assert headers.get("content-length") == [
        str(len(json.dumps(body).encode() if isinstance(body, dict) else body.encode()))
    ]
    assert {k: v for k, v in response.items() if k != "headers"} == {
        "statusCode": 200,
        "reasonPhrase": "OK",
        "body": body,
    }
    assert rows(done) == [
        row(
            "HTTP",
            "http",
            "COMPLETED",
            {"http_request": request, "asyncComplete": False},
            {"response": response},
        )
    ]
    assert http_task.task_def_name == "http"
    assert summary(done) == expected_summary("COMPLETED", {"response": response})


def test_http_error_status_fails_the_task(client, http_base):
    request = {"uri": f"{http_base}/missing", "method": "GET"}
    name = register(client, [system("HTTP", "http", {"http_request": request})])
    done = finished(client, client.workflows.start_by_name(name, {}), timeout=20)
    http_task = done.tasks[0]
    response = http_task.output_data.get("response")
    # the response is an error text, not a map
    assert response == f'java.lang.Exception: 404 Not Found on GET request for "{http_base}/missing": "nope"'
    reason = f"Failed to invoke HTTP task due to: {response}"
    assert http_task.reason_for_incompletion == reason
    assert rows(done) == [
        row(
            "HTTP",
            "http",
            "FAILED",
            {"http_request": request, "asyncComplete": False},
            {"response": response},
        )
    ]
    assert summary(done) == expected_summary(
        "FAILED", {"response": response}, reason=failed_reason(http_task, reason), failed_refs=["http"]
    )


def test_http_flat_form(client, http_base):
    inputs = {"uri": f"{http_base}/data.json", "method": "GET"}
    done = finished(
        client,
        client.workflows.start_by_name(register(client, [system("HTTP", "http", inputs)]), {}),
        timeout=20,
    )
    response = done.tasks[0].output_data.get("response")
    assert isinstance(response, dict), done.tasks[0].output_data
    assert (response.get("statusCode"), response.get("body")) == (200, {"hello": "world", "n": 1})
    assert rows(done) == [
        row("HTTP", "http", "COMPLETED", {**inputs, "asyncComplete": False}, {"response": response})
    ]


def test_http_connection_refused_fails_the_task(client):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    uri = f"http://127.0.0.1:{port}/x"
    request = {"uri": uri, "method": "GET"}
    done = finished(
        client,
        client.workflows.start_by_name(
            register(client, [system("HTTP", "http", {"http_request": request})]), {}
        ),
        timeout=20,
    )
    http_task = done.tasks[0]
    response = (
        f'java.lang.Exception: I/O error on GET request for "{uri}": '
        f"Connect to http://127.0.0.1:{port} failed: Connection refused"
    )
    reason = f"Failed to invoke HTTP task due to: {response}"
    assert rows(done) == [
        row(
            "HTTP",
            "http",
            "FAILED",
            {"http_request": request, "asyncComplete": False},
            {"response": response},
        )
    ]
    assert http_task.reason_for_incompletion == reason
    assert summary(done) == expected_summary(
        "FAILED", {"response": response}, reason=failed_reason(http_task, reason), failed_refs=["http"]
    )


@pytest.mark.parametrize(
    "request_, message",
    [
        (
            {"method": "GET"},
            "Missing HTTP URI.  See documentation for HttpTask for required input parameters",
        ),
        ({"uri": "http://127.0.0.1:1/x"}, "No HTTP method specified"),
    ],
    ids=["no-uri", "no-method"],
)
def test_http_invalid_request_fails_the_task(client, request_, message):
    done = finished(
        client,
        client.workflows.start_by_name(
            register(client, [system("HTTP", "http", {"http_request": request_})]), {}
        ),
        timeout=20,
    )
    assert rows(done) == [row("HTTP", "http", "FAILED", {"http_request": request_, "asyncComplete": False})]
    assert done.tasks[0].reason_for_incompletion == message
    assert summary(done) == expected_summary(
        "FAILED", {}, reason=failed_reason(done.tasks[0], message), failed_refs=["http"]
    )


def test_http_async_complete_waits_for_an_external_update(client, http_base):
    """``asyncComplete: true`` on the workflow task: after a 2xx the task stays IN_PROGRESS, with the
    response as its output, until someone updates it."""
    request = {"uri": f"{http_base}/data.json", "method": "GET"}
    name = register(client, [system("HTTP", "http", {"http_request": request}, asyncComplete=True)])
    workflow_id = client.workflows.start_by_name(name, {})

    def called() -> Optional[Workflow]:
        workflow = client.workflows.get(workflow_id)
        return workflow if workflow.tasks and "response" in workflow.tasks[0].output_data else None

    waiting = wait_until(called, timeout=20, message="the HTTP call")
    http_task = waiting.tasks[0]
    assert status_of(http_task.status) == "IN_PROGRESS"
    assert http_task.input_data == {"http_request": request, "asyncComplete": True}
    assert http_task.output_data["response"]["statusCode"] == 200
    time.sleep(1.5)  # nothing completes it on its own (the real server's system-task workers poll again)
    assert status_of(client.workflows.get(workflow_id).tasks[0].status) == "IN_PROGRESS"
    assert status_of(client.workflows.get(workflow_id).status) == "RUNNING"
    client.tasks.update_task(TaskResult.for_task(http_task, status="COMPLETED", output_data={"done": True}))
    done = finished(client, workflow_id)
    assert status_of(done.status) == "COMPLETED"
    assert status_of(done.tasks[0].status) == "COMPLETED"
    assert done.tasks[0].output_data["done"] is True


def test_http_async_complete_in_input_parameters_is_overridden(client, http_base):
    """The mapper sets ``asyncComplete`` in the input from the workflow task's own field."""
    request = {"uri": f"{http_base}/text", "method": "GET"}
    name = register(client, [system("HTTP", "http", {"http_request": request, "asyncComplete": True})])
    done = finished(client, client.workflows.start_by_name(name, {}), timeout=20)
    assert status_of(done.status) == "COMPLETED"
    assert done.tasks[0].input_data["asyncComplete"] is False


# -- task types LocalConductor does not know ---------------------------------------------------------


def test_unknown_task_type_registers_and_runs_as_a_user_task(client):
    """A type without a system task of its own is queued under its type, like a SIMPLE task."""
    kind = unique("CF_MADE_UP").upper()
    name = register(client, [system(kind, "made", {"v": "${workflow.input.x}"})])
    workflow_id = client.workflows.start_by_name(name, {"x": 7})
    task = poll_one(client, kind)
    assert task.task_type == kind and task.input_data == {"v": 7}
    assert task.reference_task_name == "made" and task.task_def_name == "made"
    client.tasks.update_task(TaskResult.for_task(task, status="COMPLETED", output_data={"r": 1}))
    done = finished(client, workflow_id)
    assert rows(done) == [row(kind, "made", "COMPLETED", {"v": 7}, {"r": 1})]


@pytest.mark.parametrize(
    "kind, inputs, fields",
    [
        ("LLM_CHAT_COMPLETE", {"llmProvider": "none", "model": "none"}, {}),
        ("KAFKA_PUBLISH", {"kafka_request": {"topic": "t", "value": "v", "bootStrapServers": "localhost:1"}}, {}),
        ("JDBC", {"statement": "SELECT 1"}, {}),
        ("EVENT", {}, {"sink": "conductor"}),
    ],
    ids=["llm", "kafka", "jdbc", "event"],
)
def test_system_types_local_conductor_lacks_register(client, kind, inputs, fields):
    name = register(client, [system(kind, "sys", inputs, **fields)])
    assert client.metadata.get_workflow_def(name).tasks[0].type == kind


def test_event_task_without_sink_is_refused(client):
    with pytest.raises(APIError) as refused:
        register(client, [system("EVENT", "ev", {})])
    assert refused.value.status_code == 400
    assert "sink field is required for taskType: EVENT taskName: ev" in str(refused.value.body)
