"""Options: pause/resume, the environment and its precedence, the poll gate."""
from __future__ import annotations

import threading
import time
from typing import Any, Dict, List

from support.workers import Env, unique, wait_until

from conductor_workers import PollingOptions, Task, TaskManager, Worker, WorkflowStatus, worker_task


def test_pause_takes_no_new_tasks_and_resume_completes_them(env: Env) -> None:
    flow = env.flow("pause")
    gate = threading.Event()
    ran: List[str] = []

    @worker_task(flow.task_name, concurrency=2, batch_poll_timeout=300)
    def blocked(task: Task) -> Dict[str, Any]:
        ran.append(task.task_id)
        gate.wait(30)
        return {"ok": True}

    manager = env.manager([blocked])
    manager.start_polling()
    first = flow.start_many(2)
    wait_until(lambda: len(ran) == 2, message="two tasks running")

    manager.update_polling_option_for_worker(flow.task_name, paused=True)
    assert manager.status()[flow.task_name].paused is True
    more = flow.start_many(4)
    gate.set()  # the in-flight tasks finish and are reported while paused
    assert all(wf.status is WorkflowStatus.COMPLETED for wf in env.wait_all(first))
    wait_until(lambda: flow.queue_size() == 4, message="4 tasks queued")
    time.sleep(1.0)  # long enough for a poll (300 ms long-poll, 100 ms interval) to have happened
    assert len(ran) == 2, "a paused worker took a task"
    assert flow.queue_size() == 4
    assert all(env.executor.get_workflow(wf_id).status is WorkflowStatus.RUNNING for wf_id in more)

    manager.update_polling_option_for_worker(flow.task_name, paused=False)
    assert all(wf.status is WorkflowStatus.COMPLETED for wf in env.wait_all(more))
    assert len(ran) == 6


def test_options_from_environment_and_precedence(env: Env) -> None:
    a, b, c = unique("envA"), unique("envB"), unique("envC")

    class Own(Worker):
        concurrency = 4  # the worker's own setting beats the manager's

        def execute(self, task: Task) -> None:
            return None

    workers = [Own(a), Own(b, poll_interval=250), Own(c)]
    environ = {
        # worker-specific beats `all`
        "conductor_worker_all_concurrency": "3",
        f"conductor_worker_{a}_concurrency": "5",
        # the official SDK's spellings
        f"conductor.worker.{b}.thread_count": "6",
        f"CONDUCTOR_WORKER_{a.upper()}_POLLING_INTERVAL": "150",
        "CONDUCTOR_WORKER_ALL_POLL_TIMEOUT": "700",
        f"conductor_worker_{c}_lease_extend_enabled": "true",
        f"conductor_worker_{c}_domain": "blue",
    }
    manager = TaskManager(
        env.client, workers, PollingOptions(poll_interval=300, domain="green", worker_id="mgr"), environ=environ
    )
    opts_a, opts_b, opts_c = (manager.options_for(name) for name in (a, b, c))

    assert opts_a.concurrency == 5  # env (worker-specific) > env (all) > worker > manager
    assert opts_b.concurrency == 6  # dotted official spelling of concurrency
    assert opts_c.concurrency == 3  # env `all` beats the worker's own 4
    assert opts_a.poll_interval == 150  # env > manager (300)
    assert opts_b.poll_interval == 250  # worker > manager
    assert opts_c.poll_interval == 300  # manager > default
    assert {o.batch_poll_timeout for o in (opts_a, opts_b, opts_c)} == {700}
    assert opts_c.lease_extend is True and opts_a.lease_extend is False
    assert opts_c.domain == "blue" and opts_a.domain == "green"
    assert opts_a.worker_id == "mgr"

    # runtime updates beat everything, per worker or for all
    manager.update_polling_option_for_worker(a, concurrency=2, poll_interval=20)
    assert manager.options_for(a).concurrency == 2 and manager.options_for(a).poll_interval == 20
    manager.update_polling_options(domain="red")
    assert {manager.options_for(n).domain for n in (a, b, c)} == {"red"}
    assert manager.options_for(c).lease_extend is True  # untouched fields keep their values
    assert manager.status()[a].options.concurrency == 2


def test_worker_options_without_environment_use_defaults(env: Env) -> None:
    name = unique("defaults")

    @worker_task(name)
    def noop() -> None:
        return None

    manager = TaskManager(env.client, [noop], environ={})
    assert manager.options_for(name) == PollingOptions()


def test_poll_gate_stops_and_resumes_polling(proxied_env: Env) -> None:
    flow = proxied_env.flow("gate")
    allow = threading.Event()
    calls: List[bool] = []
    lock = threading.Lock()

    def gate(task_type: str) -> bool:
        assert task_type == flow.task_name
        answer = allow.is_set()
        with lock:
            calls.append(answer)
        return answer

    @worker_task(flow.task_name, batch_poll_timeout=300, poll_interval=50)
    def work(i: int) -> Dict[str, Any]:
        return {"i": i}

    proxy = proxied_env.proxy
    assert proxy is not None

    def polls() -> int:
        return sum(1 for r in proxy.requests if r.path.startswith("/api/tasks/poll"))

    manager = proxied_env.manager([work], poll_gate=gate)
    manager.start_polling()
    first = flow.start({"i": 1})
    wait_until(lambda: len(calls) >= 3, message="the gate to be asked")
    time.sleep(0.5)
    assert polls() == 0, "polled although the gate said no"
    assert proxied_env.executor.get_workflow(first).status is WorkflowStatus.RUNNING
    assert flow.queue_size() == 1

    allow.set()
    assert proxied_env.wait(first).status is WorkflowStatus.COMPLETED

    allow.clear()
    with lock:
        calls.clear()
    wait_until(lambda: calls.count(False) >= 1, message="the gate to say no")  # no poll in flight now
    before = polls()
    second = flow.start({"i": 2})
    time.sleep(0.7)
    assert polls() == before
    assert proxied_env.executor.get_workflow(second).status is WorkflowStatus.RUNNING
    allow.set()
    assert proxied_env.wait(second).status is WorkflowStatus.COMPLETED
