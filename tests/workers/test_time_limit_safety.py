"""A time limit can never wedge a worker process (issue 21, cases 1-4 and 9).

The interruption is delivered only at safe points in the worker's own code path (``add_log``,
``check_time_limit``), never as an asynchronous exception: a task over its limit is reported FAILED on
time, its slot stays held until its thread returns, and a process whose slots all stay held that way
says so through ``status()`` and ``/health``.
"""
from __future__ import annotations

import io
import logging
import threading
import time
from typing import Any, Dict, List

from support.workers import Env, wait_until

from conductor_workers import TaskStatus, TimeLimitExceeded, check_time_limit, worker_task
from conductor_workers.health import health_report

LIMIT_REASON = "time limit exceeded"


def _task_outcomes(env: Env, workflow_ids: List[str]) -> List[Any]:
    workflows = env.wait_all(workflow_ids, timeout=90)
    tasks = []
    for workflow in workflows:
        full = env.client.workflows.get(workflow.workflow_id, include_tasks=True)
        assert len(full.tasks) == 1, [t.status for t in full.tasks]
        tasks.append(full.tasks[0])
    return tasks


def _completed_or_failed_on_time(task: Any) -> bool:
    if task.status is TaskStatus.COMPLETED:
        return True
    return task.status is TaskStatus.FAILED and LIMIT_REASON in (task.reason_for_incompletion or "")


def test_limits_firing_as_tasks_finish_lose_no_report_and_the_drain_completes(env: Env) -> None:
    """Case 1: 200 tasks that busy-loop 0.97-1.03 x their 0.1 s limit: each is reported once, COMPLETED
    or FAILED over its limit, no slot sticks and stop_polling() drains."""
    flow = env.flow("tls_edge", response_timeout_seconds=20)

    @worker_task(flow.task_name, time_limit=0.1, concurrency=4, poll_interval=10, batch_poll_timeout=100)
    def edge(i: int = 0) -> Dict[str, Any]:
        end = time.monotonic() + 0.1 * (0.97 + 0.06 * (i % 200) / 199)
        while time.monotonic() < end:
            pass
        return {"i": i}

    manager = env.manager([edge])
    manager.start_polling()
    tasks = _task_outcomes(env, flow.start_many(200))
    assert all(_completed_or_failed_on_time(t) for t in tasks), sorted(
        {(t.status.value, (t.reason_for_incompletion or "")[:60]) for t in tasks}
    )
    wait_until(lambda: manager.status()[flow.task_name].in_flight == 0, timeout=10, message="every slot freed")
    assert manager.stop_polling(10) is True


def test_a_worker_interrupted_inside_logging_cannot_wedge_the_process(env: Env) -> None:
    """Case 2: a worker that logs in a loop under time_limit=0.05; every task is reported and the
    logging handler's lock is free afterwards."""
    flow = env.flow("tls_log", response_timeout_seconds=20)
    chatty = logging.getLogger("cwt.chatty_worker")
    handler = logging.StreamHandler(io.StringIO())
    chatty.addHandler(handler)
    chatty.setLevel(logging.INFO)
    chatty.propagate = False

    @worker_task(flow.task_name, time_limit=0.05, concurrency=4, poll_interval=10, batch_poll_timeout=100)
    def talk(i: int = 0) -> None:
        end = time.monotonic() + 0.08
        while time.monotonic() < end:
            chatty.info("working on %d", i)

    try:
        manager = env.manager([talk])
        manager.start_polling()
        tasks = _task_outcomes(env, flow.start_many(200))
        assert all(_completed_or_failed_on_time(t) for t in tasks)
        assert handler.lock is not None and handler.lock.acquire(timeout=5), "the handler's lock leaked"
        handler.lock.release()
        assert manager.stop_polling(10) is True
    finally:
        chatty.removeHandler(handler)


def test_a_worker_interrupted_inside_a_condition_cannot_wedge_the_process(env: Env) -> None:
    flow = env.flow("tls_cond", response_timeout_seconds=20)
    shared = threading.Condition()

    @worker_task(flow.task_name, time_limit=0.05, concurrency=4, poll_interval=10, batch_poll_timeout=100)
    def waits(i: int = 0) -> None:
        end = time.monotonic() + 0.08
        while time.monotonic() < end:
            with shared:
                shared.wait(0.001)

    manager = env.manager([waits])
    manager.start_polling()
    tasks = _task_outcomes(env, flow.start_many(200))
    assert all(_completed_or_failed_on_time(t) for t in tasks)
    assert shared.acquire(timeout=5), "the condition's lock leaked"
    shared.release()
    assert manager.stop_polling(10) is True


def test_safe_points_interrupt_a_worker_once_and_its_late_result_is_dropped(env: Env) -> None:
    flow = env.flow("tls_safe")
    seen: List[str] = []
    done = threading.Event()

    @worker_task(flow.task_name, time_limit=0.2)
    def careful(i: int = 0) -> Dict[str, Any]:
        try:
            while True:
                check_time_limit()  # a safe point: raises once the limit has passed
        except TimeLimitExceeded as exc:
            seen.append(str(exc))
        check_time_limit()  # delivered once: the worker may clean up in peace
        done.set()
        return {"late": True}

    manager = env.manager([careful])
    manager.start_polling()
    (task,) = _task_outcomes(env, [flow.start({"i": 1})])
    assert task.status is TaskStatus.FAILED and LIMIT_REASON in task.reason_for_incompletion
    assert done.wait(5) and len(seen) == 1 and "0.2 s" in seen[0]
    wait_until(lambda: manager.status()[flow.task_name].in_flight == 0, message="slot freed")
    assert "late" not in (env.client.tasks.get_task(task.task_id).output_data or {})


def test_health_turns_unhealthy_when_every_slot_is_held_by_overrunning_tasks(env: Env) -> None:
    """Case 3: a worker that swallows BaseException and never returns holds both its slots past their
    limit: status() and /health say the worker is wedged, and healthy again once they return."""
    flow = env.flow("tls_wedge")
    release = threading.Event()

    @worker_task(flow.task_name, time_limit=0.2, concurrency=2, poll_interval=10, batch_poll_timeout=100)
    def stuck(i: int = 0) -> None:
        while not release.is_set():
            try:
                release.wait(0.01)
                check_time_limit()
            except BaseException:  # noqa: BLE001 - the hostile worker this test is about
                continue

    manager = env.manager([stuck])
    manager.start_polling()
    try:
        tasks = _task_outcomes(env, flow.start_many(2))
        assert all(t.status is TaskStatus.FAILED for t in tasks)
        status = manager.status()[flow.task_name]
        assert status.in_flight == 2 and len(status.overrunning) == 2 and status.stuck_since is not None
        report = wait_until(
            lambda: (lambda r: r if not r["healthy"] else None)(health_report(manager, max_stuck=0.5)),
            timeout=10, message="unhealthy",
        )
        worker = report["workers"][flow.task_name]
        assert worker["wedged"] is True
        assert any("overrunning" in problem for problem in worker["problems"]), worker["problems"]
    finally:
        release.set()
    wait_until(lambda: health_report(manager, max_stuck=0.5)["healthy"], timeout=10, message="healthy again")
    assert manager.status()[flow.task_name].stuck_since is None


def test_stop_waits_for_a_time_limit_report_still_being_sent(proxied_env: Env) -> None:
    """Case 4: the worker's thread has returned but its time-limit failure is not reported yet: the
    drain is not over, so stop_polling() must not say it is."""
    env = proxied_env
    assert env.proxy is not None
    flow = env.flow("tls_drain")
    returned = threading.Event()
    failures: List[str] = []

    @worker_task(flow.task_name, time_limit=0.2, poll_interval=10, batch_poll_timeout=100)
    def overrun(i: int = 0) -> None:
        threading.Event().wait(0.5)
        returned.set()

    env.proxy.reject(
        "/api/tasks", 503, '{"message": "busy"}', method="POST",
        predicate=lambda method, path, body: b"time limit" in body,
    )
    manager = env.manager([overrun], on_update_failure=lambda task, result, error: failures.append(task.task_id))
    manager.start_polling()
    flow.start({"i": 1})
    assert returned.wait(30)
    wait_until(lambda: manager.status()[flow.task_name].in_flight == 0, timeout=10, message="slot freed")
    assert manager.stop_polling(timeout=1.5) is False, "a report still being retried is not a finished drain"
    wait_until(lambda: failures, timeout=10, message="the unsent report handed to on_update_failure")


def test_stop_does_not_wait_out_an_idle_long_poll(env: Env) -> None:
    """Case 9: an idle worker in a 5 s long poll stops at once; the poll ends by itself later."""
    flow = env.flow("tls_idle")

    @worker_task(flow.task_name, batch_poll_timeout=5000)
    def idle(i: int = 0) -> None:
        return None

    manager = env.manager([idle])
    manager.start_polling()
    threading.Event().wait(0.5)  # the first long poll is under way
    started = time.monotonic()
    assert manager.stop_polling(30) is True
    assert time.monotonic() - started < 2.5, "stop_polling waited for the idle long poll"
    # a task that arrives for that last poll is handed back, not lost or held
    workflow_id = flow.start({"i": 1})
    wait_until(lambda: not [t for t in threading.enumerate() if t.name == f"cw-poll-{flow.task_name}"],
               timeout=10, message="the poll thread ended")
    task = env.client.workflows.get(workflow_id, include_tasks=True).tasks[0]
    assert task.status in (TaskStatus.SCHEDULED, TaskStatus.IN_PROGRESS)
    assert flow.queue_size() == 1
