"""Hello world: three workers complete a three-task workflow, N times.

    python samples/hello_world.py [--workflows 100] [--concurrency 4]

With no ``CONDUCTOR_SERVER_URL`` it starts the embedded ``LocalConductor``; with it set (e.g.
``http://localhost:8080/api``, plus ``CONDUCTOR_AUTH_KEY``/``CONDUCTOR_AUTH_SECRET`` for Orkes) it
runs against that server. Exits 0 when every workflow completed with the expected output.
"""
from __future__ import annotations

import argparse
import sys
import time

from _common import conductor_client
from conductor_workers import (
    PollingOptions,
    Task,
    TaskDef,
    TaskManager,
    WorkflowDef,
    WorkflowExecutor,
    WorkflowStatus,
    WorkflowTask,
    add_log,
    worker_task,
)

WORKFLOW = "cw_hello_world"


@worker_task("cw_hello_lookup")
def lookup(user_id: int) -> dict:
    """Input keys arrive as keyword arguments."""
    names = {1: "Ada", 2: "Grace", 3: "Barbara"}
    return {"name": names.get(user_id % 3 + 1, "stranger")}


@worker_task("cw_hello_greet")
def greet(task: Task) -> dict:
    """A function whose one parameter is named ``task`` receives the whole Task."""
    add_log(f"greeting {task.input_data['name']}")
    return {"greeting": f"Hello, {task.input_data['name']}!"}


@worker_task("cw_hello_shout")
def shout(text: str) -> str:
    """A scalar return value becomes {"result": value}."""
    return text.upper()


def workflow_def() -> WorkflowDef:
    return WorkflowDef(
        name=WORKFLOW,
        description="conductor_workers hello world",
        tasks=[
            WorkflowTask(
                name="cw_hello_lookup",
                task_reference_name="lookup",
                input_parameters={"user_id": "${workflow.input.user_id}"},
            ),
            WorkflowTask(
                name="cw_hello_greet",
                task_reference_name="greet",
                input_parameters={"name": "${lookup.output.name}"},
            ),
            WorkflowTask(
                name="cw_hello_shout",
                task_reference_name="shout",
                input_parameters={"text": "${greet.output.greeting}"},
            ),
        ],
        output_parameters={"greeting": "${shout.output.result}"},
    )


def main(argv: "list[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=100, help="workflows to run (default 100)")
    parser.add_argument("--concurrency", type=int, default=4, help="threads per worker (default 4)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for them all")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)

    with conductor_client(args.verbose) as client:
        client.metadata.register_task_defs(
            [TaskDef(name=w.task_def_name, retry_count=2, retry_delay_seconds=1, response_timeout_seconds=30)
             for w in (lookup, greet, shout)]
        )
        executor = WorkflowExecutor(client)
        executor.register_workflow(workflow_def(), overwrite=True)

        manager = TaskManager(client, [lookup, greet, shout], options=PollingOptions(concurrency=args.concurrency))
        manager.start_polling()
        try:
            started = time.monotonic()
            ids = [executor.start_workflow(WORKFLOW, {"user_id": i}, version=1) for i in range(args.workflows)]
            deadline = started + args.timeout
            results = [
                executor.wait_for_workflow(wf_id, timeout=max(0.1, deadline - time.monotonic())) for wf_id in ids
            ]
            elapsed = time.monotonic() - started
        finally:
            drained = manager.stop_polling(timeout=30)

    completed = [wf for wf in results if wf.status is WorkflowStatus.COMPLETED]
    for wf in results[:3]:
        print(f"{wf.workflow_id}: {wf.status} {wf.output}")
    wrong = [wf for wf in completed if not str(wf.output.get("greeting", "")).startswith("HELLO, ")]
    print(
        f"{len(completed)}/{len(ids)} workflows completed in {elapsed:.2f}s "
        f"({len(completed) / elapsed:.1f} workflows/s, {3 * len(completed) / elapsed:.1f} tasks/s); "
        f"workers drained: {drained}"
    )
    return 0 if len(completed) == len(ids) and not wrong and drained else 1


if __name__ == "__main__":
    sys.exit(main())
