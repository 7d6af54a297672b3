"""``WorkflowExecutor``: scripting workflows and tasks from outside a worker.

The Python counterpart of the JavaScript SDK's ``WorkflowExecutor`` (``getTask``, ``updateTask``,
``updateTaskByRefName``), with the same argument order, plus the workflow calls a script needs.
"""
from __future__ import annotations

import time
from typing import Any, Mapping, Optional, Union

from .client import ConductorClient, StatusLike
from .errors import ConductorError
from .models import StartWorkflowRequest, Task, TaskResult, TaskResultStatus, Workflow, WorkflowDef


class WorkflowTimeoutError(ConductorError, TimeoutError):
    """A workflow did not reach a terminal status in time."""

    def __init__(self, message: str, workflow: Workflow) -> None:
        super().__init__(message)
        self.workflow = workflow


class WorkflowExecutor:
    """Start, inspect and steer workflows, and complete their tasks by id or by reference name."""

    def __init__(self, client: ConductorClient) -> None:
        self.client = client

    # -- tasks -------------------------------------------------------------------------------------

    def get_task(self, task_id: str, include_external: bool = False) -> Task:
        """The task; ``include_external=True`` downloads input/output kept in external storage."""
        return self.client.tasks.get_task(task_id, include_external=include_external)

    def update_task(
        self, task_id: str, workflow_instance_id: str, status: StatusLike, output: Optional[Mapping[str, Any]] = None
    ) -> str:
        """Report ``status`` with ``output`` for a task by its id (the seed's ``updateTask``)."""
        result = TaskResult(
            task_id=task_id,
            workflow_instance_id=workflow_instance_id,
            status=TaskResultStatus.coerce(status),
            output_data=dict(output or {}),
        )
        return self.client.tasks.update_task(result)

    def update_task_by_ref_name(
        self,
        task_reference_name: str,
        workflow_instance_id: str,
        status: StatusLike,
        output: Optional[Mapping[str, Any]] = None,
    ) -> str:
        """Update the pending task ``task_reference_name`` of a workflow (the seed's ``updateTaskByRefName``).

        ``output`` is merged into the task's output. Raises NotFoundError when no such task is pending.
        """
        return self.client.tasks.update_task_by_ref_name(
            workflow_id=workflow_instance_id,
            ref_name=task_reference_name,
            status=TaskResultStatus.coerce(status),
            output=output,
        )

    def update_task_by_ref_name_sync(
        self,
        task_reference_name: str,
        workflow_instance_id: str,
        status: StatusLike,
        output: Optional[Mapping[str, Any]] = None,
    ) -> Workflow:
        """Like :meth:`update_task_by_ref_name`, returning the workflow after the update."""
        return self.client.tasks.update_task_by_ref_name_sync(
            workflow_id=workflow_instance_id,
            ref_name=task_reference_name,
            status=TaskResultStatus.coerce(status),
            output=output,
        )

    # -- workflows ---------------------------------------------------------------------------------

    def register_workflow(self, workflow_def: WorkflowDef, overwrite: bool = False) -> None:
        self.client.metadata.register_workflow_def(workflow_def, overwrite=overwrite)

    def start_workflow(
        self,
        request: Union[StartWorkflowRequest, str],
        input: Optional[Mapping[str, Any]] = None,
        version: Optional[int] = None,
        correlation_id: Optional[str] = None,
        priority: int = 0,
    ) -> str:
        """Start a workflow from a :class:`StartWorkflowRequest`, or by name with ``input``."""
        if isinstance(request, StartWorkflowRequest):
            return self.client.workflows.start(request)
        return self.client.workflows.start_by_name(
            request, input, version=version, correlation_id=correlation_id, priority=priority
        )

    def get_workflow(self, workflow_id: str, include_tasks: bool = True, include_external: bool = False) -> Workflow:
        """The workflow; ``include_external=True`` downloads input/output kept in external storage."""
        return self.client.workflows.get(workflow_id, include_tasks=include_tasks, include_external=include_external)

    def terminate(self, workflow_id: str, reason: Optional[str] = None) -> None:
        self.client.workflows.terminate(workflow_id, reason)

    def pause(self, workflow_id: str) -> None:
        self.client.workflows.pause(workflow_id)

    def resume(self, workflow_id: str) -> None:
        self.client.workflows.resume(workflow_id)

    def retry(self, workflow_id: str) -> None:
        self.client.workflows.retry(workflow_id)

    def restart(self, workflow_id: str, use_latest_definitions: bool = False) -> None:
        self.client.workflows.restart(workflow_id, use_latest_definitions)

    def wait_for_workflow(
        self,
        workflow_id: str,
        timeout: float = 30.0,
        poll_interval: float = 0.05,
        include_tasks: bool = True,
        include_external: bool = False,
    ) -> Workflow:
        """Block until the workflow is terminal and return it; WorkflowTimeoutError after ``timeout`` s.

        ``include_external=True`` downloads, once it is terminal, input/output kept in external storage.
        """
        deadline = time.monotonic() + timeout
        interval = poll_interval
        while True:
            workflow = self.get_workflow(workflow_id, include_tasks=include_tasks)
            if workflow.is_terminal:
                if include_external:
                    return self.get_workflow(workflow_id, include_tasks=include_tasks, include_external=True)
                return workflow
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkflowTimeoutError(
                    f"workflow {workflow_id} is still {getattr(workflow.status, 'value', workflow.status)}"
                    f" after {timeout:.1f}s",
                    workflow,
                )
            time.sleep(min(interval, remaining))
            interval = min(interval * 1.5, 1.0)


__all__ = ["WorkflowExecutor", "WorkflowTimeoutError"]
