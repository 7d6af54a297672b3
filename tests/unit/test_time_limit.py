"""The time-limit middleware and its watchdog, without a server: whatever the moment the limit fires
relative to the task's end, the task is settled exactly once, nothing escapes the worker's thread,
and the watchdog survives every deadline it is given."""
from __future__ import annotations

import threading
import time
from typing import Any, Dict, List

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conductor_workers.middleware import chain
from conductor_workers.models import Task, TaskResult
from conductor_workers.time_limit import TimeLimitMiddleware
from conductor_workers.worker import TaskContext, run_task, worker_task


def _task(n: int = 0) -> Task:
    return Task(task_id=f"t-{n}", workflow_instance_id="w-1", task_type="limited")


def _run_in_thread(limit: float, duration: float) -> Dict[str, Any]:
    """Run a busy loop of ``duration`` s under ``limit`` s on a thread of its own, as a pool thread does."""
    reports: List[TaskResult] = []

    @worker_task("limited")
    def busy() -> Dict[str, Any]:
        end = time.monotonic() + duration
        while time.monotonic() < end:
            pass
        return {"done": True}

    task = _task()
    context = TaskContext(task, limit, reports.append)
    outcome: Dict[str, Any] = {"reports": reports, "context": context}

    def pool_thread() -> None:
        try:
            outcome["result"], outcome["error"] = run_task(
                busy, task, handler=chain(busy, [TimeLimitMiddleware()]), context=context
            )
            time.sleep(0.002)  # an interruption left pending would land here, in "our" code
        except BaseException as exc:  # noqa: BLE001 - what the test looks for
            outcome["escaped"] = exc

    thread = threading.Thread(target=pool_thread)
    thread.start()
    thread.join(10)
    outcome["alive"] = thread.is_alive()
    return outcome


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(limit_ms=st.integers(min_value=3, max_value=25), offset_ms=st.integers(min_value=-3, max_value=3))
def test_whatever_the_moment_the_limit_fires_the_task_is_settled_exactly_once(limit_ms: int, offset_ms: int) -> None:
    outcome = _run_in_thread(limit_ms / 1000.0, max(0, limit_ms + offset_ms) / 1000.0)
    assert not outcome["alive"]
    assert "escaped" not in outcome, outcome.get("escaped")
    reported_early = bool(outcome["reports"])
    context = outcome["context"]
    settled_normally = not context.expired  # run_task settled it with what execute returned
    assert reported_early != settled_normally  # one or the other, never both, never neither
    assert not context.expire()  # settled already, either way: a late limit reports nothing more
    assert len(outcome["reports"]) == int(reported_early)
    if reported_early:
        (early,) = outcome["reports"]
        assert early.status.value == "FAILED" and "time limit exceeded" in early.reason_for_incompletion
    else:
        assert outcome["error"] is None and outcome["result"].output_data == {"done": True}


def test_the_watchdog_survives_a_deadline_too_far_to_wait_for() -> None:
    far = [_run_in_thread_far(limit) for limit in (1e300, float("inf"))]
    outcome = _run_in_thread(0.05, 0.3)  # a short limit still fires afterwards
    assert len(outcome["reports"]) == 1
    for release in far:
        release.set()


def _run_in_thread_far(limit: float) -> threading.Event:
    """Start a task under a limit no clock reaches; returns the event that lets it finish."""
    release = threading.Event()

    @worker_task("far")
    def waits() -> None:
        release.wait(10)

    task = _task(1)
    context = TaskContext(task, limit, lambda result: None)
    threading.Thread(
        target=run_task, args=(waits, task), kwargs={"handler": chain(waits, [TimeLimitMiddleware()]), "context": context},
        daemon=True,
    ).start()
    time.sleep(0.05)
    return release
