"""OpenTelemetry tracing: one trace from the workflow's starter through every worker's execution,
spans with the right parents and attributes; without the extra, nothing is imported or paid."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any, Dict, Iterator, List

import pytest
from support.workers import Env, unique

from conductor_workers import (
    ConductorClient,
    Configuration,
    NonRetryableError,
    TaskDef,
    WorkflowDef,
    WorkflowExecutor,
    WorkflowStatus,
    WorkflowTask,
    worker_task,
)

otel_sdk = pytest.importorskip("opentelemetry.sdk.trace", reason="the test extra installs opentelemetry-sdk")
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

from conductor_workers.tracing import TRACE_CONTEXT_KEY, TracingMiddleware, trace_http  # noqa: E402


@pytest.fixture
def spans() -> Iterator[Any]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def _three_task_workflow(env: Env) -> Dict[str, Any]:
    names = [unique(f"tr{index}") for index in range(3)]
    env.client.metadata.register_task_defs(
        [TaskDef(name=name, retry_count=0, owner_email="tests@example.com") for name in names]
    )
    workflow_name = names[0] + "_wf"
    passthrough = {TRACE_CONTEXT_KEY: "${workflow.input.%s}" % TRACE_CONTEXT_KEY, "n": "${workflow.input.n}"}
    env.executor.register_workflow(
        WorkflowDef(
            name=workflow_name,
            version=1,
            owner_email="tests@example.com",
            tasks=[
                WorkflowTask(name=name, task_reference_name=f"t{index}", input_parameters=dict(passthrough))
                for index, name in enumerate(names)
            ],
        ),
        overwrite=True,
    )
    return {"names": names, "workflow": workflow_name}


def test_one_trace_holds_the_start_span_and_every_execution(any_env: Env, spans: Any) -> None:
    provider, exporter = spans
    flow = _three_task_workflow(any_env)
    first, second, third = flow["names"]

    @worker_task(first)
    def one(n: int) -> Dict[str, Any]:
        return {"n": n}

    @worker_task(second)
    def two(n: int) -> Dict[str, Any]:
        return {"n": n}

    @worker_task(third)
    def three(n: int) -> Dict[str, Any]:
        raise NonRetryableError("the third task fails")

    any_env.manager([one, two, three], middleware=[TracingMiddleware(provider)]).start_polling()
    starter = WorkflowExecutor(any_env.client, propagate_trace=True, tracer_provider=provider)
    workflow_id = starter.start_workflow(flow["workflow"], {"n": 5}, version=1)
    workflow = any_env.wait(workflow_id)
    assert workflow.status is WorkflowStatus.FAILED
    provider.force_flush()
    finished = exporter.get_finished_spans()
    start = [s for s in finished if s.name == f"start_workflow {flow['workflow']}"]
    assert len(start) == 1 and start[0].kind is SpanKind.PRODUCER
    assert start[0].attributes["conductor.workflow.id"] == workflow_id
    trace_id = start[0].context.trace_id
    executions = {s.name: s for s in finished if s.name.startswith("execute ")}
    assert set(executions) == {f"execute {name}" for name in flow["names"]}
    for index, name in enumerate(flow["names"]):
        span = executions[f"execute {name}"]
        task = workflow.tasks[index]
        assert span.context.trace_id == trace_id
        assert span.parent is not None and span.parent.span_id == start[0].context.span_id
        assert span.kind is SpanKind.CONSUMER
        assert span.attributes["conductor.task.id"] == task.task_id
        assert span.attributes["conductor.workflow.id"] == workflow_id
        assert span.attributes["conductor.task.type"] == name
        assert span.attributes["conductor.task.retry_count"] == 0
        assert span.attributes["conductor.task.poll_count"] >= 1
    assert executions[f"execute {first}"].attributes["conductor.task.status"] == "COMPLETED"
    failed = executions[f"execute {third}"]
    assert failed.attributes["conductor.task.status"] == "FAILED"
    assert failed.status.status_code is StatusCode.ERROR
    assert [event.name for event in failed.events] == ["exception"]


def test_without_a_carried_context_each_execution_is_a_root_span(env: Env, spans: Any) -> None:
    provider, exporter = spans
    flow = env.flow("tr_root")

    @worker_task(flow.task_name)
    def ok(i: int) -> None:
        return None

    env.manager([ok], middleware=[TracingMiddleware(provider)]).start_polling()
    env.wait_all(flow.start_many(2))
    provider.force_flush()
    executions = [s for s in exporter.get_finished_spans() if s.name == f"execute {flow.task_name}"]
    assert len(executions) == 2 and all(s.parent is None for s in executions)
    assert executions[0].context.trace_id != executions[1].context.trace_id


def test_http_spans_are_optional(env: Env, spans: Any) -> None:
    provider, exporter = spans
    client = ConductorClient(Configuration(server_url=env.url))
    try:
        trace_http(client, provider)
        client.metadata.get_task_defs()
    finally:
        client.close()
    provider.force_flush()
    http: List[Any] = [s for s in exporter.get_finished_spans() if s.name == "HTTP GET"]
    assert len(http) == 1 and http[0].kind is SpanKind.CLIENT
    assert http[0].attributes["http.response.status_code"] == 200
    assert http[0].attributes["url.full"].endswith("/metadata/taskdefs")


_WITHOUT_OTEL = textwrap.dedent(
    """
    import sys
    sys.modules["opentelemetry"] = None  # as if the extra were not installed: importing it fails
    import conductor_workers
    from conductor_workers import (ConductorClient, Configuration, TaskDef, TaskManager, WorkflowDef,
                                   WorkflowExecutor, WorkflowTask, worker_task, InvalidOptionError)
    from conductor_workers.testing import LocalConductor

    with LocalConductor() as server:
        client = ConductorClient(Configuration(server_url=server.url))
        client.metadata.register_task_defs([TaskDef(name="plain")])
        client.metadata.register_workflow_def(
            WorkflowDef(name="plain_wf", tasks=[WorkflowTask(name="plain", task_reference_name="p")]))

        @worker_task("plain")
        def plain():
            return {"ok": True}

        with TaskManager(client, [plain]):
            executor = WorkflowExecutor(client)
            wf = executor.wait_for_workflow(executor.start_workflow("plain_wf", {}), 30)
        assert wf.status.value == "COMPLETED", wf.status
        import conductor_workers.tracing as tracing
        for make in (lambda: tracing.TracingMiddleware(), lambda: WorkflowExecutor(client, propagate_trace=True)):
            try:
                make()
            except InvalidOptionError as exc:
                assert "pip install 'conductor-workers[otel]'" in str(exc), exc
            else:
                raise AssertionError("tracing without the extra did not say what to install")
        client.close()
    loaded = sorted(name for name in sys.modules if name.startswith("opentelemetry") and sys.modules[name])
    print("OK", loaded)
    """
)


def test_without_the_extra_workers_run_and_nothing_is_imported() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_OTEL], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "OK []"


def test_importing_the_package_does_not_import_opentelemetry() -> None:
    code = "import sys, conductor_workers, conductor_workers.runner, conductor_workers.manager; " \
           "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
