"""Timeouts: the TaskDef a task runs with, the deadlines the sweeper wakes up for (a task's
response, run and poll timeouts, a workflow's timeout), and the checks the decider applies once
they have passed (the engine's :class:`Timeouts` mixin)."""

from __future__ import annotations

import logging
from typing import Optional

from .definitions import SYSTEM_TASK_TYPES
from .errors import _Terminate
from .fields import TASK_DEF_DEFAULTS
from .model import JSON, TASK_TERMINAL, WORKFLOW_TERMINAL, clamp_ms, now_ms
from .system_tasks import SYNTHETIC_TASK_DEF

log = logging.getLogger(__name__)


def _task_def_of(task: JSON) -> JSON:
    default = SYNTHETIC_TASK_DEF if task.get("taskType") in SYSTEM_TASK_TYPES else TASK_DEF_DEFAULTS
    return (task.get("workflowTask") or {}).get("taskDefinition") or dict(default)


def _task_deadline(task: JSON) -> Optional[int]:
    """When the sweeper must next look at ``task`` (response, task and poll timeouts)."""
    status = task["status"]
    if status in TASK_TERMINAL or task.get("retried") or task.get("executed"):
        return None
    if task.get("taskType") in SYSTEM_TASK_TYPES:  # the server runs them: only a WAIT's time counts
        return clamp_ms(task.get("waitTimeout")) if task.get("taskType") == "WAIT" else None
    task_def = _task_def_of(task)
    candidates = []
    callback_ms = (task.get("callbackAfterSeconds") or 0) * 1000
    start_delay_ms = (task.get("startDelayInSeconds") or 0) * 1000
    rto = task_def.get("responseTimeoutSeconds") or 0
    if status == "IN_PROGRESS" and rto > 0:
        candidates.append(task["updateTime"] + rto * 1000 + callback_ms)
    alerts_only = task_def.get("timeoutPolicy") == "ALERT_ONLY"
    timeout = task_def.get("timeoutSeconds") or 0
    if timeout > 0 and task.get("startTime", 0) > 0 and not alerts_only:
        candidates.append(task["startTime"] + start_delay_ms + timeout * 1000)
    poll_timeout = task_def.get("pollTimeoutSeconds") or 0
    if status == "SCHEDULED" and poll_timeout > 0 and not alerts_only:
        candidates.append(task["scheduledTime"] + start_delay_ms + poll_timeout * 1000 + callback_ms)
    return min(candidates) if candidates else None


def _workflow_deadline(workflow: JSON) -> Optional[int]:
    wf_def = workflow["workflowDefinition"]
    timeout = wf_def.get("timeoutSeconds") or 0
    if workflow["status"] in WORKFLOW_TERMINAL or timeout <= 0:
        return None
    if wf_def.get("timeoutPolicy") != "TIME_OUT_WF":
        return None
    base = workflow.get("lastRetriedTime") or workflow["createTime"]
    return base + timeout * 1000


class Timeouts:
    """The decider's timeout checks (a mixin of the engine)."""

    def _check_task_timeouts(self, task: JSON) -> bool:
        """Apply timeoutSeconds, pollTimeoutSeconds and responseTimeoutSeconds; True if changed."""
        if task["status"] in TASK_TERMINAL:
            return False
        task_def = _task_def_of(task)
        now = now_ms()
        start_delay_ms = (task.get("startDelayInSeconds") or 0) * 1000
        callback_ms = (task.get("callbackAfterSeconds") or 0) * 1000
        timeout = task_def.get("timeoutSeconds") or 0
        if timeout > 0 and (task.get("startTime") or 0) > 0:
            elapsed = now - (task["startTime"] + start_delay_ms)
            if elapsed >= timeout * 1000:
                reason = ("Task timed out after %d seconds. Timeout configured as %d seconds. "
                          "Timeout policy configured to %s"
                          % (elapsed // 1000, timeout, task_def["timeoutPolicy"]))
                if self._timeout_with_policy(task, task_def, reason):
                    return True
        poll_timeout = task_def.get("pollTimeoutSeconds") or 0
        if poll_timeout > 0 and task["status"] == "SCHEDULED":
            elapsed = now - (task["scheduledTime"] + start_delay_ms)
            if elapsed >= poll_timeout * 1000 + callback_ms:
                reason = ("Task poll timed out after %d seconds. Poll timeout configured as %d seconds. "
                          "Timeout policy configured to %s"
                          % (elapsed // 1000, poll_timeout, task_def["timeoutPolicy"]))
                if self._timeout_with_policy(task, task_def, reason):
                    return True
        rto = task_def.get("responseTimeoutSeconds") or 0
        silent_ms = now - task["updateTime"]
        if task["status"] == "IN_PROGRESS" and rto > 0 and silent_ms >= rto * 1000 + callback_ms:
            task["status"] = "TIMED_OUT"
            task["reasonForIncompletion"] = ("responseTimeout: %d exceeded for the taskId: %s with Task "
                                             "Definition: %s" % (rto, task["taskId"], task["taskDefName"]))
            return True
        return False

    @staticmethod
    def _timeout_with_policy(task: JSON, task_def: JSON, reason: str) -> bool:
        policy = task_def.get("timeoutPolicy") or "TIME_OUT_WF"
        if policy == "ALERT_ONLY":
            log.info("%s", reason)
            return False
        task["status"] = "TIMED_OUT"
        task["reasonForIncompletion"] = reason
        if policy == "TIME_OUT_WF":
            raise _Terminate(reason, "TIMED_OUT", task)
        return True

    def _check_workflow_timeout(self, workflow: JSON) -> None:
        deadline = _workflow_deadline(workflow)
        if deadline is None or now_ms() < deadline:
            return
        wf_def = workflow["workflowDefinition"]
        elapsed = now_ms() - (workflow.get("lastRetriedTime") or workflow["createTime"])
        raise _Terminate("Workflow timed out after %d seconds. Timeout configured as %d seconds. "
                         "Timeout policy configured to %s"
                         % (elapsed // 1000, wf_def["timeoutSeconds"], wf_def["timeoutPolicy"]), "TIMED_OUT")
