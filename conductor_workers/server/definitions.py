"""Workflow definitions as trees: task types, nested task lists, and "what runs next".

A workflow definition is a list of tasks, some of which hold lists of their own (a ``SWITCH``'s
cases, a ``FORK_JOIN``'s branches, a ``DO_WHILE``'s loop). conductor-oss walks that tree to find
the task after a given reference name (``WorkflowDef.getNextTask`` and ``WorkflowTask.next``);
:func:`next_task` follows the same rules, so that a task at the end of a case continues after the
``SWITCH``, the end of a fork branch goes to the ``JOIN``, and the end of a loop body goes back
to its ``DO_WHILE``.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Iterator, List, Optional

JSON = Dict[str, Any]

#: System tasks of conductor-oss 3.32.1 (some from its optional modules) that LocalConductor does not
#: run: accepted at registration, and failed, with a reason that names the type, when reached.
UNSUPPORTED_SYSTEM_TYPES = frozenset({
    "EVENT", "KAFKA_PUBLISH", "JDBC", "LAMBDA", "EXCLUSIVE_JOIN", "FORK", "PULL_WORKFLOW_MESSAGES",
    "LLM_TEXT_COMPLETE", "LLM_CHAT_COMPLETE", "LLM_INDEX_TEXT", "LLM_SEARCH_INDEX", "LLM_GENERATE_EMBEDDINGS",
    "LLM_STORE_EMBEDDINGS", "LLM_GET_EMBEDDINGS", "GENERATE_IMAGE", "GENERATE_AUDIO", "GENERATE_VIDEO",
    "GENERATE_PDF", "LIST_MCP_TOOLS", "CALL_MCP_TOOL", "AGENT", "GET_AGENT_CARD", "CANCEL_AGENT",
})
#: Task types the server executes itself (never handed to a worker's poll).
SYSTEM_TASK_TYPES = frozenset({
    "SWITCH", "DECISION", "FORK_JOIN", "JOIN", "FORK_JOIN_DYNAMIC", "DO_WHILE",
    "SUB_WORKFLOW", "START_WORKFLOW", "WAIT", "HUMAN", "NOOP", "SET_VARIABLE", "TERMINATE",
    "INLINE", "JSON_JQ_TRANSFORM", "HTTP",
}) | UNSUPPORTED_SYSTEM_TYPES


def is_user_defined(kind: str) -> bool:
    """A type with no task mapper of its own (``YIELD``, a made-up name): conductor-oss 3.32.1 maps it as a
    user task (UserDefinedTaskMapper), queued under the type for whoever polls or updates it."""
    return kind not in SYSTEM_TASK_TYPES and kind not in ("SIMPLE", "DYNAMIC")


#: Built-in control-flow tasks: never retried (conductor-oss's ``TaskType.isBuiltIn``).
BUILT_IN_TYPES = frozenset({"SWITCH", "DECISION", "FORK", "JOIN", "EXCLUSIVE_JOIN", "DO_WHILE"})

_ITERATION = re.compile(r"__\d+$")


def strip_iteration(ref: str) -> str:
    """``ref__3`` -> ``ref`` (the suffix a DO_WHILE gives its loop tasks)."""
    return _ITERATION.sub("", ref)


def with_iteration(ref: str, iteration: int) -> str:
    return "%s__%d" % (ref, iteration)


def children(workflow_task: JSON) -> List[List[JSON]]:
    """The task lists nested in ``workflow_task`` (cases then default, branches, loop body)."""
    kind = workflow_task.get("type")
    if kind in ("SWITCH", "DECISION"):
        cases = list((workflow_task.get("decisionCases") or {}).values())
        return cases + [workflow_task.get("defaultCase") or []]
    if kind == "FORK_JOIN":
        return list(workflow_task.get("forkTasks") or [])
    if kind == "DO_WHILE":
        return [workflow_task.get("loopOver") or []]
    return []


def walk(tasks: List[JSON]) -> Iterator[JSON]:
    """Every task of ``tasks``, depth first, nested ones included."""
    for task in tasks:
        yield task
        for branch in children(task):
            yield from walk(branch)


def contains(workflow_task: JSON, ref: str) -> bool:
    """``workflow_task`` is ``ref`` or holds it somewhere below (``WorkflowTask.has``)."""
    if workflow_task.get("taskReferenceName") == ref:
        return True
    return any(contains(task, ref) for branch in children(workflow_task) for task in branch)


def find(tasks: List[JSON], ref: str) -> Optional[JSON]:
    for task in walk(tasks):
        if task.get("taskReferenceName") == ref:
            return task
    return None


def enclosing_loop(tasks: List[JSON], ref: str) -> Optional[JSON]:
    """The innermost DO_WHILE whose body holds ``ref``."""
    found = None
    for task in walk(tasks):
        if task.get("type") == "DO_WHILE" and task.get("taskReferenceName") != ref and contains(task, ref):
            found = task  # walk is depth first: a later match is nested deeper
    return found


def _scan(branch: List[JSON], ref: str, owner: JSON) -> "tuple[Optional[JSON], bool, bool]":
    """Look for ``ref`` in one nested list: (next task, stopped at it, it was a direct child)."""
    for index, task in enumerate(branch):
        if task.get("taskReferenceName") == ref:
            return (branch[index + 1] if index + 1 < len(branch) else None), True, True
        following = _next_in(task, ref, owner)
        if following is not None:
            return following, True, False
        if contains(task, ref):
            return (branch[index + 1] if index + 1 < len(branch) else None), True, False
    return None, False, False


def _next_in(workflow_task: JSON, ref: str, parent: Optional[JSON]) -> Optional[JSON]:
    """``WorkflowTask.next``: the task after ``ref`` inside ``workflow_task``, if it decides one."""
    kind = workflow_task.get("type")
    if kind in ("DO_WHILE", "SWITCH", "DECISION"):
        for branch in children(workflow_task):
            following, stopped, _direct = _scan(branch, ref, workflow_task)
            if following is not None:
                return following
            if stopped:
                break
        if kind == "DO_WHILE" and contains(workflow_task, ref):
            return workflow_task  # the loop decides whether another iteration runs
        return None
    if kind == "FORK_JOIN":
        for branch in children(workflow_task):
            following, stopped, direct = _scan(branch, ref, workflow_task)
            if following is not None:
                return following
            if direct and parent is not None:
                return _next_in(parent, workflow_task["taskReferenceName"], parent)
            if stopped and direct:
                break
        return None
    return None


def next_task(tasks: List[JSON], ref: str) -> Optional[JSON]:
    """``WorkflowDef.getNextTask``: the task that follows ``ref`` (None at the end)."""
    current = find(tasks, ref)
    if current is not None and current.get("type") == "TERMINATE":
        return None
    for index, task in enumerate(tasks):
        if task.get("taskReferenceName") == ref:
            return tasks[index + 1] if index + 1 < len(tasks) else None
        following = _next_in(task, ref, None)
        if following is not None:
            return following
        if task.get("type") == "DO_WHILE" and contains(task, ref):
            return None
        if contains(task, ref):
            return tasks[index + 1] if index + 1 < len(tasks) else None
    return None
