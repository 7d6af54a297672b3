"""Lease extension: a task running past its responseTimeoutSeconds survives only with ``lease_extend``."""
from __future__ import annotations

import threading
import time
from typing import Any, Dict, List

from workers_support import Env

from conductor_workers import Task, TaskStatus, WorkflowStatus, worker_task

RESPONSE_TIMEOUT = 2
WORK_SECONDS = 4.0


def test_lease_extension_keeps_a_long_task_alive(any_env: Env) -> None:
    flow = any_env.flow("lease", retry_count=1, response_timeout_seconds=RESPONSE_TIMEOUT, timeout_seconds=0)
    executed: List[str] = []

    @worker_task(flow.task_name, lease_extend=True, batch_poll_timeout=500)
    def long_job(task: Task) -> Dict[str, Any]:
        executed.append(task.task_id)
        time.sleep(WORK_SECONDS)
        return {"slept": WORK_SECONDS}

    manager = any_env.manager([long_job])
    manager.start_polling()
    workflow = any_env.wait(flow.start())
    assert workflow.status is WorkflowStatus.COMPLETED, workflow.reason_for_incompletion
    (task,) = workflow.tasks
    assert task.status is TaskStatus.COMPLETED
    assert task.output_data == {"slept": WORK_SECONDS}
    assert executed == [task.task_id]
    assert manager.status()[flow.task_name].reports_failed == 0


def test_without_lease_extension_a_long_task_times_out_and_is_retried(any_env: Env) -> None:
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
    # the late result of the timed-out attempt does not change it
    manager.stop_polling(timeout=10)
    assert any_env.executor.get_task(first.task_id).status is TaskStatus.TIMED_OUT
