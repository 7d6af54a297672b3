"""The decider's indexed task list answers what a scan of the list answers, whatever is done to it."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from hypothesis import given, settings
from hypothesis import strategies as st

from conductor_workers.server.definitions import strip_iteration
from conductor_workers.server.expressions import expression_document, resolve
from conductor_workers.server.task_list import TaskList

REFS = ["a", "b", "a__1", "a__2", "b__1", "workflow"]


def make_task(ref: str, seq: int, retry: int) -> Dict[str, Any]:
    iteration = int(ref.rsplit("__", 1)[1]) if "__" in ref else 0
    return {"referenceTaskName": ref, "seq": seq, "retryCount": retry, "iteration": iteration,
            "status": "COMPLETED", "inputData": {}, "outputData": {"seq": seq, "retry": retry}}


def scanned_latest(tasks: List[Dict[str, Any]], name: str) -> Optional[Dict[str, Any]]:
    """What the expression document answered before the index: a stable sort by seq, the last wins."""
    latest = None
    for task in sorted(tasks, key=lambda t: t["seq"]):
        if task["referenceTaskName"] == name or (task["iteration"] and strip_iteration(task["referenceTaskName"]) == name):
            latest = task
    return latest


task_strategy = st.builds(make_task, st.sampled_from(REFS), st.integers(0, 6), st.integers(0, 2))
operation = st.one_of(
    st.tuples(st.just("append"), task_strategy),
    st.tuples(st.just("insert"), task_strategy),
    st.tuples(st.just("remove"), st.integers(0, 20)),
    st.tuples(st.just("ask"), st.sampled_from(REFS + ["c"])),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(operation, max_size=30))
def test_the_index_answers_what_a_scan_answers(operations):
    tasks = TaskList()
    for kind, value in operations:
        if kind == "append":
            tasks.append(value)
        elif kind == "insert":
            tasks.insert(0, value)
        elif kind == "remove" and tasks:
            tasks.remove(tasks[value % len(tasks)])
        plain = list(tasks)
        for ref in REFS + ["c"]:
            assert tasks.with_ref(ref) == [t for t in plain if t["referenceTaskName"] == ref]
            assert tasks.latest(ref) is scanned_latest(plain, ref)
            for retry in range(3):
                assert tasks.has_attempt(ref, retry) == any(
                    t["referenceTaskName"] == ref and t["retryCount"] == retry for t in plain)
        assert tasks.max_seq() == max((t["seq"] for t in plain), default=0)


@settings(max_examples=200, deadline=None)
@given(st.lists(task_strategy, max_size=8), st.lists(task_strategy, max_size=8), st.sampled_from(REFS))
def test_an_expression_names_the_task_it_named_before(tasks, created, name):
    """Stored tasks then the ones being made: the latest seq wins, the later one at equal seq."""
    workflow = {"workflowId": "w", "input": {"x": 1}, "workflowDefinition": {"name": "n", "version": 1}}
    document = expression_document(workflow, TaskList(tasks), created)
    expected = scanned_latest(tasks + created, name)
    found = resolve("${%s.output}" % name, document)
    if expected is not None:
        assert found == expected["outputData"]
    elif name == "workflow":
        assert found == {}
    else:
        assert found is None
    assert resolve("${workflow.input.x}", expression_document(workflow)) == 1
