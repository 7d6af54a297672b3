"""A long-running task: the worker answers IN_PROGRESS with a callback until the job is done.

    python samples/long_running.py

The worker checks a (simulated) external job each time the server hands the task back; while the
job runs it returns ``TaskResult.in_progress(callback_after_seconds=1, ...)`` so that the server
re-queues the task for a second later instead of holding a thread. The JavaScript SDK's worker guide example
(``status: "IN_PROGRESS", callbackAfterSeconds: 60``) in Python.
"""
from __future__ import annotations

import sys
import time

from _common import conductor_client
from conductor_workers import (
    Task,
    TaskDef,
    TaskManager,
    TaskResult,
    WorkflowDef,
    WorkflowExecutor,
    WorkflowStatus,
    WorkflowTask,
    Worker,
)

WORKFLOW = "cw_long_running"
JOB_SECONDS = 2.5


class ExportReport(Worker):
    """Starts an 'export' on first delivery, then reports progress until it has finished."""

    task_def_name = "cw_export_report"
    poll_interval = 100  # milliseconds
    concurrency = 2

    def execute(self, task: Task) -> TaskResult:
        started_at = task.output_data.get("started_at") or time.time()
        elapsed = time.time() - started_at
        if elapsed < JOB_SECONDS:
            progress = {"started_at": started_at, "progress": round(elapsed / JOB_SECONDS, 2)}
            return TaskResult.in_progress(callback_after_seconds=1, output=progress)
        return TaskResult.complete({"started_at": started_at, "url": f"https://reports.example/{task.task_id}"})


def main() -> int:
    with conductor_client() as client:
        client.metadata.register_task_defs([TaskDef(name=ExportReport.task_def_name, response_timeout_seconds=10)])
        executor = WorkflowExecutor(client)
        executor.register_workflow(
            WorkflowDef(name=WORKFLOW, tasks=[WorkflowTask(name=ExportReport.task_def_name, task_reference_name="export")]),
            overwrite=True,
        )
        with TaskManager(client, [ExportReport()]):
            workflow_id = executor.start_workflow(WORKFLOW, {}, version=1)
            workflow = executor.wait_for_workflow(workflow_id, timeout=60)
    task = workflow.task_by_ref("export")
    print(f"{workflow.status}: delivered {task.poll_count if task else '?'} times, output {workflow.output}")
    return 0 if workflow.status is WorkflowStatus.COMPLETED and task and task.poll_count >= 2 else 1


if __name__ == "__main__":
    sys.exit(main())
