"""How a runner follows an admission gate: never more tasks than the gate's limit, no polls while the
gate holds polling, a limit that rises and falls at runtime, and the gate's state in status(), the
health report and the metrics hook. The gate here is scripted; the real one has its own tests."""
from __future__ import annotations

import threading
from typing import Any, Dict, List

from support.workers import Env, wait_until

from conductor_workers import Middleware, WorkflowStatus, worker_task
from conductor_workers.health import worker_health


class ScriptedGate:
    """The runner's side of the AdmissionGate interface, with a limit the test sets."""

    def __init__(self, limit: int) -> None:
        self.lock = threading.Lock()
        self.limit_now = limit
        self.polling = True
        self.polls: List[tuple] = []

    def limit(self, task_type: str, maximum: int, in_flight: int) -> int:
        with self.lock:
            return min(self.limit_now, maximum)

    def may_poll(self, task_type: str) -> bool:
        with self.lock:
            return self.polling

    def poll_returned(self, task_type: str, requested: int, received: int) -> None:
        with self.lock:
            self.polls.append((requested, received))

    def state(self, task_type: str) -> Dict[str, Any]:
        with self.lock:
            reason = "scripted" if self.polling else "held: scripted"
            return {"limit": self.limit_now if self.polling else 0, "reason": reason, "signal": "test"}

    def wake_interval(self) -> float:
        return 0.05


def test_the_runner_holds_no_more_tasks_than_the_gate_allows(env: Env) -> None:
    flow = env.flow("adm_limit")
    gate = ScriptedGate(limit=2)
    lock = threading.Lock()
    running = [0]
    most = [0]
    release = threading.Event()

    @worker_task(flow.task_name, concurrency=8, poll_interval=20, batch_poll_timeout=100)
    def hold(i: int) -> Dict[str, Any]:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            release.wait(0.2)
            return {"i": i}
        finally:
            with lock:
                running[0] -= 1

    changes: List[tuple] = []

    class Watch(Middleware):
        def admission_changed(self, task_type: str, limit: int, reason: str) -> None:
            changes.append((limit, reason))

    manager = env.manager([hold], admission=gate, middleware=[Watch()])
    manager.start_polling()
    ids = flow.start_many(12)
    wait_until(lambda: running[0] == 2, message="two tasks running")
    assert manager.status()[flow.task_name].admission == {"limit": 2, "reason": "scripted", "signal": "test"}
    health = worker_health(manager.status()[flow.task_name])
    assert health["admission"]["limit"] == 2
    with gate.lock:
        gate.limit_now = 6  # memory fell: the runner takes more at its next look
    workflows = env.wait_all(ids)
    assert [w.status for w in workflows] == [WorkflowStatus.COMPLETED] * 12
    assert 2 < most[0] <= 6, most[0]
    assert (2, "scripted") in changes and (6, "scripted") in changes
    assert all(requested >= received for requested, received in gate.polls)


def test_no_polls_while_the_gate_holds_polling_and_running_tasks_finish(env: Env) -> None:
    flow = env.flow("adm_hold")
    gate = ScriptedGate(limit=4)
    started = threading.Event()
    release = threading.Event()

    @worker_task(flow.task_name, concurrency=4, poll_interval=20, batch_poll_timeout=100)
    def slow(i: int) -> None:
        started.set()
        release.wait(30)

    manager = env.manager([slow], admission=gate)
    manager.start_polling()
    first = flow.start({"i": 1})
    assert started.wait(10)
    with gate.lock:
        gate.polling = False  # above the hard limit: stop polling, never cancel
    threading.Event().wait(0.5)  # the long poll in flight (100 ms) comes back meanwhile
    with gate.lock:
        polls_before = len(gate.polls)
    second = flow.start({"i": 2})
    threading.Event().wait(1.0)  # a second of held polling: nothing may be polled in it
    with gate.lock:
        assert len(gate.polls) == polls_before
    assert manager.status()[flow.task_name].admission["limit"] == 0
    release.set()
    assert env.wait(first).status is WorkflowStatus.COMPLETED  # the running task was not cancelled
    assert flow.queue_size() == 1  # the second waits on the server
    with gate.lock:
        gate.polling = True
    assert env.wait(second).status is WorkflowStatus.COMPLETED


def test_a_worker_held_by_the_gate_is_not_unhealthy_for_its_silence(env: Env) -> None:
    flow = env.flow("adm_health")
    gate = ScriptedGate(limit=2)

    @worker_task(flow.task_name, concurrency=4, poll_interval=20, batch_poll_timeout=100)
    def idle(i: int) -> None:
        return None

    manager = env.manager([idle], admission=gate)
    manager.start_polling()
    wait_until(lambda: manager.status()[flow.task_name].last_contact is not None, message="first poll")
    with gate.lock:
        gate.polling = False  # held: no polls, so no contact with the server
    status = manager.status()[flow.task_name]
    much_later = (status.last_contact or 0) + 3600
    assert worker_health(status, max_silence=1.0, now=much_later)["healthy"], worker_health(status, now=much_later)
    with gate.lock:
        gate.polling = True
    status = wait_until(lambda: (lambda s: s if s.admission and s.admission["limit"] == 2 else None)(
        manager.status()[flow.task_name]), message="gate open again")
    report = worker_health(status, max_silence=1.0, now=(status.last_contact or 0) + 3600)
    assert not report["healthy"] and "has not reached the server" in report["problems"][0]
