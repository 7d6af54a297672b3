"""Property-based fault injection: a real ``TaskManager`` against :class:`fault_server.FaultServer`.

Hypothesis generates scripts of faults for poll, update and update-v2 (error statuses, 429/503 with
any ``Retry-After``, wrong-shaped bodies, truncated answers, stalls, resets, lost answers) and a few
tasks. Every generated case runs one worker until every task is settled (or ~3 s), stops the manager
and checks (``check_case``):

* the poll thread stayed alive while running (``is_polling`` and the ``cw-poll-*`` thread);
* ``stop_polling(timeout=2.0)`` returns within 4 s whatever the server is doing (far less than a
  120 s ``Retry-After`` it must not wait for; the slack is for a loaded machine);
* none of the case's ``cw-*`` threads is alive 4.5 s (read timeout + long poll + slack) after that;
* no result vanishes: every executed task has its result recorded by the server, or was passed to
  ``on_update_failure``;
* a polled task without ``taskId``/``workflowInstanceId`` is never executed;
* no connection leak: accepted <= answers that closed a connection + concurrency + 3;
* no spin: at most 60 requests per second of the case's wall time (a case runs for at least
  ``MIN_RUN`` = 0.3 s, idle after it settled, so that the rate is taken over a real interval).

``CW_FAULT_EXAMPLES`` sets the examples per test (default 25).
"""
from __future__ import annotations

import collections
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

import pytest
from support.fault_server import Fault, FaultServer, make_task
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.waiting import wait_until

from conductor_workers import ConductorClient, Configuration, Task, TaskManager, worker_task

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("CW_FAULT_EXAMPLES", "25"))
FAULT_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

READ_TIMEOUT = 1.0
LONG_POLL = 0.5  # the longest batch_poll_timeout generated
RUN_LIMIT = 3.0  # a case runs until settled or this long
MIN_RUN = 0.3  # ... and at least this long, so that the request rate is measured over a real interval
STOP_TIMEOUT = 2.0
STOP_SLACK = 2.0  # generous: a loaded 2-core machine can be slow to wake the caller
THREADS_GONE_WITHIN = READ_TIMEOUT + LONG_POLL + 3.0  # after stop_polling returned (a condition wait)
MAX_REQUESTS_PER_SECOND = 60
SPARE_CONNECTIONS = 3

_RUN: "collections.Counter[str]" = collections.Counter()  # generated cases run, per test

# -- strategies ---------------------------------------------------------------------------------

RETRY_AFTER = ["0", "1", "3", "120", "garbage", "Wed, 21 Oct 2015 07:28:00 GMT"]
ERROR_BODIES = [
    b"",
    b'{"status":500,"message":"boom","retryable":true}',
    b'{"status":400,"message":"bad","retryable":false}',
    b"<html><body><h1>Whitelabel Error Page</h1></body></html>",
    b"not json",
]
NOT_FOUND = [
    Fault.status(404, b'{"status":404,"message":"Task not found","retryable":false}'),
    Fault.status(404, b""),
    Fault.status(404, b"<html><body><h1>Whitelabel Error Page</h1></body></html>"),
]
_NO_IDS = {"taskType": "any", "status": "IN_PROGRESS", "inputData": {}, "responseTimeoutSeconds": 2}
_ONLY_TASK_ID = {**_NO_IDS, "taskId": "no-workflow-id"}
_ONLY_WORKFLOW_ID = {**_NO_IDS, "workflowInstanceId": "wf-no-task-id"}
POLL_SHAPES = [
    b'["a","b"]', b"{}", b"42", b'[{"taskId": 5}]', b'"text"', b"null", b"not json",
    json.dumps([_NO_IDS]).encode(), json.dumps([_ONLY_TASK_ID]).encode(), json.dumps([_ONLY_WORKFLOW_ID]).encode(),
    json.dumps(_ONLY_TASK_ID).encode(),
]
UPDATE_V2_SHAPES = [
    b'["a","b"]', b"{}", b"42", b'{"taskId": 5}', b'"text"', b"not json", b"[]",
    json.dumps(_NO_IDS).encode(), json.dumps(_ONLY_TASK_ID).encode(), json.dumps(_ONLY_WORKFLOW_ID).encode(),
    json.dumps([_ONLY_TASK_ID]).encode(),
]
UPDATE_SHAPES = [b"", b"{}", b"42", b'"text"', b"not-a-task-id", b'["a","b"]']
POLL_CODES = [400, 401, 405, 409, 500, 502, 503, 504]
UPDATE_CODES = [400, 405, 409, 500, 502, 503, 504]


def _throttled(code: int, retry_after: Any, body: bytes) -> Fault:
    return Fault.status(code, body, {"Retry-After": retry_after} if retry_after is not None else None)


def fault_strategy(codes: List[int], shapes: List[bytes]) -> st.SearchStrategy[Fault]:
    return st.one_of(
        st.just(Fault.ok()),
        st.builds(Fault.status, st.sampled_from(codes), st.sampled_from(ERROR_BODIES)),
        st.builds(
            _throttled,
            st.sampled_from([429, 503]),
            st.sampled_from([None] + RETRY_AFTER),
            st.sampled_from([b"", b'{"message":"slow down","retryable":true}']),
        ),
        st.sampled_from(NOT_FOUND),
        st.sampled_from(shapes).map(Fault.wrong_shape),
        st.just(Fault.truncate()),
        st.integers(2, 15).map(lambda tenths: Fault.stall(tenths / 10)),
        st.just(Fault.reset()),
        st.just(Fault.lost()),
    )


POLL_FAULTS = fault_strategy(POLL_CODES, POLL_SHAPES)
UPDATE_FAULTS = fault_strategy(UPDATE_CODES, UPDATE_SHAPES)
UPDATE_V2_FAULTS = st.one_of(fault_strategy(UPDATE_CODES, UPDATE_V2_SHAPES), st.just(Fault.status(405, b"")))


@dataclass(frozen=True)
class Case:
    response_timeouts: Tuple[int, ...]  # one task per entry
    concurrency: int
    batch_poll_timeout: int
    poll: Tuple[Fault, ...] = ()
    update: Tuple[Fault, ...] = ()
    update_v2: Tuple[Fault, ...] = ()


@st.composite
def cases(draw: Any, poll_faults: bool, update_faults: bool) -> Case:
    def script(faults: st.SearchStrategy[Fault]) -> Tuple[Fault, ...]:
        return tuple(draw(st.lists(faults, max_size=5)))

    return Case(
        response_timeouts=tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=6))),
        concurrency=draw(st.integers(1, 3)),
        batch_poll_timeout=draw(st.integers(200, 500)),
        poll=script(POLL_FAULTS) if poll_faults else (),
        update=script(UPDATE_FAULTS) if update_faults else (),
        update_v2=script(UPDATE_V2_FAULTS) if update_faults else (),
    )


# -- one case -----------------------------------------------------------------------------------


def _case_threads(task_type: str) -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("cw-") and task_type in t.name and t.is_alive()]


def _reported(results: List[Dict[str, Any]], task_id: Any) -> bool:
    return any(r.get("status") == "COMPLETED" and r.get("outputData") == {"id": task_id} for r in results)


def _transcript(server: FaultServer, started: float) -> str:
    return "; ".join(
        f"{r.time - started:.2f}s {r.endpoint or r.method + ' ' + r.path} {r.fault!r}" for r in server.requests
    )


def check_case(case: Case, label: str = "direct") -> None:
    _RUN[label] += 1
    task_type = f"cwf_{uuid.uuid4().hex[:10]}"
    tasks = [
        make_task(task_type, f"t{i}", f"wf{i}", {"i": i}, timeout) for i, timeout in enumerate(case.response_timeouts)
    ]
    well_formed = {task["taskId"]: task["workflowInstanceId"] for task in tasks}
    server = FaultServer(task_type, tasks, poll=case.poll, update=case.update, update_v2=case.update_v2)
    client = ConductorClient(
        Configuration(
            server_url=server.url,
            read_timeout=READ_TIMEOUT,
            connect_timeout=1.0,
            max_retries=1,
            backoff_factor=0,
        )
    )
    lock = threading.Lock()
    executed: List[Tuple[Any, Any]] = []
    update_failures: List[Any] = []

    @worker_task(task_type, concurrency=case.concurrency, batch_poll_timeout=case.batch_poll_timeout, poll_interval=50)
    def work(task: Task) -> Dict[str, Any]:
        with lock:
            executed.append((task.task_id, task.workflow_instance_id))
        return {"id": task.task_id}

    def on_update_failure(task: Task, result: Any, error: BaseException) -> None:
        with lock:
            update_failures.append(task.task_id)

    manager = TaskManager(client, [work], on_update_failure=on_update_failure, environ={})
    runner = manager.runners[task_type]

    def settled() -> bool:
        if server.queued_ids or runner.in_flight:
            return False
        with lock:
            ran, failed = {tid for tid, _ in executed}, set(update_failures)
        updates = server.updates
        if any(not _reported(updates.get(str(tid), []), tid) and tid not in failed for tid in ran):
            return False
        delivered = {tid for handout in server.handouts if not handout.lost for tid in handout.task_ids}
        return delivered <= ran | set(server.given_back)

    started = time.monotonic()
    try:
        manager.start_polling()
        try:
            wait_until(settled, timeout=RUN_LIMIT, interval=0.02)
        except AssertionError:
            pass  # not settled within RUN_LIMIT: stop anyway, the properties hold either way
        # A settled worker keeps polling (idle) until MIN_RUN: an observation window, not a wait for
        # something, so a plain sleep. Idle polling must not spin either.
        time.sleep(max(0.0, started + MIN_RUN - time.monotonic()))
        polling = manager.is_polling
        poll_thread_alive = any(t.name == f"cw-poll-{task_type}" for t in _case_threads(task_type))

        stop_started = time.monotonic()
        manager.stop_polling(timeout=STOP_TIMEOUT)
        stopped = time.monotonic()
        try:
            wait_until(
                lambda: not _case_threads(task_type),
                timeout=max(0.0, stopped + THREADS_GONE_WITHIN - time.monotonic()),
                interval=0.02,
            )
        except AssertionError:
            pass  # asserted below, after the other measurements
        leftover = [t.name for t in _case_threads(task_type)]
        ended = time.monotonic()

        with lock:
            ran_list, failed = list(executed), set(update_failures)
        updates = server.updates
        requests_seen = len(server.requests)
        accepted, closes = server.connections_accepted, server.closes
        wall = ended - started
        transcript = _transcript(server, started)

        assert polling and poll_thread_alive, f"the poll thread did not stay alive: {transcript}"
        assert stopped - stop_started <= STOP_TIMEOUT + STOP_SLACK, (
            f"stop_polling(timeout={STOP_TIMEOUT}) took {stopped - stop_started:.2f}s: {transcript}"
        )
        assert not leftover, (
            f"threads {leftover} still alive {THREADS_GONE_WITHIN:.1f}s after stop_polling returned: {transcript}"
        )
        vanished = [tid for tid, _ in ran_list if not _reported(updates.get(str(tid), []), tid) and tid not in failed]
        assert not vanished, (
            f"results of {vanished} neither reached the server nor on_update_failure "
            f"(updates recorded: {sorted(updates)}, failures: {sorted(map(str, failed))}): {transcript}"
        )
        malformed = [(tid, wf) for tid, wf in ran_list if well_formed.get(tid) != wf]
        assert not malformed, f"executed tasks the server never queued (no taskId/workflowInstanceId): {malformed}"
        assert accepted <= closes + case.concurrency + SPARE_CONNECTIONS, (
            f"connection leak: {accepted} accepted, {closes} closed by the server's answers, "
            f"concurrency {case.concurrency}: {transcript}"
        )
        assert requests_seen <= MAX_REQUESTS_PER_SECOND * wall, (
            f"{requests_seen} requests in {wall:.2f}s (> {MAX_REQUESTS_PER_SECOND}/s): {transcript}"
        )
    finally:
        manager.stop_polling(timeout=0)
        client.close()
        server.close()


# -- the properties -----------------------------------------------------------------------------


@FAULT_SETTINGS
@given(case=cases(poll_faults=True, update_faults=False))
def test_poll_faults(case: Case) -> None:
    check_case(case, "poll")


@FAULT_SETTINGS
@given(case=cases(poll_faults=False, update_faults=True))
def test_update_faults(case: Case) -> None:
    check_case(case, "update")


@FAULT_SETTINGS
@given(case=cases(poll_faults=True, update_faults=True))
def test_mixed_faults(case: Case) -> None:
    check_case(case, "mixed")


def test_zz_generated_case_count(capsys: pytest.CaptureFixture[str]) -> None:
    """Prints how many generated cases this module ran (runs last in file order), past pytest's capture."""
    total = sum(_RUN.values())
    line = f"fault properties: {total} generated cases ({', '.join(f'{k} {v}' for k, v in sorted(_RUN.items()))})"
    with capsys.disabled():
        print(f"\n{line}")
