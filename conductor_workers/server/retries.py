"""Retries: the delay before a failed task's next attempt (FIXED, LINEAR_BACKOFF or
EXPONENTIAL_BACKOFF, capped, plus jitter) and that attempt itself (DeciderService.retry; the
engine's :class:`Retries` mixin)."""

from __future__ import annotations

import copy
import random
from typing import List, Optional

from .definitions import BUILT_IN_TYPES
from .errors import _Terminate
from .expressions import expression_document, resolve_task_input
from .model import JSON, TASK_RETRIABLE, _java_str, new_id
from .timeouts import _task_def_of


def _retry_delay_seconds(task_def: JSON, retry_count: int) -> int:
    base = task_def.get("retryDelaySeconds") or 0
    logic = task_def.get("retryLogic") or "FIXED"
    if logic == "LINEAR_BACKOFF":
        delay = base * (task_def.get("backoffScaleFactor") or 1) * (retry_count + 1)
    elif logic == "EXPONENTIAL_BACKOFF":
        delay = base * 2 ** retry_count
    else:
        delay = base
    cap = task_def.get("maxRetryDelaySeconds") or 0
    return min(delay, cap) if cap > 0 else delay


class Retries:
    """New attempts of failed tasks (a mixin of the engine)."""

    def _retry(self, workflow: JSON, tasks: List[JSON], task: JSON) -> Optional[JSON]:
        """DeciderService.retry: a new attempt, None (optional task), or _Terminate."""
        task_def = _task_def_of(task)
        workflow_task = task["workflowTask"]
        expected = workflow_task.get("retryCount")
        if expected is None:
            expected = task_def.get("retryCount", 3)
        if task["taskType"] in BUILT_IN_TYPES:
            expected = 0
        if task["status"] not in TASK_RETRIABLE or expected <= task["retryCount"]:
            if workflow_task.get("optional") or workflow_task.get("permissive"):
                return None
            status = {"CANCELED": "TERMINATED", "TIMED_OUT": "TIMED_OUT"}.get(task["status"], "FAILED")
            raise _Terminate("Task %s failed with status: %s and reason: '%s'"
                             % (task["taskId"], status, _java_str(task.get("reasonForIncompletion"))),
                             status, task)
        delay_ms = _retry_delay_seconds(task_def, task["retryCount"]) * 1000
        jitter = task_def.get("backoffJitterMs") or 0
        if jitter > 0:
            delay_ms += random.randint(0, jitter)
        task["retried"] = True
        retry = self._copy_for_retry(workflow, tasks, task, delay=delay_ms // 1000)
        retry["reasonForIncompletion"] = task.get("reasonForIncompletion")
        retry["_delayMs"] = delay_ms
        return retry

    def _copy_for_retry(self, workflow: JSON, tasks: List[JSON], task: JSON, delay: int) -> JSON:
        retry = copy.deepcopy(task)
        retry.update(
            taskId=new_id(), retriedTaskId=task["taskId"], status="SCHEDULED",
            retryCount=task["retryCount"] + 1, retried=False, executed=False, pollCount=0,
            seq=0, scheduledTime=0, startTime=0, endTime=0, updateTime=0, workerId=None,
            outputData={}, reasonForIncompletion=None, subWorkflowId=None,
            startDelayInSeconds=delay, callbackAfterSeconds=delay,
        )
        document = expression_document(workflow, tasks)
        retry["inputData"].update(resolve_task_input(task["workflowTask"], _task_def_of(task), document))
        return retry
