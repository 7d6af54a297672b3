"""Conductor's vocabulary, shared by every module of the server: task and workflow statuses and
policies, ids, epoch-millisecond time and queue names, and small helpers of its messages."""

from __future__ import annotations

import time
import uuid
from typing import Any, Dict, Optional

JSON = Dict[str, Any]

TASK_STATUSES = (
    "IN_PROGRESS", "CANCELED", "FAILED", "FAILED_WITH_TERMINAL_ERROR", "COMPLETED",
    "COMPLETED_WITH_ERRORS", "SCHEDULED", "TIMED_OUT", "SKIPPED",
)
TASK_TERMINAL = frozenset(
    ("CANCELED", "FAILED", "FAILED_WITH_TERMINAL_ERROR", "COMPLETED", "COMPLETED_WITH_ERRORS",
     "TIMED_OUT", "SKIPPED")
)
TASK_SUCCESSFUL = frozenset(("IN_PROGRESS", "COMPLETED", "COMPLETED_WITH_ERRORS", "SCHEDULED", "SKIPPED"))
TASK_RETRIABLE = frozenset(
    ("IN_PROGRESS", "FAILED", "COMPLETED", "COMPLETED_WITH_ERRORS", "SCHEDULED", "TIMED_OUT")
)
RESULT_STATUSES = ("IN_PROGRESS", "FAILED", "FAILED_WITH_TERMINAL_ERROR", "COMPLETED", "CANCELED")
WORKFLOW_TERMINAL = frozenset(("COMPLETED", "FAILED", "TIMED_OUT", "TERMINATED"))
TIMEOUT_POLICIES = ("RETRY", "TIME_OUT_WF", "ALERT_ONLY")
RETRY_LOGICS = ("FIXED", "EXPONENTIAL_BACKOFF", "LINEAR_BACKOFF")
WORKFLOW_TIMEOUT_POLICIES = ("TIME_OUT_WF", "ALERT_ONLY")


def now_ms() -> int:
    """The current time as epoch milliseconds (Conductor's unit for every timestamp)."""
    return int(time.time() * 1000)


def new_id() -> str:
    return str(uuid.uuid4())


def queue_name(task_type: str, domain: Optional[str]) -> str:
    """``[domain:]taskType``, the server's queue name for a SIMPLE task."""
    return "%s:%s" % (domain, task_type) if domain else task_type


#: Epoch milliseconds are stored as SQLite integers: deadlines further out are kept at this (never).
MAX_MS = 2 ** 62


def clamp_ms(value: Optional[int]) -> Optional[int]:
    """A deadline or due time that SQLite can store and arithmetic on it cannot overflow."""
    return None if value is None else max(-MAX_MS, min(MAX_MS, value))


def queue_wait_time(task: JSON) -> int:
    """``Task.getQueueWaitTime``: how long the task waited in its queue before it started, in ms."""
    start, scheduled = task.get("startTime") or 0, task.get("scheduledTime") or 0
    if start > 0 and scheduled > 0:
        update, callback = task.get("updateTime") or 0, task.get("callbackAfterSeconds") or 0
        if update > 0 and callback > 0:
            return max(0, now_ms() - (update + callback * 1000))
        return start - scheduled
    return 0


def _strip_nulls(obj: JSON) -> JSON:
    return {key: value for key, value in obj.items() if value is not None}


def _short(workflow: JSON) -> str:
    wf_def = workflow["workflowDefinition"]
    return "%s.%s/%s" % (wf_def["name"], wf_def["version"], workflow["workflowId"])


def _long(workflow: JSON) -> str:
    return "%s.%s" % (_short(workflow), workflow["status"])


def _java_str(value: Any) -> str:
    """``String.valueOf`` as Java prints it (``null`` for None)."""
    return "null" if value is None else str(value)
