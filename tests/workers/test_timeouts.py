"""Lease extension: a task running past its responseTimeoutSeconds survives only with ``lease_extend``.

The lease is extended every 80 % of ``responseTimeoutSeconds`` (``LEASE_FRACTION``), so the margin
an extension has to reach the server in time is the other 20 %: with a 5 s response timeout that
is 1 s, enough for a loaded machine (with 2 s it was 0.4 s). The task runs for 2.5 response
timeouts, so it survives only because of the extensions; the control case, the same task without
``lease_extend``, times out.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Dict, List

import pytest
from support.workers import Env

from conductor_workers import Task, TaskStatus, WorkflowStatus, worker_task
from conductor_workers._lease import LEASE_FRACTION

RESPONSE_TIMEOUT = 5
WORK_SECONDS = 2.5 * RESPONSE_TIMEOUT  # past two whole response timeouts: three extensions (at 4, 8, 12 s)


def _extensions(caplog: pytest.LogCaptureFixture, task_id: str) -> int:
    return sum(1 for r in caplog.records if r.getMessage().endswith(f"extended the lease of task {task_id}"))


def test_lease_extension_keeps_a_long_task_alive(any_env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="conductor_workers.runner")
    flow = any_env.flow("lease", retry_count=1, response_timeout_seconds=RESPONSE_TIMEOUT, timeout_seconds=0)
    executed: List[str] = []
    ran_for: List[float] = []

    @worker_task(flow.task_name, lease_extend=True, batch_poll_timeout=500)
    def long_job(task: Task) -> Dict[str, Any]:
        executed.append(task.task_id)
        started = time.monotonic()
        time.sleep(WORK_SECONDS)
        ran_for.append(time.monotonic() - started)
        return {"slept": WORK_SECONDS}

    manager = any_env.manager([long_job])
    manager.start_polling()
    workflow = any_env.wait(flow.start())
    assert workflow.status is WorkflowStatus.COMPLETED, workflow.reason_for_incompletion
    (task,) = workflow.tasks  # never timed out and retried
    assert task.status is TaskStatus.COMPLETED
    assert task.output_data == {"slept": WORK_SECONDS}
    assert executed == [task.task_id]
    assert ran_for[0] >= 2 * RESPONSE_TIMEOUT  # it outlived two response timeouts ...
    # ... because its lease was extended, every LEASE_FRACTION of the timeout: at 0.8, 1.6 (and 2.4) timeouts
    assert LEASE_FRACTION == 0.8
    assert _extensions(caplog, task.task_id) >= 2
    assert manager.status()[flow.task_name].reports_failed == 0


def test_without_lease_extension_a_long_task_times_out_and_is_retried(
    any_env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="conductor_workers.runner")
    flow = any_env.flow("nolease", retry_count=1, response_timeout_seconds=RESPONSE_TIMEOUT, timeout_seconds=0)
    executed: List[Task] = []
    release = threading.Event()

    @worker_task(flow.task_name, concurrency=2, batch_poll_timeout=500)
    def long_job(task: Task) -> Dict[str, Any]:
        executed.append(task)
        if task.retry_count == 0:
            release.wait(WORK_SECONDS)
            return {"late": True}
        return {"retried": True}

    manager = any_env.manager([long_job])
    manager.start_polling()
    workflow = any_env.wait(flow.start())
    release.set()
    assert workflow.status is WorkflowStatus.COMPLETED, workflow.reason_for_incompletion
    first, second = workflow.tasks
    assert first.status is TaskStatus.TIMED_OUT
    assert second.status is TaskStatus.COMPLETED
    assert second.task_id != first.task_id
    assert second.output_data == {"retried": True}
    assert _extensions(caplog, first.task_id) == 0
    # the late result of the timed-out attempt does not change it
    manager.stop_polling(timeout=10)
    assert any_env.executor.get_task(first.task_id).status is TaskStatus.TIMED_OUT
