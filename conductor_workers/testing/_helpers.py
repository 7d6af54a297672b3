"""Run a worker on one task input without a server, exactly as a runner would."""
from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Optional

import attrs

from ..models import Task, TaskResult, TaskResultStatus, TaskStatus
from ..worker import Worker, run_task


def run_worker(
    worker: Worker,
    input_data: Optional[Mapping[str, Any]] = None,
    *,
    task: Optional[Task] = None,
    **task_fields: Any,
) -> TaskResult:
    """Execute ``worker`` once and return the TaskResult a runner would report.

    Give either ``input_data`` (a task is made up around it: ids ``test-task``/``test-workflow``,
    the worker's task type, ``pollCount`` 1; override any of them with keyword arguments such as
    ``retry_count=2``) or a complete ``task``. Exceptions become FAILED results, ``NonRetryableError``
    FAILED_WITH_TERMINAL_ERROR, and an output that is not JSON-serialisable FAILED, as on a server.
    """
    if task is None:
        fields: Dict[str, Any] = {
            "task_id": "test-task",
            "workflow_instance_id": "test-workflow",
            "task_type": worker.task_def_name,
            "task_def_name": worker.task_def_name,
            "reference_task_name": worker.task_def_name,
            "status": TaskStatus.IN_PROGRESS,
            "poll_count": 1,
            "input_data": dict(input_data or {}),
        }
        fields.update(task_fields)
        task = Task(**fields)
    result, _ = run_task(worker, task)
    try:
        json.dumps(result.output_data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        result = attrs.evolve(
            result,
            status=TaskResultStatus.FAILED,
            output_data={},
            reason_for_incompletion=f"the worker's output is not JSON-serialisable: {exc}",
        )
    return result
