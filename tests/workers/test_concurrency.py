"""Concurrency: the bound holds, options change safely under load, stop drains cleanly."""
from __future__ import annotations

import json
import random
import threading
import time
from typing import Any, Dict, List, Set

import pytest
from support.workers import Env, cw_threads, wait_until

from conductor_workers import InvalidOptionError, Task, TaskStatus, WorkflowStatus, worker_task


class InFlight:
    """Counts a worker's executions running at once (and the most seen), under a lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.max = 0
        self.started: Set[str] = set()
        self.finished: Set[str] = set()

    def enter(self, task_id: str) -> None:
        with self.lock:
            self.now += 1
            self.max = max(self.max, self.now)
            self.started.add(task_id)

    def leave(self, task_id: str) -> None:
        with self.lock:
            self.now -= 1
            self.finished.add(task_id)

    def reset_max(self) -> None:
        with self.lock:
            self.max = self.now


def test_concurrency_bound_and_polls_never_exceed_free_slots(proxied_env: Env) -> None:
    limit = 3
    flow = proxied_env.flow("bound")
    ids = flow.start_many(24)  # a busy queue before the worker starts
    gauge = InFlight()

    @worker_task(flow.task_name, concurrency=limit)
    def busy(task: Task) -> Dict[str, Any]:
        gauge.enter(task.task_id)
        time.sleep(0.1)
        gauge.leave(task.task_id)
        return {}

    manager = proxied_env.manager([busy])
    manager.start_polling()
    workflows = proxied_env.wait_all(ids)
    assert manager.stop_polling(timeout=10)
    assert all(wf.status is WorkflowStatus.COMPLETED for wf in workflows)
    assert gauge.max == limit  # the bound is reached with a busy queue, and never passed

    # Replay the conversation at the proxy: a poll for `count` tasks may only ask for the slots that
    # are free, i.e. count + tasks handed out and not yet reported <= limit.
    assert proxied_env.proxy is not None
    held = 0
    polls = 0
    for kind, seen, status, body in proxied_env.proxy.events:
        if kind == "request":
            if seen.path.startswith("/api/tasks/poll/batch/"):
                polls += 1
                count = int(seen.query["count"][0])
                assert 1 <= count and count + held <= limit, f"polled for {count} with {held} held"
            elif seen.method == "POST" and seen.path in ("/api/tasks", "/api/tasks/update-v2"):
                held -= 1
        elif status == 200 and body and seen.path.startswith("/api/tasks/poll/batch/"):
            held += len(json.loads(body))
        elif status == 200 and body and seen.path == "/api/tasks/update-v2":
            held += 1
    assert polls >= 1
    assert held == 0


def test_runtime_option_changes_from_many_threads(env: Env) -> None:
    flow = env.flow("chaos")
    gauge = InFlight()

    @worker_task(flow.task_name, concurrency=2, poll_interval=10)
    def quick(task: Task) -> Dict[str, Any]:
        gauge.enter(task.task_id)
        time.sleep(random.uniform(0.002, 0.008))
        gauge.leave(task.task_id)
        return {"i": task.input_data.get("i")}

    manager = env.manager([quick])
    manager.start_polling()
    ids: List[str] = []
    starter = threading.Thread(target=lambda: ids.extend(flow.start_many(300)), name="test-starter")
    starter.start()

    stop = threading.Event()
    errors: List[BaseException] = []
    updates = [0] * 8

    def chaos(index: int) -> None:
        rng = random.Random(index)
        try:
            while not stop.is_set():
                changes: Dict[str, Any] = {
                    "concurrency": rng.randint(1, 6),
                    "poll_interval": rng.randint(0, 50),
                    "paused": False,
                }
                if rng.random() < 0.5:
                    manager.update_polling_options(**changes)
                else:
                    manager.update_polling_option_for_worker(flow.task_name, **changes)
                updates[index] += 1
                time.sleep(rng.uniform(0, 0.01))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=chaos, args=(i,), name=f"test-chaos-{i}") for i in range(8)]
    for thread in threads:
        thread.start()
    # change options while the tasks flow: until half of them ran (or the starter is done)
    wait_until(lambda: len(gauge.finished) >= 150 or not starter.is_alive(), timeout=60, message="150 tasks")
    stop.set()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads), "an option update hung"
    assert not errors, errors
    assert all(updates), updates
    assert gauge.max <= 6

    final = 3
    manager.update_polling_option_for_worker(flow.task_name, concurrency=final)
    runner = manager.runners[flow.task_name]
    # work taken under a higher limit drains; from then on the final limit holds
    wait_until(lambda: runner.in_flight <= final, timeout=30, interval=0.001, message="drain to the final limit")
    gauge.reset_max()

    starter.join(60)
    workflows = env.wait_all(ids, timeout=60)
    assert len(workflows) == 300
    assert all(wf.status is WorkflowStatus.COMPLETED for wf in workflows)
    assert gauge.max <= final, f"{gauge.max} in flight after concurrency was set to {final}"
    assert manager.stop_polling(timeout=10)

    # invalid updates raise and change nothing
    before = manager.options_for(flow.task_name)
    with pytest.raises(InvalidOptionError):
        manager.update_polling_options(concurrency=0)
    with pytest.raises(InvalidOptionError):
        manager.update_polling_options(concurrency=4, no_such_option=1)  # the valid part is not applied
    with pytest.raises(InvalidOptionError):
        manager.update_polling_option_for_worker("no_such_worker", concurrency=2)
    with pytest.raises(InvalidOptionError):
        manager.update_polling_option_for_worker(flow.task_name, poll_interval=-1)
    with pytest.raises(InvalidOptionError):
        manager.update_polling_option_for_worker(flow.task_name, concurrency="4")
    assert manager.options_for(flow.task_name) == before
    assert before.concurrency == final


def test_stop_under_load_reports_every_polled_task(env: Env) -> None:
    flow = env.flow("stopload")
    ids = flow.start_many(24)
    gauge = InFlight()

    @worker_task(flow.task_name, concurrency=8)
    def slow(task: Task) -> Dict[str, Any]:
        gauge.enter(task.task_id)
        time.sleep(random.uniform(0.2, 0.5))
        gauge.leave(task.task_id)
        return {"done": True}

    manager = env.manager([slow])
    manager.start_polling()
    manager.start_polling()  # harmless
    assert len([t for t in cw_threads() if t.name == f"cw-poll-{flow.task_name}"]) == 1
    assert manager.is_polling
    wait_until(lambda: gauge.now >= 4, message="tasks in flight")

    results: List[bool] = []
    other = threading.Thread(target=lambda: results.append(manager.stop_polling(timeout=10)), name="test-stopper")
    started = time.monotonic()
    other.start()  # stop from another thread, and from this one at the same time
    stopped = manager.stop_polling(timeout=10)
    elapsed = time.monotonic() - started
    other.join(15)
    assert stopped is True and results == [True]
    assert elapsed < 10
    assert not manager.is_polling
    assert manager.stop_polling(timeout=1) is True  # idempotent
    assert gauge.now == 0
    assert gauge.started and gauge.started == gauge.finished

    # every polled task was reported: it is COMPLETED; no task is held IN_PROGRESS by nobody
    tasks = [task for wf_id in ids for task in env.executor.get_workflow(wf_id).tasks]
    problems = [
        f"{t.task_id}: {t.status}" for t in tasks if t.task_id in gauge.started and t.status is not TaskStatus.COMPLETED
    ]
    assert not problems, problems
    unrun = [t for t in tasks if t.task_id not in gauge.started]
    assert all(t.status in (TaskStatus.SCHEDULED, TaskStatus.IN_PROGRESS) for t in unrun)
    assert flow.queue_size() == len(unrun)  # not held: all back in the queue for the next worker
    wait_until(lambda: not cw_threads(), timeout=10, message=f"cw-* threads to end: {cw_threads()}")


def test_manager_is_a_context_manager(env: Env) -> None:
    flow = env.flow("ctx")

    @worker_task(flow.task_name)
    def echo(i: int) -> Dict[str, Any]:
        return {"echo": i}

    manager = env.manager([echo])
    with manager as running:
        assert running is manager and manager.is_polling
        workflow = env.wait(flow.start({"i": 7}))
        assert workflow.output == {"out": {"echo": 7}}
    assert not manager.is_polling
    wait_until(lambda: not cw_threads(), timeout=10, message="cw-* threads to end")
