"""Outages, servers without update-v2, and results the server refuses (through the cuttable proxy)."""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Dict, List, Tuple

import pytest
from support.proxy import LoopbackProxy
from support.workers import Env, wait_until

from conductor_workers import APIError, Task, TaskEvents, TaskResult, TaskStatus, WorkflowStatus, worker_task


def test_server_down_while_tasks_run_loses_no_result(proxied_env: Env) -> None:
    proxy = proxied_env.proxy
    assert proxy is not None
    flow = proxied_env.flow("outage", response_timeout_seconds=30)
    ids = flow.start_many(8)
    running: List[str] = []
    lock = threading.Lock()

    @worker_task(flow.task_name, concurrency=4)
    def slow(task: Task) -> Dict[str, Any]:
        with lock:
            running.append(task.task_id)
        time.sleep(1.0)
        return {"i": task.input_data["i"]}

    manager = proxied_env.manager([slow])
    manager.start_polling()
    wait_until(lambda: len(running) >= 4, message="4 tasks running")
    cut_at = time.time()
    proxy.cut()  # every slot is busy: the next requests are their results, and they fail
    time.sleep(3.0)
    proxy.restore()

    workflows = proxied_env.wait_all(ids)
    assert [wf.status for wf in workflows] == [WorkflowStatus.COMPLETED] * 8
    assert sorted(wf.output["out"]["i"] for wf in workflows) == list(range(8))
    status = manager.status()[flow.task_name]
    assert status.reports_failed == 0
    assert status.executions_completed == 8
    assert status.last_error, "the outage left no trace in status()"
    assert status.last_error_time >= cut_at
    assert len(running) == 8  # each task ran once: nothing was re-delivered


def test_poll_side_outage_recovers_by_itself(proxied_env: Env) -> None:
    proxy = proxied_env.proxy
    assert proxy is not None
    flow = proxied_env.flow("polloutage")

    @worker_task(flow.task_name, batch_poll_timeout=500)
    def work(i: int) -> Dict[str, Any]:
        return {"i": i}

    manager = proxied_env.manager([work])
    manager.start_polling()
    wait_until(lambda: any(r.path.startswith("/api/tasks/poll") for r in proxy.requests), message="a poll")
    proxy.cut()
    wait_until(lambda: manager.status()[flow.task_name].last_error, timeout=30, message="a failed poll")
    time.sleep(3.0)
    proxy.restore()
    workflow = proxied_env.wait(flow.start({"i": 5}))
    assert workflow.status is WorkflowStatus.COMPLETED
    assert workflow.output == {"out": {"i": 5}}
    assert manager.is_polling


@pytest.mark.parametrize(
    "status, body, content_type",
    [
        (405, '{"status":405,"message":"Request method \'POST\' is not supported"}', "application/json"),
        (404, "<html><body><h1>Whitelabel Error Page</h1>Not Found</body></html>", "text/html"),
    ],
    ids=["405", "404-html"],
)
def test_update_v2_fallback(proxied_env: Env, status: int, body: str, content_type: str) -> None:
    proxy = proxied_env.proxy
    assert proxy is not None
    proxy.reject("/api/tasks/update-v2", status, body, method="POST", content_type=content_type)
    flow = proxied_env.flow("nov2")
    ids = flow.start_many(20)

    @worker_task(flow.task_name, concurrency=2)
    def work(i: int) -> Dict[str, Any]:
        return {"i": i}

    manager = proxied_env.manager([work])
    manager.start_polling()
    workflows = proxied_env.wait_all(ids)
    assert all(wf.status is WorkflowStatus.COMPLETED for wf in workflows)
    assert sorted(wf.output["out"]["i"] for wf in workflows) == list(range(20))
    state = manager.status()[flow.task_name]
    assert state.update_v2 is False
    assert state.reports_failed == 0
    tried_v2 = sum(1 for r in proxy.requests if r.path == "/api/tasks/update-v2")
    assert 1 <= tried_v2 <= 2, f"update-v2 tried {tried_v2} times (at most once per slot)"
    plain = sum(1 for r in proxy.requests if r.method == "POST" and r.path == "/api/tasks")
    assert plain == 20


def test_update_v2_is_used_on_a_normal_server(env: Env) -> None:
    flow = env.flow("v2")

    @worker_task(flow.task_name)
    def work(i: int) -> Dict[str, Any]:
        return {"i": i}

    manager = env.manager([work])
    manager.start_polling()
    assert env.wait(flow.start({"i": 1})).status is WorkflowStatus.COMPLETED
    # the workflow completes on the server before update-v2's answer reaches the runner
    wait_until(lambda: manager.status()[flow.task_name].update_v2 is True, timeout=10, message="update_v2")


class Recorder(TaskEvents):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: List[Tuple[str, Any]] = []

    def _add(self, name: str, *args: Any) -> None:
        with self.lock:
            self.events.append((name, args))

    def names(self, name: str) -> List[Tuple[Any, ...]]:
        with self.lock:
            return [args for event, args in self.events if event == name]

    def task_started(self, task: Task) -> None:
        self._add("task_started", task)

    def task_finished(self, task: Task, result: TaskResult, duration: float) -> None:
        self._add("task_finished", task, result, duration)

    def task_failed(self, task: Task, error: BaseException) -> None:
        self._add("task_failed", task, error)

    def update_failed(self, task: Task, result: TaskResult, error: BaseException) -> None:
        self._add("update_failed", task, result, error)


def test_refused_update_calls_hooks_and_logs(proxied_env: Env, caplog: pytest.LogCaptureFixture) -> None:
    proxy = proxied_env.proxy
    assert proxy is not None
    flow = proxied_env.flow("refused", response_timeout_seconds=60)
    doomed_wf, failing_wf, fine_wf = flow.start({"i": 0}), flow.start({"i": 1}), flow.start({"i": 2})
    doomed = proxied_env.executor.get_workflow(doomed_wf).tasks[0].task_id
    refusal = json.dumps({"status": 400, "message": "Invalid task result", "retryable": False})
    for path in ("/api/tasks", "/api/tasks/update-v2"):
        proxy.reject(path, 400, refusal, method="POST", exact=True,
                     predicate=lambda method, path, body: doomed.encode() in body)

    failures: List[Tuple[Task, TaskResult, BaseException]] = []
    recorder = Recorder()

    @worker_task(flow.task_name, concurrency=3)
    def work(i: int) -> Dict[str, Any]:
        if i == 1:
            raise RuntimeError("worker failure")
        return {"i": i}

    manager = proxied_env.manager(
        [work], events=recorder, on_update_failure=lambda task, result, error: failures.append((task, result, error))
    )
    with caplog.at_level(logging.ERROR, logger="conductor_workers"):
        manager.start_polling()
        assert proxied_env.wait(fine_wf).status is WorkflowStatus.COMPLETED
        assert proxied_env.wait(failing_wf).status is WorkflowStatus.FAILED
        wait_until(lambda: failures, message="on_update_failure")
        assert manager.stop_polling(timeout=10)

    ((task, result, error),) = failures
    assert task.task_id == doomed
    assert result.status.value == "COMPLETED" and result.output_data == {"i": 0}
    assert isinstance(error, APIError) and error.status_code == 400
    ((hook_task, hook_result, hook_error),) = recorder.names("update_failed")
    assert (hook_task.task_id, hook_result, hook_error) == (doomed, result, error)
    assert [r for r in caplog.records if r.levelno == logging.ERROR and doomed in r.getMessage()]
    assert manager.status()[flow.task_name].reports_failed == 1
    # the server still has it: nothing was reported
    assert proxied_env.executor.get_task(doomed).status is TaskStatus.IN_PROGRESS

    started = {args[0].task_id for args in recorder.names("task_started")}
    finished = {args[0].task_id: args[1] for args in recorder.names("task_finished")}
    failed = recorder.names("task_failed")
    assert len(started) == 3 and set(finished) == started
    assert all(duration >= 0 for _, _, duration in recorder.names("task_finished"))
    ((failed_task, failed_error),) = failed
    assert isinstance(failed_error, RuntimeError) and str(failed_error) == "worker failure"
    assert finished[failed_task.task_id].status.value == "FAILED"


def _chaotic_env(any_env: Env) -> Env:
    proxy = LoopbackProxy(any_env.url)
    env = Env(any_env.kind, any_env.url, worker_url=proxy.url, proxy=proxy)
    proxy.chaos(error_503=0.10, reset=0.05, lost=0.05, jitter=0.02, seed=8)
    return env


def test_unreliable_network_loses_no_workflow(any_env: Env) -> None:
    """10 % 503s, 5 % resets, 5 % lost answers and jitter between the workers and the server.

    A poll whose answer is lost leaves its task IN_PROGRESS on the server until the response timeout,
    which then retries it: hence the short timeout and the retries in the task definition.
    """
    env = _chaotic_env(any_env)
    proxy = env.proxy
    assert proxy is not None
    try:
        flow = env.flow("chaos", retry_count=5, retry_delay_seconds=0, response_timeout_seconds=3)
        count = 30
        ids = flow.start_many(count, input_for=lambda i: {"i": i})

        @worker_task(flow.task_name, concurrency=4, batch_poll_timeout=500)
        def double(i: int) -> Dict[str, Any]:
            return {"i": i, "double": 2 * i}

        manager = env.manager([double])
        manager.start_polling()
        workflows = env.wait_all(ids, timeout=120)
        assert [wf.status for wf in workflows] == [WorkflowStatus.COMPLETED] * count
        assert sorted((wf.output["out"]["i"], wf.output["out"]["double"]) for wf in workflows) == [
            (i, 2 * i) for i in range(count)
        ]
        assert manager.stop_polling(timeout=15)
        assert sum(proxy.chaos_counts.values()) > 0, proxy.chaos_counts
    finally:
        env.close()
        proxy.close()
