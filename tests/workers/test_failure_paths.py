"""The runner's failure paths, one numbered case of the hardening issue each.

The runner talks to a scripted loopback server (``support.scripted_server``; nothing mocked) where
a test needs answers no real server gives, and to LocalConductor otherwise.
"""
from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
from support.scripted_server import Reply, ScriptedServer
from support.workers import Env, cw_threads, wait_until

from conductor_workers import (
    ConductorClient,
    Configuration,
    InvalidOptionError,
    PollingOptions,
    Task,
    TaskManager,
    TaskResult,
    WorkflowStatus,
    worker_task,
)

TASK = {
    "taskId": "t-1",
    "taskType": "greet",
    "status": "IN_PROGRESS",
    "workflowInstanceId": "w-1",
    "responseTimeoutSeconds": 1,
    "inputData": {"name": "Ada"},
}


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    s = ScriptedServer()
    yield s
    s.close()


@pytest.fixture
def managers() -> Iterator[List[TaskManager]]:
    made: List[TaskManager] = []
    yield made
    for manager in made:
        manager.stop_polling(timeout=5)


def _client(server: ScriptedServer, **options: Any) -> ConductorClient:
    options.setdefault("read_timeout", 1.0)
    options.setdefault("max_retries", 0)
    return ConductorClient(Configuration(server_url=server.api, **options))


def _poll_once(server: ScriptedServer, *tasks: Dict[str, Any]) -> None:
    server.route("GET", "tasks/poll/batch/greet", Reply(200, list(tasks) or [TASK]), Reply(200, []))


def _greet_worker(executed: List[str], **options: Any) -> Any:
    options.setdefault("batch_poll_timeout", 100)

    @worker_task("greet", **options)
    def greet(task: Task) -> Dict[str, Any]:
        executed.append(task.task_id)
        return {"hello": task.input_data.get("name")}

    return greet


def _failures() -> Tuple[List[Tuple[Task, TaskResult, BaseException]], Any]:
    seen: List[Tuple[Task, TaskResult, BaseException]] = []
    return seen, lambda task, result, error: seen.append((task, result, error))


# -- 1. an update-v2 answer that breaks mid-body --------------------------------------------------------


def test_truncated_update_v2_answer_is_retried_as_a_plain_update(server, managers):
    _poll_once(server)
    server.route("POST", "tasks/update-v2", Reply(200, TASK, truncate_to=12))
    server.route("POST", "tasks", Reply(200, "t-1"))
    executed: List[str] = []
    failed, hook = _failures()
    manager = TaskManager(_client(server), [_greet_worker(executed)], on_update_failure=hook)
    managers.append(manager)
    manager.start_polling()
    wait_until(lambda: server.count("POST", "tasks") >= 1, 10, message="the plain update")
    (plain,) = [r for r in server.requests if r.path == "/api/tasks"]
    assert plain.json()["status"] == "COMPLETED" and plain.json()["outputData"] == {"hello": "Ada"}
    assert executed == ["t-1"]
    assert failed == []
    status = manager.status()["greet"]
    assert status.reports_failed == 0
    assert status.last_error  # the broken answer is on record


def test_a_result_whose_answers_keep_breaking_reaches_on_update_failure(server, managers):
    _poll_once(server)
    server.route("POST", "tasks/update-v2", Reply(200, TASK, truncate_to=12))
    server.route("POST", "tasks", Reply(200, "t-1", truncate_to=1))
    executed: List[str] = []
    failed, hook = _failures()
    manager = TaskManager(_client(server), [_greet_worker(executed)], on_update_failure=hook)
    managers.append(manager)
    manager.start_polling()
    wait_until(lambda: failed, 20, message="on_update_failure")
    ((task, result, error),) = failed
    assert task.task_id == "t-1" and result.output_data == {"hello": "Ada"}
    assert server.count("POST", "tasks") >= 2  # retried (as plain updates) before giving up
    status = manager.status()["greet"]
    assert status.reports_failed == 1
    assert status.last_error


def test_lease_extension_survives_a_broken_answer(server, managers):
    release = threading.Event()
    _poll_once(server)
    # the lease thread's first extension gets a broken answer, the next ones a good one
    server.route("POST", "tasks", Reply(200, "t-1", truncate_to=1), Reply(200, "t-1"))
    server.route("POST", "tasks/update-v2", Reply(204))

    @worker_task("greet", lease_extend=True, batch_poll_timeout=100)
    def slow(task: Task) -> Dict[str, Any]:
        release.wait(10)
        return {}

    manager = TaskManager(_client(server), [slow])
    managers.append(manager)
    manager.start_polling()

    def extensions() -> int:
        return sum(1 for r in server.requests if r.path == "/api/tasks" and (r.json() or {}).get("extendLease"))

    try:
        wait_until(lambda: extensions() >= 3, 30, message="three lease extensions (0.8 s apart)")
    finally:
        release.set()


# -- 3. a poll told to wait (Retry-After) does not hold up stop_polling ---------------------------------


def test_stop_polling_interrupts_a_retry_after_wait(server, managers, caplog):
    server.route("GET", "tasks/poll/batch/greet", Reply(429, {"message": "slow down"}, headers={"Retry-After": "60"}))
    manager = TaskManager(_client(server, max_retries=3), [_greet_worker([])])
    managers.append(manager)
    caplog.set_level(logging.DEBUG, logger="conductor_workers")
    manager.start_polling()
    wait_until(lambda: server.count("GET", "tasks/poll/batch/greet") >= 1, 5)
    time.sleep(0.5)
    started = time.monotonic()
    # The wait is 30 s (the 60 s, capped); stopping ends it at once, well within these 10 s.
    assert manager.stop_polling(timeout=10) is True
    assert time.monotonic() - started < 12
    assert not [t for t in cw_threads() if t.name.startswith("cw-poll-greet")]
    assert server.count("GET", "tasks/poll/batch/greet") == 1  # the 60 s were honoured (up to the cap)
    assert any("429" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_a_failing_poll_is_logged_once_not_on_every_retry(server, managers, caplog):
    server.route("GET", "tasks/poll/batch/greet", Reply(500, {"message": "boom"}))
    manager = TaskManager(_client(server), [_greet_worker([])])
    managers.append(manager)
    caplog.set_level(logging.DEBUG, logger="conductor_workers")
    manager.start_polling()
    wait_until(lambda: server.count("GET", "tasks/poll/batch/greet") >= 4, 15, message="four failed polls")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("conductor_workers")]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "greet" in warnings[0].getMessage() and "500" in warnings[0].getMessage()
    assert warnings[0].exc_info is None
    server.route("GET", "tasks/poll/batch/greet", Reply(200, []))
    wait_until(lambda: any("works again" in r.getMessage() for r in caplog.records), 15, message="recovery line")


# -- 8. wrong-shaped poll answers and tasks without ids -------------------------------------------------


@pytest.mark.parametrize("body", [["a", "b"], {"taskId": "t-1"}, 42], ids=["strings", "object", "number"])
def test_wrong_shaped_poll_answer_is_one_warning_without_traceback(server, managers, caplog, body):
    server.route("GET", "tasks/poll/batch/greet", Reply(200, body))
    manager = TaskManager(_client(server), [_greet_worker([])])
    managers.append(manager)
    caplog.set_level(logging.DEBUG, logger="conductor_workers")
    manager.start_polling()
    wait_until(lambda: server.count("GET", "tasks/poll/batch/greet") >= 4, 15, message="four polls")
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("conductor_workers")]
    assert len(loud) == 1, [r.getMessage() for r in loud]
    assert loud[0].levelno == logging.WARNING and loud[0].exc_info is None
    assert manager.is_polling


def test_a_task_without_ids_is_not_executed(server, managers):
    no_ids = {k: v for k, v in TASK.items() if k not in ("taskId", "workflowInstanceId")}
    no_workflow = {k: v for k, v in TASK.items() if k != "workflowInstanceId"}
    _poll_once(server, no_ids, no_workflow)
    server.route("POST", "tasks", Reply(200, "t-1"))
    server.route("POST", "tasks/update-v2", Reply(204))
    executed: List[str] = []
    manager = TaskManager(_client(server), [_greet_worker(executed, concurrency=2)])
    managers.append(manager)
    manager.start_polling()
    wait_until(lambda: server.count("GET", "tasks/poll/batch/greet") >= 3, 10)
    assert executed == []
    assert server.count("POST", "tasks") == 0 and server.count("POST", "tasks/update-v2") == 0
    assert "without taskId" in manager.status()["greet"].last_error


# -- 5. stop_polling() from inside a worker --------------------------------------------------------------


def test_stop_polling_called_directly_in_execute_returns(env: Env) -> None:
    flow = env.flow("stopdirect")
    returned: List[bool] = []
    holder: List[TaskManager] = []

    @worker_task(flow.task_name, batch_poll_timeout=200)
    def stopper(task: Task) -> Dict[str, Any]:
        returned.append(holder[0].stop_polling(timeout=None))
        return {"done": True}

    manager = env.manager([stopper])
    holder.append(manager)
    manager.start_polling()
    workflow_id = flow.start()
    assert env.wait(workflow_id, timeout=20).status is WorkflowStatus.COMPLETED
    assert returned == [True]
    assert not manager.is_polling


# -- 6. an options object replaces the options in full ---------------------------------------------------


def _idle_manager(**worker_options: Any) -> TaskManager:
    @worker_task("opts", **worker_options)
    def work(task: Task) -> None:
        return None

    return TaskManager(ConductorClient(Configuration(server_url="http://127.0.0.1:9/api")), [work], environ={})


def test_update_with_an_options_object_replaces_every_field():
    manager = _idle_manager()
    manager.update_polling_option_for_worker("opts", paused=True, concurrency=4)
    manager.update_polling_options(PollingOptions(paused=False, concurrency=1))
    assert manager.options_for("opts") == PollingOptions(paused=False, concurrency=1)
    manager.update_polling_option_for_worker("opts", concurrency=4, domain="blue")
    manager.update_polling_option_for_worker("opts", PollingOptions())
    assert manager.options_for("opts") == PollingOptions()


def test_update_with_keywords_or_a_dict_changes_just_those_fields():
    manager = _idle_manager(domain="blue")
    manager.update_polling_options(concurrency=4)
    manager.update_polling_option_for_worker("opts", {"paused": True})
    assert manager.options_for("opts") == PollingOptions(domain="blue", concurrency=4, paused=True)
    manager.update_polling_options(PollingOptions(concurrency=2), paused=True)
    assert manager.options_for("opts") == PollingOptions(concurrency=2, paused=True)


# -- 7. options that would spin are refused --------------------------------------------------------------


def test_options_that_would_spin_are_refused():
    with pytest.raises(InvalidOptionError, match="tight loop"):
        PollingOptions(poll_interval=0, batch_poll_timeout=0)
    with pytest.raises(InvalidOptionError):
        PollingOptions(batch_poll_timeout=0).evolve(poll_interval=0)
    manager = _idle_manager()
    before = manager.options_for("opts")
    with pytest.raises(InvalidOptionError):
        manager.update_polling_options(poll_interval=0, batch_poll_timeout=0)
    assert manager.options_for("opts") == before
    with pytest.raises(InvalidOptionError):
        _idle_manager(poll_interval=0, batch_poll_timeout=0)


# -- 10. with no logging configured, a worker that cannot reach its server is visible -------------------

_NO_LOGGING_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from conductor_workers import ConductorClient, Configuration, TaskManager, worker_task

    @worker_task("lonely", batch_poll_timeout=200)
    def lonely(task):
        return {}

    config = Configuration(server_url=sys.argv[1], key_id=sys.argv[2] or None, key_secret=sys.argv[3] or None,
                           connect_timeout=0.5, max_retries=0)
    manager = TaskManager(ConductorClient(config), [lonely])
    manager.start_polling()
    time.sleep(float(sys.argv[4]))
    manager.stop_polling(timeout=2)
    """
)


def _run_unconfigured(tmp_path: Path, url: str, key: str = "", secret: str = "", seconds: float = 4.0) -> str:
    script = tmp_path / "lonely.py"
    script.write_text(_NO_LOGGING_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), url, key, secret, str(seconds)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_unreachable_server_is_visible_on_stderr_without_flooding(tmp_path, free_port):
    stderr = _run_unconfigured(tmp_path, f"http://127.0.0.1:{free_port}/api")
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert any("lonely" in line and "polling" in line and str(free_port) in line for line in lines), stderr
    assert len(lines) <= 3, stderr  # the first failure (and at most a stop line), not one per retry
    assert "Traceback" not in stderr


def test_refused_credentials_are_visible_on_stderr_and_keep_the_secret(tmp_path):
    from conductor_workers.testing import LocalConductor

    with LocalConductor(auth=("key", "right-secret")) as local:
        stderr = _run_unconfigured(tmp_path, local.url, "key", "WRONG-secret-42", seconds=3.0)
    assert "lonely" in stderr and ("refused" in stderr or "401" in stderr or "403" in stderr), stderr
    assert "WRONG-secret-42" not in stderr
    assert "Traceback" not in stderr


@pytest.fixture
def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- found in review ------------------------------------------------------------------------------------


def test_two_workers_stopping_each_other_do_not_deadlock(env: Env) -> None:
    first, second = env.flow("stopa"), env.flow("stopb")
    both_running = threading.Barrier(2, timeout=10)
    returned: List[bool] = []
    holder: List[TaskManager] = []

    def make(flow: Any) -> Any:
        @worker_task(flow.task_name, batch_poll_timeout=200)
        def stopper(task: Task) -> Dict[str, Any]:
            both_running.wait()  # each one's task is in flight while the other stops the manager
            returned.append(holder[0].stop_polling(timeout=None))
            return {"done": True}

        return stopper

    manager = env.manager([make(first), make(second)])
    holder.append(manager)
    manager.start_polling()
    ids = [first.start(), second.start()]
    wait_until(lambda: len(returned) == 2, 20, message="both stop_polling() calls to return")
    assert returned == [True, True]
    assert [env.wait(wf_id).status for wf_id in ids] == [WorkflowStatus.COMPLETED] * 2


def test_tasks_still_running_after_a_stop_timeout_keep_their_lease(env: Env) -> None:
    # A 5 s response timeout: extensions every 4 s leave them 1 s to reach the server (2 s left 0.4 s);
    # the task runs on for 2.2 timeouts after stop_polling gave up on it.
    flow = env.flow("leasestop", retry_count=1, response_timeout_seconds=5)
    started = threading.Event()

    @worker_task(flow.task_name, lease_extend=True, batch_poll_timeout=200)
    def long_job(task: Task) -> Dict[str, Any]:
        started.set()
        time.sleep(11.0)
        return {"slept": 11}

    manager = env.manager([long_job])
    manager.start_polling()
    workflow_id = flow.start()
    assert started.wait(15)
    assert manager.stop_polling(timeout=0.5) is False  # the task is still running: the truth
    workflow = env.wait(workflow_id, timeout=60)
    assert workflow.status is WorkflowStatus.COMPLETED
    assert len(workflow.tasks) == 1, [t.status for t in workflow.tasks]  # never timed out and retried
    assert workflow.tasks[0].output_data == {"slept": 11}
