"""OpenTelemetry tracing: one trace from the code that starts a workflow through every worker.

    pip install "conductor-workers[otel]" opentelemetry-sdk
    python samples/tracing.py

The starter uses ``WorkflowExecutor(client, propagate_trace=True)``: ``start_workflow`` runs in a
``start_workflow {name}`` span and puts its W3C trace context into the workflow input under
``traceContext``. The workflow definition passes that key on to each task, and the workers run
with ``TracingMiddleware``, so each execution span is a child of the start span. This sample
prints the spans as a tree; a real service would export them (OTLP) instead.
"""
from __future__ import annotations

import sys
from typing import Any, Dict, List

from _common import conductor_client
from conductor_workers import (
    TaskDef,
    TaskManager,
    WorkflowDef,
    WorkflowExecutor,
    WorkflowStatus,
    WorkflowTask,
    worker_task,
)

try:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from conductor_workers.tracing import TRACE_CONTEXT_KEY, TracingMiddleware
except ImportError:
    sys.exit('this sample needs: pip install "conductor-workers[otel]" opentelemetry-sdk')

WORKFLOW = "cw_traced_order"
STEPS = ["cw_traced_reserve", "cw_traced_charge", "cw_traced_ship"]


@worker_task(STEPS[0])
def reserve(order: str) -> Dict[str, Any]:
    return {"reserved": order}


@worker_task(STEPS[1])
def charge(order: str) -> Dict[str, Any]:
    return {"charged": order}


@worker_task(STEPS[2])
def ship(order: str) -> Dict[str, Any]:
    return {"shipped": order}


def main() -> int:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with conductor_client() as client:
        client.metadata.register_task_defs([TaskDef(name=name) for name in STEPS])
        executor = WorkflowExecutor(client, propagate_trace=True, tracer_provider=provider)
        inputs = {"order": "${workflow.input.order}", TRACE_CONTEXT_KEY: "${workflow.input.%s}" % TRACE_CONTEXT_KEY}
        executor.register_workflow(
            WorkflowDef(
                name=WORKFLOW,
                tasks=[WorkflowTask(name=n, task_reference_name=n, input_parameters=inputs) for n in STEPS],
            ),
            overwrite=True,
        )
        with TaskManager(client, [reserve, charge, ship], middleware=[TracingMiddleware(provider)]):
            workflow_id = executor.start_workflow(WORKFLOW, {"order": "A-17"}, version=1)
            workflow = executor.wait_for_workflow(workflow_id, timeout=60)
    provider.force_flush()
    spans = exporter.get_finished_spans()
    by_parent: Dict[Any, List[Any]] = {}
    for span in spans:
        by_parent.setdefault(span.parent.span_id if span.parent else None, []).append(span)

    def show(parent: Any, depth: int) -> None:
        for span in sorted(by_parent.get(parent, []), key=lambda s: s.start_time):
            status = span.attributes.get("conductor.task.status", "")
            print(f"{'  ' * depth}{span.name} [trace {span.context.trace_id:032x}] {status}")
            show(span.context.span_id, depth + 1)

    print(f"workflow {workflow_id}: {workflow.status}")
    show(None, 0)
    traces = {span.context.trace_id for span in spans}
    return 0 if workflow.status is WorkflowStatus.COMPLETED and len(traces) == 1 and len(spans) == 4 else 1


if __name__ == "__main__":
    sys.exit(main())
