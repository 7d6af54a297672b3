"""Per-task time limits: a task over its ``time_limit`` is reported FAILED at once, its thread is
told at its next safe point (``check_time_limit``, ``add_log``), its slot stays taken until the thread
returns, and a late result is never reported over the failure."""
from __future__ import annotations

import threading
import time
from typing import Any, Dict, List

from support.workers import Env, wait_until

from conductor_workers import (
    TaskStatus,
    TimeLimitExceeded,
    WorkflowStatus,
    check_time_limit,
    time_remaining,
    worker_task,
)

LIMIT = 1.0


def _only_task(env: Env, workflow_id: str) -> Any:
    workflow = env.client.workflows.get(workflow_id, include_tasks=True)
    assert len(workflow.tasks) == 1, [t.status for t in workflow.tasks]
    return workflow.tasks[0]


def _server_run_time(task: Any) -> float:
    """Seconds between the server handing the task out and accepting its result (server clock)."""
    return (task.end_time - task.start_time) / 1000.0


def test_a_busy_loop_with_a_safe_point_is_interrupted_and_failed_within_the_limit(any_env: Env) -> None:
    flow = any_env.flow("tl_busy")
    ended = threading.Event()
    spins: List[int] = []

    @worker_task(flow.task_name, time_limit=LIMIT)
    def spin(i: int = 0) -> Dict[str, Any]:
        count = 0
        try:
            while True:
                count += 1
                check_time_limit()  # the safe point where TimeLimitExceeded is raised
        finally:
            spins.append(count)
            ended.set()

    any_env.manager([spin]).start_polling()
    workflow = any_env.wait(flow.start({"i": 1}))
    assert workflow.status is WorkflowStatus.FAILED
    task = _only_task(any_env, workflow.workflow_id)
    assert task.status is TaskStatus.FAILED
    assert "time_limit of 1 s" in task.reason_for_incompletion
    assert _server_run_time(task) <= LIMIT + 1.0, _server_run_time(task)
    assert ended.wait(5), "the busy loop was not interrupted"
    assert spins and spins[0] > 0


def test_a_sleeping_worker_is_reported_on_time_keeps_its_slot_and_its_late_result_is_dropped(any_env: Env) -> None:
    flow = any_env.flow("tl_sleep")
    release = threading.Event()
    returned = threading.Event()

    @worker_task(flow.task_name, time_limit=LIMIT)
    def sleeper(i: int = 0) -> Dict[str, Any]:
        try:
            release.wait(30)  # blocked in C: the interruption waits until this returns
            return {"late": True}
        finally:
            returned.set()

    manager = any_env.manager([sleeper])
    manager.start_polling()
    workflow = any_env.wait(flow.start({"i": 1}))
    assert workflow.status is WorkflowStatus.FAILED
    task = _only_task(any_env, workflow.workflow_id)
    assert task.status is TaskStatus.FAILED and "time limit" in task.reason_for_incompletion
    assert _server_run_time(task) <= LIMIT + 1.0, _server_run_time(task)
    status = manager.status()[flow.task_name]
    assert status.in_flight == 1, status  # the thread still runs: its slot is still taken
    assert status.overrunning == (task.task_id,)
    release.set()
    assert returned.wait(5)
    wait_until(lambda: manager.status()[flow.task_name].in_flight == 0, message="slot freed")
    assert manager.status()[flow.task_name].overrunning == ()
    time.sleep(0.3)  # a late report, were there one, would have been sent by now
    task = _only_task(any_env, workflow.workflow_id)
    assert task.status is TaskStatus.FAILED and "late" not in (task.output_data or {})


def test_the_concurrency_bound_holds_while_tasks_overrun(env: Env) -> None:
    flow = env.flow("tl_bound")
    lock = threading.Lock()
    running = [0]
    most = [0]
    executions = [0]
    stop = threading.Event()

    @worker_task(flow.task_name, time_limit=0.3, concurrency=2, poll_interval=20, batch_poll_timeout=100)
    def slow(i: int = 0) -> None:
        with lock:
            running[0] += 1
            executions[0] += 1
            most[0] = max(most[0], running[0])
        try:
            stop.wait(1.0)  # overruns its 0.3 s limit by 0.7 s, blocked where it cannot be interrupted
        finally:
            with lock:
                running[0] -= 1

    manager = env.manager([slow])
    manager.start_polling()
    ids = flow.start_many(6)
    workflows = env.wait_all(ids)
    assert all(w.status is WorkflowStatus.FAILED for w in workflows)
    wait_until(lambda: executions[0] == 6 and running[0] == 0, message="every execution returned")
    assert most[0] <= 2, most[0]
    # the runner frees a slot just after the worker's function returns
    wait_until(lambda: manager.status()[flow.task_name].in_flight == 0, message="every slot freed")


def test_terminal_failure_when_asked_and_retries_otherwise(env: Env) -> None:
    retried = env.flow("tl_retry", retry_count=1)
    terminal = env.flow("tl_terminal", retry_count=1)
    calls: Dict[str, int] = {retried.task_name: 0, terminal.task_name: 0}

    def spinning(name: str) -> Any:
        @worker_task(name, time_limit=0.3, time_limit_terminal=name == terminal.task_name)
        def spin(i: int = 0) -> None:
            calls[name] += 1
            while True:
                check_time_limit()

        return spin

    env.manager([spinning(retried.task_name), spinning(terminal.task_name)]).start_polling()
    a, b = retried.start({"i": 1}), terminal.start({"i": 1})
    first, second = env.wait(a), env.wait(b)
    assert first.status is WorkflowStatus.FAILED and second.status is WorkflowStatus.FAILED
    assert [t.status for t in first.tasks] == [TaskStatus.FAILED, TaskStatus.FAILED]  # the retry ran too
    assert [t.status for t in second.tasks] == [TaskStatus.FAILED_WITH_TERMINAL_ERROR]
    assert calls == {retried.task_name: 2, terminal.task_name: 1}


def test_remaining_time_is_readable_and_the_limit_changes_at_runtime(env: Env) -> None:
    flow = env.flow("tl_remaining")

    @worker_task(flow.task_name)
    def report(i: int = 0) -> Dict[str, Any]:
        return {"remaining": time_remaining()}

    manager = env.manager([report])
    manager.start_polling()
    assert env.wait(flow.start({"i": 1})).output["out"]["remaining"] is None
    manager.update_polling_option_for_worker(flow.task_name, time_limit=30)
    remaining = env.wait(flow.start({"i": 2})).output["out"]["remaining"]
    assert 25 < remaining <= 30
    assert time_remaining() is None  # outside execute


def test_a_worker_that_swallows_the_interruption_still_has_its_late_result_dropped(env: Env) -> None:
    flow = env.flow("tl_swallow")
    done = threading.Event()

    @worker_task(flow.task_name, time_limit=0.3)
    def stubborn(i: int = 0) -> Dict[str, Any]:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                while time.monotonic() < deadline:
                    check_time_limit()
            except TimeLimitExceeded:  # a worker should not do this; the result is dropped anyway
                continue
        done.set()
        return {"late": True}

    manager = env.manager([stubborn])
    manager.start_polling()
    workflow = env.wait(flow.start({"i": 1}))
    assert done.wait(5)
    wait_until(lambda: manager.status()[flow.task_name].in_flight == 0, message="slot freed")
    time.sleep(0.3)
    task = _only_task(env, workflow.workflow_id)
    assert task.status is TaskStatus.FAILED and "late" not in (task.output_data or {})
    assert manager.status()[flow.task_name].executions_failed == 1
