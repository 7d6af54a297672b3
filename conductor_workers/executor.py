"""``WorkflowExecutor``: scripting workflows and tasks from outside a worker.

The Python counterpart of the JavaScript SDK's ``WorkflowExecutor`` (``getTask``, ``updateTask``,
``updateTaskByRefName``), with the same argument order, plus the workflow calls a script needs.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import attrs

from . import _validate
from .client import ConductorClient, StatusLike
from .errors import ConductorError, WorkflowTimeoutError
from .models import (
    SignalResponse,
    StartWorkflowRequest,
    Task,
    TaskResult,
    TaskResultStatus,
    Workflow,
    WorkflowDef,
    WorkflowStatusSummary,
)


class WorkflowExecutor:
    """Start, inspect and steer workflows, and complete their tasks by id or by reference name."""

    def __init__(self, client: ConductorClient, *, propagate_trace: bool = False, tracer_provider: Any = None) -> None:
        """``propagate_trace=True`` (the ``otel`` extra): :meth:`start_workflow` runs in a
        ``start_workflow {name}`` span and puts its W3C trace context into the workflow input
        (key ``traceContext``, see :mod:`conductor_workers.tracing`)."""
        self.client = client
        self.propagate_trace = propagate_trace
        self._tracer_provider = tracer_provider
        if propagate_trace:
            from .tracing import _require

            _require()

    # -- tasks -------------------------------------------------------------------------------------

    def get_task(self, task_id: str, include_external: bool = False) -> Task:
        """The task; ``include_external=True`` downloads input/output kept in external storage."""
        return self.client.tasks.get_task(task_id, include_external=include_external)

    def update_task(
        self, task_id: str, workflow_instance_id: str, status: StatusLike, output: Optional[Mapping[str, Any]] = None
    ) -> str:
        """Report ``status`` with ``output`` for a task by its id (the JavaScript SDK's ``updateTask``)."""
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
        """Update the pending task ``task_reference_name`` of a workflow (the JavaScript SDK's ``updateTaskByRefName``).

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

    def signal(self, workflow_id: str, status: StatusLike, output: Optional[Mapping[str, Any]] = None) -> None:
        """Complete (or fail) the workflow's blocked WAIT task (also one in a running sub-workflow)."""
        self.client.tasks.signal(workflow_id, status, output)

    def signal_sync(
        self,
        workflow_id: str,
        status: StatusLike,
        output: Optional[Mapping[str, Any]] = None,
        return_strategy: Optional[str] = None,
        timeout_ms: Optional[int] = None,
    ) -> Optional[SignalResponse]:
        """:meth:`signal`, then wait until the workflow blocks again or ends; NotFoundError if nothing blocks."""
        return self.client.tasks.signal_sync(
            workflow_id, status, output, return_strategy=return_strategy, timeout_ms=timeout_ms
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
        if self.propagate_trace:
            from .tracing import inject_trace_context, start_workflow_span

            name = request.name if isinstance(request, StartWorkflowRequest) else request
            with start_workflow_span(name, self._tracer_provider) as span:
                if isinstance(request, StartWorkflowRequest):
                    request = attrs.evolve(request, input=inject_trace_context(request.input))
                else:
                    input = inject_trace_context(input)
                workflow_id = self._start(request, input, version, correlation_id, priority)
                span.set_attribute("conductor.workflow.id", workflow_id)
                return workflow_id
        return self._start(request, input, version, correlation_id, priority)

    def _start(
        self,
        request: Union[StartWorkflowRequest, str],
        input: Optional[Mapping[str, Any]],
        version: Optional[int],
        correlation_id: Optional[str],
        priority: int,
    ) -> str:
        if isinstance(request, StartWorkflowRequest):
            return self.client.workflows.start(request)
        return self.client.workflows.start_by_name(
            request, input, version=version, correlation_id=correlation_id, priority=priority
        )

    def execute_workflow(
        self,
        request: StartWorkflowRequest,
        wait_until_task_ref: Optional[Union[str, Sequence[str]]] = None,
        wait_for_seconds: int = 10,
        request_id: Optional[str] = None,
        return_strategy: Optional[str] = None,
    ) -> Optional[SignalResponse]:
        """Start a workflow synchronously: the answer comes when it ends, blocks on a WAIT, or a task of
        ``wait_until_task_ref`` is done, after ``wait_for_seconds`` at the latest (``signal_timeout``)."""
        return self.client.workflows.execute(
            request,
            wait_until_task_ref=wait_until_task_ref,
            wait_for_seconds=wait_for_seconds,
            request_id=request_id,
            return_strategy=return_strategy,
        )

    def test_workflow(
        self,
        request: StartWorkflowRequest,
        task_ref_to_mock_output: Optional[Mapping[str, Sequence[Mapping[str, Any]]]] = None,
        sub_workflow_test_request: Optional[Mapping[str, Mapping[str, Any]]] = None,
    ) -> Workflow:
        """Run a workflow on the server with mocked outputs for its worker tasks (see WorkflowClient.test)."""
        return self.client.workflows.test(request, task_ref_to_mock_output, sub_workflow_test_request)

    def get_workflow_status(
        self, workflow_id: str, include_output: bool = False, include_variables: bool = False
    ) -> WorkflowStatusSummary:
        return self.client.workflows.get_status(workflow_id, include_output, include_variables)

    def get_by_correlation_id(
        self, name: str, correlation_id: str, include_closed: bool = False, include_tasks: bool = False
    ) -> List[Workflow]:
        return self.client.workflows.get_by_correlation_id(name, correlation_id, include_closed, include_tasks)

    def get_by_correlation_ids(
        self, name: str, correlation_ids: Sequence[str], include_closed: bool = False, include_tasks: bool = False
    ) -> Dict[str, List[Workflow]]:
        return self.client.workflows.get_by_correlation_ids(name, correlation_ids, include_closed, include_tasks)

    def skip_task(self, workflow_id: str, task_reference_name: str) -> None:
        """Skip a task of a running workflow that is not scheduled yet."""
        self.client.workflows.skip_task(workflow_id, task_reference_name)

    def rerun(
        self,
        workflow_id: str,
        from_task_id: Optional[str] = None,
        task_input: Optional[Mapping[str, Any]] = None,
        workflow_input: Optional[Mapping[str, Any]] = None,
        correlation_id: Optional[str] = None,
    ) -> str:
        """Run a terminal workflow again from one of its tasks (or from the start); returns its id."""
        return self.client.workflows.rerun(
            workflow_id,
            from_task_id,
            task_input=task_input,
            workflow_input=workflow_input,
            correlation_id=correlation_id,
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
        ``timeout`` (>= 0) and ``poll_interval`` (> 0) are finite seconds, at most 30 days
        (InvalidOptionError otherwise, before the server is asked).
        """
        timeout = _validate.seconds("timeout", timeout)
        poll_interval = _validate.seconds("poll_interval", poll_interval, positive=True)
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
