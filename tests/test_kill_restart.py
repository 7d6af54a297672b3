"""SIGKILL a file-backed LocalConductor mid-run, start it again on the same file: nothing is lost.

The server runs as ``python -m conductor_workers server --db FILE`` in its own process; our workers
keep running through the outage (their polls and updates fail, back off and recover), and every
workflow started before the kill completes after the restart.
"""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator, List

import pytest

from conductor_workers import (
    ConductorClient,
    Configuration,
    TaskDef,
    TaskManager,
    WorkflowDef,
    WorkflowExecutor,
    WorkflowStatus,
    WorkflowTask,
    worker_task,
)

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(db: Path, port: int) -> "subprocess.Popen[str]":
    proc = subprocess.Popen(
        [sys.executable, "-m", "conductor_workers", "server", "--port", str(port), "--db", str(db)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "listening on" in line, f"server did not start: {line!r}"
    return proc


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[List["subprocess.Popen[str]"]]:
    processes: List["subprocess.Popen[str]"] = []
    yield processes
    for proc in processes:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_sigkill_and_restart_on_the_same_file_loses_nothing(tmp_path: Path, server_process: list) -> None:
    db, port = tmp_path / "conductor.db", free_port()
    url = f"http://127.0.0.1:{port}/api"
    server_process.append(start_server(db, port))
    suffix = uuid.uuid4().hex[:8]
    first, second = f"kill_a_{suffix}", f"kill_b_{suffix}"
    executed: List[str] = []
    lock = threading.Lock()

    def work(task_name: str):  # type: ignore[no-untyped-def]
        @worker_task(task_name, concurrency=4, poll_interval=50)
        def step(task):  # type: ignore[no-untyped-def]
            time.sleep(0.05)
            with lock:
                executed.append(task.task_id)
            return {"step": task_name, "n": task.input_data.get("n")}

        return step

    client = ConductorClient(Configuration(server_url=url, max_retries=0, connect_timeout=1, read_timeout=5))
    client.metadata.register_task_defs(
        [TaskDef(name=name, retry_count=3, retry_delay_seconds=0, response_timeout_seconds=5) for name in (first, second)]
    )
    WorkflowExecutor(client).register_workflow(
        WorkflowDef(
            name=f"kill_wf_{suffix}",
            tasks=[
                WorkflowTask(name=first, task_reference_name="a", input_parameters={"n": "${workflow.input.n}"}),
                WorkflowTask(name=second, task_reference_name="b", input_parameters={"n": "${a.output.n}"}),
            ],
            output_parameters={"n": "${b.output.n}"},
        )
    )
    executor = WorkflowExecutor(client)
    ids = [executor.start_workflow(f"kill_wf_{suffix}", {"n": n}) for n in range(40)]

    with TaskManager(client, [work(first), work(second)]) as manager:
        deadline = time.monotonic() + 30
        while len(executed) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert executed, "the workers never ran a task"
        server_process[0].send_signal(signal.SIGKILL)  # mid-run: tasks in flight, updates pending
        server_process[0].wait(timeout=10)
        time.sleep(2)  # the workers see a dead server for a while
        server_process.append(start_server(db, port))
        results = [executor.wait_for_workflow(workflow_id, timeout=90) for workflow_id in ids]
        status = manager.status()

    assert [wf.status for wf in results] == [WorkflowStatus.COMPLETED] * len(ids)
    assert [wf.output["n"] for wf in results] == list(range(len(ids)))
    assert any(worker.last_error for worker in status.values()), "the outage should show in status()"
    client.close()
