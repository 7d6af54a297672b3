"""The Python counterpart of every snippet of the JavaScript SDK's worker guide, working.

Each test is one snippet of the guide, in the guide's order, written the way the README shows it.
They run against the embedded server and the real conductor-oss server.
"""
from __future__ import annotations

import threading
import time
import uuid
from typing import Iterator

import pytest

from conductor_workers import (
    ConductorClient,
    Configuration,
    PollingOptions,
    Task,
    TaskDef,
    TaskManager,
    TaskResult,
    TaskResultStatus,
    TaskStatus,
    Worker,
    WorkflowDef,
    WorkflowExecutor,
    WorkflowStatus,
    WorkflowTask,
    worker_task,
)
from conductor_workers.testing import LocalConductor


@pytest.fixture(scope="module", params=["local", pytest.param("real", marks=pytest.mark.real_server)])
def server_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "real":
        yield request.getfixturevalue("real_server_url")
        return
    with LocalConductor() as server:
        yield server.url


@pytest.fixture
def client(server_url: str) -> Iterator[ConductorClient]:
    # orkesConductorClient({ keyId, keySecret, serverUrl }) -> keys are optional, as in the guide
    with ConductorClient(Configuration(server_url=server_url, key_id=None, key_secret=None)) as client:
        yield client


def one_task_workflow(client: ConductorClient, task_name: str, refs: "tuple[str, ...]" = ("only",)) -> str:
    name = f"jsguide_wf_{uuid.uuid4().hex[:8]}"
    client.metadata.register_task_defs([TaskDef(name=task_name, retry_count=0, response_timeout_seconds=30)])
    client.metadata.register_workflow_def(
        WorkflowDef(name=name, tasks=[WorkflowTask(name=task_name, task_reference_name=ref) for ref in refs])
    )
    return name


def test_task_worker_returning_an_object(client: ConductorClient) -> None:
    """`execute: async (task) => ({ outputData: { hello: "From your worker" }, status: "COMPLETED" })`."""
    task_name = f"jsguide_hello_{uuid.uuid4().hex[:8]}"

    @worker_task(task_name)
    def worker(task: Task) -> TaskResult:
        return TaskResult(output_data={"hello": "From your worker"}, status=TaskResultStatus.COMPLETED)

    workflow = one_task_workflow(client, task_name)
    executor = WorkflowExecutor(client)
    with TaskManager(client, [worker]):
        done = executor.wait_for_workflow(executor.start_workflow(workflow, {}), timeout=30)
    assert done.status is WorkflowStatus.COMPLETED
    assert done.output == {"hello": "From your worker"}


def test_long_running_task_in_progress_with_callback(client: ConductorClient) -> None:
    """`{ outputData: {}, status: "IN_PROGRESS", callbackAfterSeconds: 60 }`, `pollInterval: 100, concurrency: 2`.

    The guide's 60 s becomes 1 s so that the test sees the task come back.
    """
    task_name = f"jsguide_long_{uuid.uuid4().hex[:8]}"

    class LongRunning(Worker):
        task_def_name = task_name
        poll_interval = 100  # optional
        concurrency = 2  # optional

        def execute(self, task: Task) -> TaskResult:
            if task.poll_count < 2:
                return TaskResult.in_progress(callback_after_seconds=1, output={})
            return TaskResult.complete({"polls": task.poll_count})

    workflow = one_task_workflow(client, task_name)
    executor = WorkflowExecutor(client)
    with TaskManager(client, [LongRunning()]) as manager:
        options = manager.options_for(task_name)  # the class attributes are the worker's options
        assert (options.poll_interval, options.concurrency) == (100, 2)
        done = executor.wait_for_workflow(executor.start_workflow(workflow, {}), timeout=30)
    assert done.status is WorkflowStatus.COMPLETED
    assert done.output == {"polls": 2}


def test_starting_workers_with_task_manager(client: ConductorClient) -> None:
    """`new TaskManager(client, [customWorker], { options: { pollInterval: 100, concurrency: 1 } })`, then
    `startPolling`, `updatePollingOptions`, `updatePollingOptionForWorker`, `isPolling`, `stopPolling`.

    The updates use other values than the guide's (which repeats the initial ones), so that the test
    can see them take effect: in the options in force, and in how many tasks really run at once.
    """
    task_def_name = f"HelloWorldWorker_{uuid.uuid4().hex[:8]}"
    lock = threading.Lock()
    running: "list[int]" = [0, 0]  # now, most at once
    together: "list[threading.Barrier]" = []  # the barrier the next tasks must all reach at once

    @worker_task(task_def_name)
    def custom_worker(task: Task) -> dict:
        with lock:
            running[0] += 1
            running[1] = max(running[1], running[0])
            barrier = together[0] if together else None
        try:
            if barrier is not None:
                barrier.wait()  # broken (a failed task) unless enough tasks run at the same time
            return {"greeting": "Hello World"}
        finally:
            with lock:
                running[0] -= 1

    workflow = one_task_workflow(client, task_def_name)
    executor = WorkflowExecutor(client)

    def run_at_once(count: int) -> None:
        """Start ``count`` workflows whose tasks can only complete if all ``count`` run together."""
        with lock:
            together[:] = [threading.Barrier(count, timeout=30)]
            running[1] = 0
        ids = [executor.start_workflow(workflow, {}) for _ in range(count)]
        done = [executor.wait_for_workflow(wf_id, timeout=60) for wf_id in ids]
        reasons = [wf.reason_for_incompletion for wf in done]
        assert [wf.status for wf in done] == [WorkflowStatus.COMPLETED] * count, reasons
        assert all(wf.output == {"greeting": "Hello World"} for wf in done)
        assert running[1] == count

    # Worker options take precedence over options defined in the manager.
    manager = TaskManager(client, [custom_worker], options=PollingOptions(poll_interval=100, concurrency=1))
    options = manager.options_for(task_def_name)
    assert (options.poll_interval, options.concurrency) == (100, 1)
    manager.start_polling()
    try:
        assert manager.is_polling is True
        done = executor.wait_for_workflow(executor.start_workflow(workflow, {}), timeout=30)
        assert done.status is WorkflowStatus.COMPLETED and done.output == {"greeting": "Hello World"}

        manager.update_polling_options(poll_interval=200, concurrency=2)  # every worker
        options = manager.options_for(task_def_name)
        assert (options.poll_interval, options.concurrency) == (200, 2)
        run_at_once(2)

        manager.update_polling_option_for_worker(task_def_name, poll_interval=100, concurrency=3)  # this one
        options = manager.options_for(task_def_name)
        assert (options.poll_interval, options.concurrency) == (100, 3)
        run_at_once(3)
        assert manager.status()[task_def_name].options == options
        assert manager.is_polling is True
    finally:
        assert manager.stop_polling() is True
    assert manager.is_polling is False


def test_get_task_details_and_update_outside_the_worker(client: ConductorClient) -> None:
    """`executor.getTask(someTaskId)`, `executor.updateTaskByRefName(ref, wfId, "COMPLETED", {...})`,
    `executor.updateTask(taskId, executionId, "COMPLETED", newChange)`."""
    task_name = f"jsguide_script_{uuid.uuid4().hex[:8]}"
    workflow = one_task_workflow(client, task_name, refs=("first", "second"))
    executor = WorkflowExecutor(client)
    workflow_instance_id = executor.start_workflow(workflow, {})

    deadline = time.monotonic() + 15
    polled = None
    while polled is None and time.monotonic() < deadline:
        polled = client.tasks.poll(task_name, worker_id="js-guide")
    assert polled is not None
    some_task_id = polled.task_id

    task_details = executor.get_task(some_task_id)
    assert task_details.status is TaskStatus.IN_PROGRESS
    assert task_details.reference_task_name == "first"

    executor.update_task(some_task_id, workflow_instance_id, "COMPLETED", {"new": "change"})
    executor.update_task_by_ref_name("second", workflow_instance_id, "COMPLETED", {"some": {"output": "value"}})

    done = executor.wait_for_workflow(workflow_instance_id, timeout=30)
    assert done.status is WorkflowStatus.COMPLETED
    assert done.task_by_ref("first").output_data == {"new": "change"}
    assert done.output == {"some": {"output": "value"}}
