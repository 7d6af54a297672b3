"""What a worker returns or raises becomes the task's status, output, reason and logs (both servers)."""
from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable, Dict, List, Optional

from support.workers import Env, Flow, wait_until

from conductor_workers import (
    NonRetryableError,
    Task,
    TaskResult,
    TaskStatus,
    WorkflowStatus,
    add_log,
    worker_task,
)


@dataclasses.dataclass
class Point:
    x: int
    y: List[str]


class Case:
    """One return/raise form: a worker, the workflow it runs in, and what the server must show."""

    def __init__(
        self,
        name: str,
        fn: Callable[..., Any],
        *,
        task_status: TaskStatus,
        workflow_status: WorkflowStatus,
        output: Optional[Dict[str, Any]] = None,
        reason: Optional[str] = None,
        logs: Optional[List[str]] = None,
        input: Optional[Dict[str, Any]] = None,
        input_parameters: Optional[Dict[str, Any]] = None,
        retry_count: int = 0,
        attempts: int = 1,
        exact_reason: bool = False,
    ) -> None:
        self.name, self.fn = name, fn
        self.task_status, self.workflow_status = task_status, workflow_status
        self.output, self.reason, self.logs = output, reason, logs or []
        self.input, self.input_parameters = input or {}, input_parameters
        self.retry_count, self.attempts = retry_count, attempts
        self.exact_reason = exact_reason  # reason == the message (else: contains it)
        self.flow: Optional[Flow] = None
        self.workflow_id = ""


def _cases() -> List[Case]:
    def boom() -> None:
        raise ValueError("boom: the worker raised")

    def fatal() -> None:
        raise NonRetryableError("fatal: do not retry")

    def logs() -> Dict[str, Any]:
        add_log("step one")
        add_log("step two")
        return {"logged": 2}

    def greet(name: str, times: int = 2) -> Dict[str, Any]:
        return {"greeting": "hi " * times + name}

    ok, failed = TaskStatus.COMPLETED, TaskStatus.FAILED
    wf_ok, wf_failed = WorkflowStatus.COMPLETED, WorkflowStatus.FAILED
    return [
        Case("dict", lambda: {"a": 1, "nested": {"b": [1, "two"]}}, task_status=ok, workflow_status=wf_ok,
             output={"a": 1, "nested": {"b": [1, "two"]}}),
        Case("none", lambda: None, task_status=ok, workflow_status=wf_ok, output={}),
        Case("complete", lambda: TaskResult.complete({"via": "TaskResult"}), task_status=ok,
             workflow_status=wf_ok, output={"via": "TaskResult"}),
        Case("tr_failed", lambda: TaskResult.failed("explicitly failed", {"partial": True}), task_status=failed,
             workflow_status=wf_failed, reason="explicitly failed", output={"partial": True}, exact_reason=True),
        Case("scalar_int", lambda: 42, task_status=ok, workflow_status=wf_ok, output={"result": 42}),
        Case("scalar_str", lambda: "hello", task_status=ok, workflow_status=wf_ok, output={"result": "hello"}),
        Case("list", lambda: [1, 2], task_status=ok, workflow_status=wf_ok, output={"result": [1, 2]}),
        Case("dataclass", lambda: Point(3, ["a"]), task_status=ok, workflow_status=wf_ok,
             output={"x": 3, "y": ["a"]}),
        Case("raise", boom, task_status=failed, workflow_status=wf_failed, reason="boom: the worker raised",
             logs=["Traceback", "ValueError: boom: the worker raised"], exact_reason=True),
        Case("nonretryable", fatal, task_status=TaskStatus.FAILED_WITH_TERMINAL_ERROR, workflow_status=wf_failed,
             reason="fatal: do not retry", retry_count=2, exact_reason=True),
        Case("not_json", lambda: {"obj": object()}, task_status=failed, workflow_status=wf_failed,
             reason="JSON"),
        Case("unsupported", lambda: {1, 2}, task_status=failed, workflow_status=wf_failed, reason="returned set"),
        Case("add_log", logs, task_status=ok, workflow_status=wf_ok, output={"logged": 2},
             logs=["step one", "step two"]),
        Case("kwargs", greet, task_status=ok, workflow_status=wf_ok, output={"greeting": "hi hi Ada"},
             input={"name": "Ada"}, input_parameters={"name": "${workflow.input.name}"}),
        Case("kwargs_default_overridden", greet, task_status=ok, workflow_status=wf_ok,
             output={"greeting": "hi Ada"}, input={"name": "Ada", "times": 1},
             input_parameters={"name": "${workflow.input.name}", "times": "${workflow.input.times}"}),
        Case("missing_key", greet, task_status=TaskStatus.FAILED_WITH_TERMINAL_ERROR, workflow_status=wf_failed,
             reason="'name'", input={"other": 1}, input_parameters={"other": "${workflow.input.other}"},
             retry_count=2),
    ]


def test_every_return_and_raise_form(any_env: Env) -> None:
    """All forms at once (one manager, one workflow each), then every mismatch reported together."""
    cases = _cases()
    for case in cases:
        case.flow = any_env.flow(
            case.name, retry_count=case.retry_count, input_parameters=case.input_parameters or {}
        )
    workers = [worker_task(case.flow.task_name, batch_poll_timeout=200)(case.fn) for case in cases]  # type: ignore[union-attr]
    manager = any_env.manager(workers)
    manager.start_polling()
    for case in cases:
        case.workflow_id = case.flow.start(case.input)  # type: ignore[union-attr]

    problems: List[str] = []
    for case in cases:
        workflow = any_env.wait(case.workflow_id)
        tasks = [t for t in workflow.tasks if t.reference_task_name == "t"]
        task = tasks[-1]
        if workflow.status is not case.workflow_status:
            problems.append(f"{case.name}: workflow {workflow.status} != {case.workflow_status}")
        if task.status is not case.task_status:
            problems.append(f"{case.name}: task {task.status} != {case.task_status} ({task.reason_for_incompletion})")
        if len(tasks) != case.attempts:
            problems.append(f"{case.name}: {len(tasks)} attempt(s), expected {case.attempts}")
        if case.output is not None and task.output_data != case.output:
            problems.append(f"{case.name}: output {task.output_data!r} != {case.output!r}")
        reason = task.reason_for_incompletion or ""
        if case.reason is not None and (reason != case.reason if case.exact_reason else case.reason not in reason):
            problems.append(f"{case.name}: reason {task.reason_for_incompletion!r} lacks {case.reason!r}")
        case_task_id = task.task_id
        if case.logs:
            def has_logs(task_id: str = case_task_id, wanted: List[str] = case.logs) -> bool:
                text = "\n".join(any_env.logs(task_id))
                return all(line in text for line in wanted)

            try:
                wait_until(has_logs, timeout=30, interval=0.2, message=f"{case.name}: logs {case.logs}")
            except AssertionError:
                problems.append(f"{case.name}: logs {any_env.logs(case_task_id)!r} lack {case.logs!r}")
    assert not problems, "\n".join(problems)
    status = manager.status()
    assert sum(s.reports_failed for s in status.values()) == 0
    assert manager.stop_polling(timeout=10)


def test_in_progress_is_delivered_again(any_env: Env) -> None:
    flow = any_env.flow("inprogress")
    seen: List[Task] = []
    lock = threading.Lock()

    @worker_task(flow.task_name, batch_poll_timeout=500)
    def slow_job(task: Task) -> TaskResult:
        with lock:
            seen.append(task)
            first = len(seen) == 1
        if first:
            return TaskResult.in_progress(callback_after_seconds=1, output={"stage": "started"})
        return TaskResult.complete({"stage": "done", "polls": task.poll_count})

    manager = any_env.manager([slow_job])
    manager.start_polling()
    workflow = any_env.wait(flow.start())
    assert workflow.status is WorkflowStatus.COMPLETED
    assert len(seen) == 2
    assert seen[0].task_id == seen[1].task_id
    (task,) = workflow.tasks
    assert task.task_id == seen[0].task_id
    assert task.status is TaskStatus.COMPLETED
    assert task.poll_count == 2
    assert task.output_data["stage"] == "done"


def test_failed_attempt_is_retried(any_env: Env) -> None:
    flow = any_env.flow("retry", retry_count=1, retry_delay_seconds=0)
    attempts: List[Task] = []

    @worker_task(flow.task_name, batch_poll_timeout=500)
    def flaky(task: Task) -> Dict[str, Any]:
        attempts.append(task)
        if task.retry_count == 0:
            raise RuntimeError("first attempt fails")
        return {"attempt": task.retry_count}

    manager = any_env.manager([flaky])
    manager.start_polling()
    workflow = any_env.wait(flow.start())
    assert workflow.status is WorkflowStatus.COMPLETED
    first, second = workflow.tasks
    assert first.status is TaskStatus.FAILED
    assert first.reason_for_incompletion == "first attempt fails"
    assert second.status is TaskStatus.COMPLETED
    assert second.task_id != first.task_id
    assert second.output_data == {"attempt": 1}
    assert [t.task_id for t in attempts] == [first.task_id, second.task_id]
