"""Middleware: the order the user sets, wrapping (input, result, refusing), raising middleware that
never costs a slot or a result, and the observing hooks (both servers)."""
from __future__ import annotations

import threading
from typing import Any, Dict, List

import attrs
import pytest
from support.workers import Env, wait_until

from conductor_workers import (
    InvalidOptionError,
    Middleware,
    NonRetryableError,
    TaskResult,
    TaskStatus,
    WorkflowStatus,
    add_log,
    current_task,
    worker_task,
)


class Recording(Middleware):
    def __init__(self, name: str, journal: List[str]) -> None:
        self.name = name
        self.journal = journal

    def execute(self, task: Any, call_next: Any) -> Any:
        self.journal.append(f"{self.name}:before")
        result = call_next(task)
        self.journal.append(f"{self.name}:after:{result.status.value}")
        return result


class ChangeInputAndOutput(Middleware):
    def execute(self, task: Any, call_next: Any) -> Any:
        task = attrs.evolve(task, input_data={**task.input_data, "i": task.input_data["i"] * 10})
        result = call_next(task)
        add_log("wrapped by ChangeInputAndOutput")
        return attrs.evolve(result, output_data={**result.output_data, "wrapped": True})


class Raising(Middleware):
    def __init__(self, where: str) -> None:
        self.where = where

    def execute(self, task: Any, call_next: Any) -> Any:
        if self.where == "before" and task.input_data.get("i") == 1:
            raise RuntimeError("middleware broke before the worker")
        result = call_next(task)
        if self.where == "after" and task.input_data.get("i") == 1:
            raise NonRetryableError("middleware refused the result")
        return result


def test_middleware_runs_in_the_order_given_and_wraps_the_worker(any_env: Env) -> None:
    flow = any_env.flow("mw_order")
    journal: List[str] = []
    seen: List[Any] = []

    @worker_task(flow.task_name)
    def double(i: int) -> Dict[str, Any]:
        journal.append("worker")
        seen.append(current_task())
        return {"double": i * 2}

    middleware = [Recording("outer", journal), Recording("inner", journal), ChangeInputAndOutput()]
    any_env.manager([double], middleware=middleware).start_polling()
    workflow = any_env.wait(flow.start({"i": 2}))
    assert workflow.status is WorkflowStatus.COMPLETED
    assert workflow.output["out"] == {"double": 40, "wrapped": True}  # input 2 -> 20, doubled
    assert journal == ["outer:before", "inner:before", "worker", "inner:after:COMPLETED", "outer:after:COMPLETED"]
    assert seen[0] is not None and seen[0].task_id == workflow.tasks[0].task_id
    if not any_env.is_real or any_env.logs(workflow.tasks[0].task_id):  # a 3.21 server drops logs
        assert "wrapped by ChangeInputAndOutput" in any_env.logs(workflow.tasks[0].task_id)


@pytest.mark.parametrize("where", ["before", "after"])
def test_a_raising_middleware_fails_the_task_with_a_reason_and_loses_no_slot(any_env: Env, where: str) -> None:
    flow = any_env.flow(f"mw_raise_{where}")

    @worker_task(flow.task_name, concurrency=1)
    def echo(i: int) -> Dict[str, Any]:
        return {"i": i}

    manager = any_env.manager([echo], middleware=[Raising(where)])
    manager.start_polling()
    broken = any_env.wait(flow.start({"i": 1}))
    assert broken.status is WorkflowStatus.FAILED
    task = broken.tasks[0]
    if where == "before":
        assert task.status is TaskStatus.FAILED
        assert "middleware broke before the worker" in task.reason_for_incompletion
    else:
        assert task.status is TaskStatus.FAILED_WITH_TERMINAL_ERROR
        assert "middleware refused the result" in task.reason_for_incompletion
    # One slot: the next tasks still run, so the raising middleware did not keep it.
    fine = any_env.wait_all(flow.start_many(3, lambda n: {"i": n + 2}))
    assert [w.status for w in fine] == [WorkflowStatus.COMPLETED] * 3
    wait_until(lambda: manager.status()[flow.task_name].in_flight == 0, message="slot freed")


def test_a_middleware_may_answer_without_calling_the_worker(env: Env) -> None:
    flow = env.flow("mw_short_circuit")
    ran = []

    class Cache(Middleware):
        def execute(self, task: Any, call_next: Any) -> Any:
            if task.input_data.get("i") == 7:
                return {"cached": True}  # a plain dict is a COMPLETED result, as from a worker
            return call_next(task)

    @worker_task(flow.task_name)
    def work(i: int) -> Dict[str, Any]:
        ran.append(i)
        return {"cached": False}

    env.manager([work], middleware=[Cache()]).start_polling()
    assert env.wait(flow.start({"i": 7})).output["out"] == {"cached": True}
    assert env.wait(flow.start({"i": 8})).output["out"] == {"cached": False}
    assert ran == [8]


def test_observing_hooks_see_polls_executions_and_updates(env: Env) -> None:
    flow = env.flow("mw_hooks")
    events: List[str] = []
    lock = threading.Lock()

    class Observer(Middleware):  # no execute(): observation only, no layer around executions
        def polled(self, task_type: str, count: int, duration: float) -> None:
            with lock:
                events.append("polled")

        def task_finished(self, task: Any, result: TaskResult, duration: float) -> None:
            with lock:
                events.append(f"finished:{result.status.value}")

        def task_updated(self, task: Any, result: TaskResult, duration: float) -> None:
            with lock:
                events.append(f"updated:{result.status.value}")

    class Exploding(Middleware):
        def task_finished(self, task: Any, result: TaskResult, duration: float) -> None:
            raise RuntimeError("a hook that raises is logged and ignored")

    @worker_task(flow.task_name)
    def ok(i: int) -> None:
        return None

    env.manager([ok], middleware=[Exploding(), Observer()]).start_polling()
    assert env.wait(flow.start({"i": 1})).status is WorkflowStatus.COMPLETED
    wait_until(lambda: "updated:COMPLETED" in events, message="task_updated hook")
    assert "polled" in events
    assert events.index("finished:COMPLETED") < events.index("updated:COMPLETED")


def test_middleware_must_be_middleware(env: Env) -> None:
    flow = env.flow("mw_type")

    @worker_task(flow.task_name)
    def ok() -> None:
        return None

    with pytest.raises(InvalidOptionError, match="not a Middleware"):
        env.manager([ok], middleware=[object()])
