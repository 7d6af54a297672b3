"""What the API shows of a stored task: the ``Task`` JSON as the server serialises it (null
fields omitted, externalised payloads emptied, computed fields added)."""

from __future__ import annotations

from .model import JSON, _strip_nulls, queue_wait_time
from .payloads import TASK_PAYLOADS, _externalized


def task_view(task: JSON) -> JSON:
    """The ``Task`` JSON as the server serialises it (null fields omitted, computed fields added)."""
    view = _externalized(_strip_nulls(task), TASK_PAYLOADS)
    workflow_task = task.get("workflowTask") or {}
    if workflow_task.get("taskDefinition") is not None:
        view["taskDefinition"] = workflow_task["taskDefinition"]
    view["queueWaitTime"] = queue_wait_time(task)
    view["loopOverTask"] = (task.get("iteration") or 0) > 0
    return view
