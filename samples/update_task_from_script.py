"""Complete tasks from a script, outside any worker: by task id and by reference name.

    python samples/update_task_from_script.py

The JavaScript SDK worker guide's ``executor.getTask``, ``executor.updateTask`` and ``executor.updateTaskByRefName`` in
Python: a workflow with two tasks that no worker polls for; this script polls the first and
completes it by id, then completes the second by the workflow id and its reference name.
"""
from __future__ import annotations

import sys
import time

from _common import conductor_client
from conductor_workers import TaskDef, TaskResultStatus, WorkflowDef, WorkflowExecutor, WorkflowStatus, WorkflowTask

WORKFLOW = "cw_approval"


def main() -> int:
    with conductor_client() as client:
        client.metadata.register_task_defs([TaskDef(name="cw_collect"), TaskDef(name="cw_approve")])
        executor = WorkflowExecutor(client)
        executor.register_workflow(
            WorkflowDef(
                name=WORKFLOW,
                tasks=[
                    WorkflowTask(name="cw_collect", task_reference_name="collect"),
                    WorkflowTask(name="cw_approve", task_reference_name="approve"),
                ],
                output_parameters={"approved_by": "${approve.output.approved_by}"},
            ),
            overwrite=True,
        )
        workflow_id = executor.start_workflow(WORKFLOW, {"request": "new laptop"}, version=1)

        # By task id: find the task (here by polling its queue, as an external system would).
        deadline = time.monotonic() + 10
        task = None
        while task is None and time.monotonic() < deadline:
            task = client.tasks.poll("cw_collect", worker_id="script")
        if task is None:
            print("the first task never became pollable")
            return 1
        print("got task", executor.get_task(task.task_id).reference_task_name)
        executor.update_task(task.task_id, workflow_id, "COMPLETED", {"items": ["laptop"]})

        # By reference name: no task id needed, only the workflow id (output is merged).
        executor.update_task_by_ref_name("approve", workflow_id, TaskResultStatus.COMPLETED, {"approved_by": "ada"})
        workflow = executor.wait_for_workflow(workflow_id, timeout=30)
    print(f"{workflow.status}: {workflow.output}")
    return 0 if workflow.status is WorkflowStatus.COMPLETED and workflow.output == {"approved_by": "ada"} else 1


if __name__ == "__main__":
    sys.exit(main())
