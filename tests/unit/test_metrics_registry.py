"""MetricsMiddleware in a user's own prometheus_client registry, fed by a real TaskManager run."""
from __future__ import annotations

import pytest

from conductor_workers import ConductorClient, Configuration, TaskManager, WorkflowDef, WorkflowExecutor, WorkflowTask
from conductor_workers import TaskDef, WorkflowStatus, worker_task
from conductor_workers.metrics import MetricsMiddleware
from conductor_workers.testing import LocalConductor

prometheus_client = pytest.importorskip("prometheus_client")
parser = pytest.importorskip("prometheus_client.parser")


@worker_task("metrics_registry_echo")
def echo(n: int) -> dict:
    if n == 3:
        raise ValueError("three")
    return {"n": n}


def samples(registry) -> dict:
    text = prometheus_client.generate_latest(registry).decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in parser.text_string_to_metric_families(text) for sample in family.samples}


def test_a_registry_of_the_users_own_reads_the_managers_figures() -> None:
    registry = prometheus_client.CollectorRegistry()
    events = MetricsMiddleware()
    events.register(registry)
    with LocalConductor() as server, ConductorClient(Configuration(server_url=server.url)) as client:
        client.metadata.register_task_defs([TaskDef(name="metrics_registry_echo", retry_count=0)])
        executor = WorkflowExecutor(client)
        executor.register_workflow(WorkflowDef(name="metrics_registry_wf", tasks=[WorkflowTask(
            name="metrics_registry_echo", task_reference_name="e", input_parameters={"n": "${workflow.input.n}"})]),
            overwrite=True)
        ids = [executor.start_workflow("metrics_registry_wf", {"n": n}) for n in range(5)]
        manager = TaskManager(client, [echo], events=events)
        manager.start_polling()
        try:
            done = [executor.wait_for_workflow(wf, timeout=20) for wf in ids]
        finally:
            manager.stop_polling(timeout=10)
    assert [wf.status for wf in done].count(WorkflowStatus.COMPLETED) == 4
    got = samples(registry)
    label = ("taskType", "metrics_registry_echo")
    assert got[("task_execute_total", (("status", "COMPLETED"), label))] == 4
    assert got[("task_execute_error_total", (("exception", "ValueError"), label))] == 1
    assert got[("task_execute_time_count", (label,))] == 5
    assert got[("task_poll_total", (label,))] >= 1


def test_the_admission_limit_is_a_gauge_and_sums_over_processes() -> None:
    pytest.importorskip("prometheus_client")
    from conductor_workers.metrics import MetricsMiddleware, merge_snapshots, render

    one, two = MetricsMiddleware(), MetricsMiddleware()
    one.admission_changed("resize", 3, "memory below target")
    one.admission_changed("resize", 2, "memory above target")  # a gauge: the latest value, not a sum
    two.admission_changed("resize", 4, "minimum")
    body, _ = render(one)
    assert b'task_admission_limit{taskType="resize"} 2.0' in body
    assert b"# TYPE task_admission_limit gauge" in body
    merged = merge_snapshots([one.snapshot(), two.snapshot()])
    body, _ = render(lambda: merged)
    assert b'task_admission_limit{taskType="resize"} 6.0' in body
