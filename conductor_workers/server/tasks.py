"""The task API: poll and long poll (a waiter per queue, notified the moment a task is pushed to
it), updates (a TaskResult, update-v2, by reference name, lease extension), task logs, queue
sizes and poll data (the engine's :class:`Tasks` mixin)."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

from .definitions import SYSTEM_TASK_TYPES
from .errors import BadRequest, NotFound
from .model import JSON, TASK_TERMINAL, WORKFLOW_TERMINAL, _strip_nulls, now_ms, queue_name
from .payloads import PayloadLimits
from .store import _Store
from .validation import check_task_result
from .views import task_view

log = logging.getLogger(__name__)


class Tasks:
    """The task API (a mixin of the engine)."""

    # what the engine provides
    _lock: Any
    _closed: bool
    _store: _Store
    _limits: PayloadLimits
    _queue_waiters: Dict[str, threading.Condition]
    _tx: Callable[[], Any]
    _load_workflow: Callable[[Any, str], JSON]
    _save_task: Callable[[JSON], None]
    _fail_oversized_output: Callable[[JSON], bool]
    _push: Callable[..., None]
    _decide: Callable[[JSON, List[JSON]], None]

    # Tasks: poll ----------------------------------------------------------------------------
    def poll(self, task_type: str, worker_id: Optional[str], domain: Optional[str],
             count: int = 1, timeout_ms: int = 0) -> List[JSON]:
        """Batch poll: return when ``count`` tasks were taken or ``timeout_ms`` has passed."""
        queue = queue_name(task_type, domain)
        deadline = time.monotonic() + timeout_ms / 1000.0
        taken: List[JSON] = []
        with self._lock:
            condition = self._queue_waiters.get(queue)
            if condition is None:
                condition = self._queue_waiters[queue] = threading.Condition(self._lock)
            with self._store.transaction():
                self._store.put_poll_data(task_type, domain or "", worker_id, now_ms())
            while not self._closed:
                with self._store.transaction():
                    taken.extend(self._take(queue, count - len(taken), worker_id))
                remaining = deadline - time.monotonic()
                if len(taken) >= count or remaining <= 0:
                    break
                condition.wait(self._wait_for_queue(queue, remaining))
        return [task_view(task) for task in taken]

    def _wait_for_queue(self, queue: str, remaining: float) -> float:
        next_due = self._store.next_due(queue)
        if next_due is None:
            return remaining
        return max(0.0, min(remaining, (next_due - now_ms()) / 1000.0 + 0.001))

    def _take(self, queue: str, count: int, worker_id: Optional[str]) -> List[JSON]:
        taken = []
        for task_id in self._store.pop(queue, count, now_ms()):
            task = self._store.get_task(task_id)
            if task is None or task["status"] in TASK_TERMINAL:
                continue
            now = now_ms()
            task["status"] = "IN_PROGRESS"
            if not task.get("startTime"):
                task["startTime"] = now
            task["callbackAfterSeconds"] = 0
            task["workerId"] = worker_id
            task["pollCount"] = (task.get("pollCount") or 0) + 1
            self._save_task(task)
            taken.append(task)
        return taken

    # Tasks: update --------------------------------------------------------------------------
    def update_task(self, raw: Any) -> Optional[JSON]:
        """Apply a TaskResult. Returns the stored task, or None for an ``extendLease`` update."""
        result = check_task_result(raw)
        with self._tx() as store:
            if result.get("extendLease"):
                self._extend_lease(store, result["taskId"])
                return None
            workflow = self._load_workflow(store, result["workflowInstanceId"])
            task = store.get_task(result["taskId"])
            if task is None:
                raise NotFound("No such task found by id: %s" % result["taskId"])
            if task["workflowInstanceId"] != workflow["workflowId"]:
                # conductor-oss updates the task, re-decides the workflow the request named and leaves
                # the task's own workflow to its sweeper (~30 s later); deciding the right one now
                # gets to the same state without the wait
                workflow = self._load_workflow(store, task["workflowInstanceId"])
            if task["status"] in TASK_TERMINAL or workflow["status"] in WORKFLOW_TERMINAL:
                store.remove_from_queue(task["taskId"])
                log.debug("update of %s ignored: task %s, workflow %s", task["taskId"], task["status"],
                          workflow["status"])
                return task
            self._apply_result(task, result)
            for entry in result.get("logs") or []:
                store.add_log(task["taskId"], entry.get("log") or "", entry.get("createdTime") or now_ms())
            if task["status"] not in TASK_TERMINAL:
                return task
            tasks = store.workflow_tasks(workflow["workflowId"])
            self._decide(workflow, tasks)
            return task

    def _extend_lease(self, store: _Store, task_id: str) -> None:
        task = store.get_task(task_id)
        if task is None:
            raise NotFound("No such task found by id: %s" % task_id)
        if task["status"] not in TASK_TERMINAL:
            self._save_task(task)  # restarts the response-timeout clock (updateTime = now)

    def _apply_result(self, task: JSON, result: JSON) -> None:
        status = result.get("status") or "IN_PROGRESS"
        system = task["taskType"] in SYSTEM_TASK_TYPES  # only a worker's task goes back to its queue
        task["status"] = "SCHEDULED" if status == "IN_PROGRESS" and not system else status
        reason = result.get("reasonForIncompletion")
        task["reasonForIncompletion"] = reason[:500] if reason else reason
        task["workerId"] = result.get("workerId")
        callback = result.get("callbackAfterSeconds") or 0
        task["callbackAfterSeconds"] = callback
        task["outputData"] = result.get("outputData") or {}
        task["subWorkflowId"] = result.get("subWorkflowId")
        task.pop("externalOutputPayloadStoragePath", None)
        uploaded = result.get("externalOutputPayloadStoragePath")
        if uploaded and not task["outputData"]:  # the worker uploaded its output to our storage
            body = self._store.get_payload(uploaded)
            if body is None:
                raise BadRequest("No payload found in external storage at path: %s" % uploaded)
            task["outputData"] = json.loads(body)
            task["externalOutputPayloadStoragePath"] = uploaded
        self._fail_oversized_output(task)
        if task["status"] in TASK_TERMINAL:
            self._store.remove_from_queue(task["taskId"])
            task["endTime"] = now_ms()
        elif not system:
            self._push(task, delay_ms=callback * 1000)
        self._save_task(task)

    def update_v2(self, raw: Any) -> Optional[JSON]:
        """``update-v2`` (3.32): update, then hand back the next task of that type if terminal."""
        task = self.update_task(raw)
        if task is None or task["status"] not in TASK_TERMINAL:
            return None
        polled = self.poll(task["taskType"], raw.get("workerId"), task.get("domain"), 1, 100)
        return polled[0] if polled else None

    def update_by_ref(self, workflow_id: str, ref_name: str, status: str, worker_id: Optional[str],
                      output: JSON) -> Optional[JSON]:
        """Update the first pending task with ``ref_name``; None when nothing is pending.

        An unknown workflow is "nothing pending" too: conductor-oss answers it with an empty 200.
        """
        with self._tx() as store:
            pending = self._pending_by_ref(store.workflow_tasks(workflow_id), ref_name)
            if pending is None:
                return None
            merged = dict(pending.get("outputData") or {})
            merged.update(output)
            result = {
                "workflowInstanceId": workflow_id, "taskId": pending["taskId"], "status": status,
                "reasonForIncompletion": pending.get("reasonForIncompletion"),
                "callbackAfterSeconds": pending.get("callbackAfterSeconds") or 0,
                "workerId": worker_id if worker_id and worker_id.strip() else pending.get("workerId"),
                "outputData": merged, "subWorkflowId": pending.get("subWorkflowId"),
            }
            return self.update_task(result)

    @staticmethod
    def _pending_by_ref(tasks: List[JSON], ref_name: str) -> Optional[JSON]:
        for task in tasks:
            if task["referenceTaskName"] == ref_name and task["status"] not in TASK_TERMINAL:
                return task
        stripped = re.sub(r"__\d+$", "", ref_name)  # DO_WHILE iteration suffix
        for task in tasks:
            same_ref = re.sub(r"__\d+$", "", task["referenceTaskName"]) == stripped
            if same_ref and task["status"] not in TASK_TERMINAL:
                return task
        return None

    # Tasks: queries and logs ----------------------------------------------------------------
    def get_task(self, task_id: str) -> JSON:
        with self._tx() as store:
            task = store.get_task(task_id)
        if task is None:
            raise NotFound("Task not found for taskId: %s" % task_id)
        return task_view(task)

    def add_log(self, task_id: str, text: str) -> None:
        with self._tx() as store:
            store.add_log(task_id, text, now_ms())

    def logs(self, task_id: str) -> List[JSON]:
        with self._tx() as store:
            return store.logs(task_id)

    def queue_sizes(self, task_types: Sequence[str]) -> Dict[str, int]:
        with self._tx() as store:
            return {task_type: store.queue_size(task_type) for task_type in task_types}

    def queue_size(self, task_type: str, domain: Optional[str]) -> int:
        with self._tx() as store:
            return store.queue_size(queue_name(task_type, domain))

    def all_queue_sizes(self) -> Dict[str, int]:
        with self._tx() as store:
            return store.queue_sizes()

    def poll_data(self, task_type: Optional[str]) -> List[JSON]:
        with self._tx() as store:
            rows = store.poll_data(task_type)
        return [_strip_nulls({"queueName": name, "domain": domain or None, "workerId": worker,
                              "lastPollTime": when}) for name, domain, worker, when in rows]
