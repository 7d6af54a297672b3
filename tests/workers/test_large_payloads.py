"""Large payloads: inputs the server keeps in external storage, outputs above its threshold and maximum.

On LocalConductor, which externalizes like conductor-oss with a storage configured: payloads above
the thresholds are kept in its own storage, and polled tasks arrive with an empty input and
``externalInputPayloadStoragePath``. Most tests lower the thresholds (KB) so that they stay fast; one
passes the issue's 4 MB through the default ones.
"""
from __future__ import annotations

import re
from typing import Any, Dict, Iterator, List, Tuple

import pytest
from support.scripted_server import Reply, ScriptedServer
from support.storage_server import StorageServer
from support.waiting import wait_until
from support.workers import Env, unique

from conductor_workers import (
    ConductorClient,
    Configuration,
    Task,
    TaskDef,
    TaskEvents,
    TaskManager,
    TaskStatus,
    Workflow,
    WorkflowDef,
    WorkflowStatus,
    WorkflowTask,
    worker_task,
)
from conductor_workers.testing import LocalConductor, PayloadLimits

KB = 1024


@pytest.fixture(scope="module")
def small_limits_server() -> Iterator[LocalConductor]:
    limits = PayloadLimits(task_threshold_kb=64, task_max_kb=512, workflow_threshold_kb=64)
    with LocalConductor(sweep_interval=0.2, payload_limits=limits) as server:
        yield server


@pytest.fixture
def small_env(small_limits_server: LocalConductor) -> Iterator[Env]:
    environment = Env("local", small_limits_server.url)
    yield environment
    environment.close()


def _two_task_flow(env: Env, prefix: str) -> Dict[str, str]:
    """``make`` produces ``blob``; ``use`` gets it as input; the workflow outputs both."""
    make, use = unique(prefix + "_make"), unique(prefix + "_use")
    env.client.metadata.register_task_defs(
        [TaskDef(name=name, retry_count=0, response_timeout_seconds=30, owner_email="t@example.com") for name in (make, use)]
    )
    workflow = make + "_wf"
    env.executor.register_workflow(
        WorkflowDef(
            name=workflow,
            version=1,
            owner_email="t@example.com",
            tasks=[
                WorkflowTask(name=make, task_reference_name="make", input_parameters={"size": "${workflow.input.size}"}),
                WorkflowTask(name=use, task_reference_name="use", input_parameters={"blob": "${make.output.blob}"}),
            ],
            output_parameters={"length": "${use.output.length}", "blob": "${make.output.blob}"},
        ),
        overwrite=True,
    )
    return {"make": make, "use": use, "workflow": workflow}


def _workers(names: Dict[str, str], seen: List[Task]) -> List[Any]:
    @worker_task(names["make"], batch_poll_timeout=200)
    def make(size: int) -> Dict[str, Any]:
        return {"blob": "x" * size}

    @worker_task(names["use"], batch_poll_timeout=200)
    def use(task: Task) -> Dict[str, Any]:
        seen.append(task)
        return {"length": len(task.input_data["blob"])}

    return [make, use]


def _run_flow(env: Env, names: Dict[str, str], seen: List[Task], size: int, events: Any = None,
              **config: Any) -> Tuple[Workflow, ConductorClient]:
    """Run the two workers on a client of their own (``config``: Configuration options) for one workflow."""
    client = ConductorClient(Configuration(server_url=env.url, **config))
    manager = TaskManager(client, _workers(names, seen), events=events)
    try:
        manager.start_polling()
        workflow = env.wait(env.executor.start_workflow(names["workflow"], {"size": size}, version=1), timeout=120)
    finally:
        manager.stop_polling()
        client.close()
    return workflow, client


def test_an_externalized_input_reaches_the_next_worker_intact(small_env: Env) -> None:
    names = _two_task_flow(small_env, "ext")
    seen: List[Task] = []
    small_env.manager(_workers(names, seen)).start_polling()
    size = 200 * KB
    workflow_id = small_env.executor.start_workflow(names["workflow"], {"size": size}, version=1)
    workflow = small_env.wait(workflow_id)
    assert workflow.status is WorkflowStatus.COMPLETED, workflow.reason_for_incompletion
    (task,) = seen
    assert task.input_data["blob"] == "x" * size
    assert task.external_input_payload_storage_path  # it came through the storage, not inline
    make, use = workflow.tasks
    assert make.output_data == {} and make.external_output_payload_storage_path  # the view is empty
    assert use.input_data == {} and use.external_input_payload_storage_path
    # scripting: the workflow's externalized output on request
    assert workflow.output == {} and workflow.external_output_payload_storage_path
    full = small_env.executor.get_workflow(workflow_id, include_external=True)
    assert full.output == {"length": size, "blob": "x" * size}
    assert full.tasks[0].output_data == {"blob": "x" * size}
    assert small_env.executor.get_task(use.task_id, include_external=True).input_data == {"blob": "x" * size}


def test_an_output_above_the_maximum_fails_locally_with_its_size(small_env: Env) -> None:
    names = _two_task_flow(small_env, "max")
    seen: List[Task] = []
    workflow, _ = _run_flow(small_env, names, seen, 600 * KB, max_payload_kb=512)
    assert workflow.status is WorkflowStatus.FAILED
    (make,) = workflow.tasks
    assert make.status is TaskStatus.FAILED_WITH_TERMINAL_ERROR
    assert re.search(r"output is 6144\d\d bytes, more than the server's maximum of 524288 bytes", make.reason_for_incompletion)
    assert "max_payload_kb=512" in make.reason_for_incompletion
    assert seen == []


def test_the_server_fails_an_output_above_its_maximum(small_env: Env) -> None:
    """A client that does not check (max_payload_kb above the server's) meets the server's own limit."""
    names = _two_task_flow(small_env, "srvmax")
    workflow, _ = _run_flow(small_env, names, [], 600 * KB, max_payload_kb=100_000)
    (make,) = workflow.tasks
    assert make.status is TaskStatus.FAILED_WITH_TERMINAL_ERROR
    assert "is greater than the permissible limit: 524288 bytes" in make.reason_for_incompletion


class _PayloadEvents(TaskEvents):
    def __init__(self) -> None:
        self.used: List[Tuple[str, str, str]] = []

    def external_payload_used(self, task_type: str, operation: str, payload_type: str) -> None:
        self.used.append((task_type, operation, payload_type))


def test_a_worker_can_upload_its_large_output(small_env: Env) -> None:
    names = _two_task_flow(small_env, "upload")
    seen: List[Task] = []
    events = _PayloadEvents()
    workflow, _ = _run_flow(small_env, names, seen, 100 * KB, events, upload_large_payloads=True,
                            payload_threshold_kb=64)
    assert workflow.status is WorkflowStatus.COMPLETED, workflow.reason_for_incompletion
    assert seen[0].input_data["blob"] == "x" * 100 * KB
    path = workflow.tasks[0].external_output_payload_storage_path
    assert path and not path.endswith(".hashed.json")  # the worker's upload, not the server's own copy
    assert events.used == [(names["make"], "WRITE", "TASK_OUTPUT"), (names["use"], "READ", "TASK_INPUT")]


def test_four_megabytes_through_the_default_thresholds(env: Env) -> None:
    names = _two_task_flow(env, "fourmb")
    seen: List[Task] = []
    env.manager(_workers(names, seen)).start_polling()
    size = 4 * 1024 * KB
    workflow = env.wait(env.executor.start_workflow(names["workflow"], {"size": size}, version=1))
    assert workflow.status is WorkflowStatus.COMPLETED, workflow.reason_for_incompletion
    assert len(seen) == 1 and seen[0].input_data["blob"] == "x" * size
    assert seen[0].external_input_payload_storage_path
    assert workflow.output["length"] == size  # under the workflow threshold (5120 KB): inline


# -- a server whose storage gives clients nothing to read (conductor-oss's default "dummy" storage) ----


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.close()


EXTERNAL_TASK = {
    "taskId": "t-1",
    "taskType": "big",
    "status": "IN_PROGRESS",
    "workflowInstanceId": "w-1",
    "responseTimeoutSeconds": 5,
    "inputData": {},
    "externalInputPayloadStoragePath": "d2f8.json",
}


@pytest.mark.parametrize(
    "location, download, terminal, words",
    [
        ({"path": "d2f8.json3a1.json"}, None, True, "dummy"),
        ({"uri": "{base}/store/d2f8.json", "path": "d2f8.json"}, Reply(503, "busy"), False, "HTTP 503"),
        ({"uri": "{base}/store/d2f8.json", "path": "d2f8.json"}, Reply(200, {"Error": "gone"}), True, "gone"),
    ],
    ids=["placeholder-storage", "download-error", "postgres-missing-key"],
)
def test_an_input_that_cannot_be_had_fails_the_task_and_never_runs_on_empty_input(
    scripted: ScriptedServer, location: Dict[str, str], download: Any, terminal: bool, words: str
) -> None:
    scripted.route("GET", "tasks/poll/batch/big", Reply(200, [EXTERNAL_TASK]), Reply(200, []))
    scripted.route("GET", "tasks/externalstoragelocation",
                   Reply(200, {key: value.format(base=scripted.base) for key, value in location.items()}))
    if download is not None:
        scripted.route("GET", "/store/d2f8.json", download)
    scripted.route("POST", "tasks/update-v2", Reply(204))
    ran: List[Task] = []

    @worker_task("big", batch_poll_timeout=100)
    def big(task: Task) -> Dict[str, Any]:
        ran.append(task)
        return {}

    client = ConductorClient(Configuration(server_url=scripted.api, max_retries=0, read_timeout=2))
    manager = TaskManager(client, [big])
    manager.start_polling()
    try:
        wait_until(lambda: scripted.count("POST", "tasks/update-v2"), 10, message="the failure report")
    finally:
        manager.stop_polling(timeout=5)
        client.close()
    assert ran == []
    (report,) = [r.json() for r in scripted.requests if r.path == "/api/tasks/update-v2"]
    assert report["status"] == ("FAILED_WITH_TERMINAL_ERROR" if terminal else "FAILED")
    assert words in report["reasonForIncompletion"] and "not executed" in report["reasonForIncompletion"]
    location_query = [r.query for r in scripted.requests if r.path == "/api/tasks/externalstoragelocation"][0]
    assert location_query == {"path": "d2f8.json", "operation": "READ", "payloadType": "TASK_INPUT"}


# -- the real conductor-oss server ---------------------------------------------------------------------


@pytest.fixture
def pg_env(real_server_pg_url: str) -> Iterator[Env]:
    """conductor-oss 3.32.1 on PostgreSQL with the PostgreSQL external payload storage."""
    environment = Env("real", real_server_pg_url)
    yield environment
    environment.close()


@pytest.fixture
def dummy_env(real_server_url: str) -> Iterator[Env]:
    """conductor-oss 3.32.1 on SQLite with its default, placeholder ("dummy") payload storage."""
    environment = Env("real", real_server_url)
    yield environment
    environment.close()


FOUR_MB = 4 * 1024 * KB


def test_real_server_four_megabytes_reach_the_next_worker(pg_env: Env) -> None:
    names = _two_task_flow(pg_env, "pg4mb")
    seen: List[Task] = []
    pg_env.manager(_workers(names, seen)).start_polling()
    workflow_id = pg_env.executor.start_workflow(names["workflow"], {"size": FOUR_MB}, version=1)
    workflow = pg_env.wait(workflow_id, timeout=120)
    assert workflow.status is WorkflowStatus.COMPLETED, workflow.reason_for_incompletion
    (task,) = seen
    assert task.external_input_payload_storage_path  # the server moved it to its storage
    assert task.input_data["blob"] == "x" * FOUR_MB
    assert workflow.output == {} and workflow.external_output_payload_storage_path  # over 1 MB here
    full = pg_env.executor.get_workflow(workflow_id, include_external=True)
    assert full.output["length"] == FOUR_MB and full.output["blob"] == "x" * FOUR_MB


def test_real_server_twelve_megabytes_fail_locally(pg_env: Env) -> None:
    names = _two_task_flow(pg_env, "pg12mb")
    seen: List[Task] = []
    pg_env.manager(_workers(names, seen)).start_polling()
    workflow = pg_env.wait(pg_env.executor.start_workflow(names["workflow"], {"size": 12 * 1024 * KB}, version=1))
    assert workflow.status is WorkflowStatus.FAILED
    (make,) = workflow.tasks
    assert make.status is TaskStatus.FAILED_WITH_TERMINAL_ERROR
    assert "max_payload_kb=10240" in make.reason_for_incompletion, make.reason_for_incompletion
    assert seen == []


def test_real_server_refuses_uploads_and_the_output_goes_inline(pg_env: Env) -> None:
    """The PostgreSQL storage serves GET only: an upload gets 405, and the output is sent inline."""
    names = _two_task_flow(pg_env, "pgupload")
    seen: List[Task] = []
    workflow, client = _run_flow(pg_env, names, seen, 200 * KB, upload_large_payloads=True, payload_threshold_kb=64)
    assert workflow.status is WorkflowStatus.COMPLETED, workflow.reason_for_incompletion
    assert client.payloads.uploads_refused
    assert seen[0].input_data["blob"] == "x" * 200 * KB


def test_real_server_with_placeholder_storage_fails_the_task_instead_of_running_on_nothing(dummy_env: Env) -> None:
    names = _two_task_flow(dummy_env, "dummy")
    seen: List[Task] = []
    dummy_env.manager(_workers(names, seen)).start_polling()
    workflow = dummy_env.wait(dummy_env.executor.start_workflow(names["workflow"], {"size": FOUR_MB}, version=1),
                              timeout=120)
    assert workflow.status is WorkflowStatus.FAILED
    make, use = workflow.tasks
    assert make.status is TaskStatus.COMPLETED
    assert use.status is TaskStatus.FAILED_WITH_TERMINAL_ERROR
    assert "dummy" in use.reason_for_incompletion and "not executed" in use.reason_for_incompletion
    assert seen == []  # the worker never ran on an empty input


# -- a storage that misbehaves: the task fails, and the worker never runs -----------------------------


@pytest.fixture
def storage() -> Iterator[StorageServer]:
    with StorageServer() as running:
        yield running


def _run_one_external_task(scripted: ScriptedServer, storage_uri: str, config: Dict[str, Any],
                           **worker_options: Any) -> Tuple[Dict[str, Any], List[Task]]:
    """Poll one task whose input is at ``storage_uri``; its report and the tasks the worker ran."""
    scripted.route("GET", "tasks/poll/batch/big", Reply(200, [EXTERNAL_TASK]), Reply(200, []))
    scripted.route("GET", "tasks/externalstoragelocation", Reply(200, {"uri": storage_uri, "path": "d2f8.json"}))
    scripted.route("POST", "tasks/update-v2", Reply(204))
    ran: List[Task] = []

    @worker_task("big", batch_poll_timeout=100, **worker_options)
    def big(task: Task) -> Dict[str, Any]:
        ran.append(task)
        return {}

    client = ConductorClient(Configuration(server_url=scripted.api, max_retries=0, **config))
    manager = TaskManager(client, [big])
    manager.start_polling()
    try:
        wait_until(lambda: scripted.count("POST", "tasks/update-v2"), 30, message="the failure report")
    finally:
        manager.stop_polling(timeout=5)
        client.close()
    (report,) = [r.json() for r in scripted.requests if r.path == "/api/tasks/update-v2"]
    return report, ran


def test_an_input_over_the_maximum_fails_the_task_with_its_size(scripted: ScriptedServer,
                                                                 storage: StorageServer) -> None:
    storage.huge("big", 64 * 1024 * KB)
    report, ran = _run_one_external_task(scripted, storage.url("big"), {"max_payload_kb": 1024, "read_timeout": 30})
    assert ran == []
    assert report["status"] == "FAILED_WITH_TERMINAL_ERROR"
    reason = report["reasonForIncompletion"]
    assert "not executed" in reason and str(64 * 1024 * KB) in reason and "max_payload_kb=1024" in reason
    assert storage.last().hung_up


def test_a_slow_input_download_is_bounded_by_the_workers_time_limit(scripted: ScriptedServer,
                                                                     storage: StorageServer) -> None:
    """time_limit=1 s bounds the download although download_timeout (60 s by default) would not."""
    storage.slow("slow", 400, interval=0.05)  # 20 s for the whole body
    report, ran = _run_one_external_task(scripted, storage.url("slow"), {"read_timeout": 5}, time_limit=1.0)
    assert ran == []
    assert report["status"] == "FAILED"  # retried by the server: the storage may be faster next time
    assert "not executed" in report["reasonForIncompletion"] and "within 1.0s" in report["reasonForIncompletion"]
    assert storage.last().hung_up
