"""What the API shows of a stored task: the ``Task`` JSON as the server serialises it (null
fields omitted, externalised payloads emptied, computed fields added)."""

from __future__ import annotations

from .model import JSON, _strip_nulls, now_ms
from .payloads import TASK_PAYLOADS, _externalized


def task_view(task: JSON) -> JSON:
    """The ``Task`` JSON as the server serialises it (null fields omitted, computed fields added)."""
    view = _externalized(_strip_nulls(task), TASK_PAYLOADS)
    workflow_task = task.get("workflowTask") or {}
    if workflow_task.get("taskDefinition") is not None:
        view["taskDefinition"] = workflow_task["taskDefinition"]
    view["queueWaitTime"] = _queue_wait_time(task)
    view["loopOverTask"] = (task.get("iteration") or 0) > 0
    return view


def _queue_wait_time(task: JSON) -> int:
    start, scheduled = task.get("startTime") or 0, task.get("scheduledTime") or 0
    if start > 0 and scheduled > 0:
        update, callback = task.get("updateTime") or 0, task.get("callbackAfterSeconds") or 0
        if update > 0 and callback > 0:
            return max(0, now_ms() - (update + callback * 1000))
        return start - scheduled
    return 0
