"""Per-task time limits: a task that hangs fails at once instead of holding its slot for an hour.

    python samples/time_limits.py

Three workers, each with ``time_limit=1`` (seconds):

* ``cw_tl_quick`` finishes in time;
* ``cw_tl_spin`` never ends by itself; its task is FAILED within about a second, the loop's safe
  point (:func:`check_time_limit`) raises ``TimeLimitExceeded`` in it, and the definition's one
  retry runs and fails too;
* ``cw_tl_cooperative`` checks :func:`time_remaining` and stops early by itself, returning what it
  has done so far.

Without the limit, the spinning task would hold its slot until the server's response timeout
(``responseTimeoutSeconds``, 3600 s by default).
"""
from __future__ import annotations

import sys
import time
from typing import Any, Dict

from _common import conductor_client
from conductor_workers import (
    TaskDef,
    TaskManager,
    WorkflowDef,
    WorkflowExecutor,
    WorkflowStatus,
    WorkflowTask,
    check_time_limit,
    time_remaining,
    worker_task,
)


@worker_task("cw_tl_quick", time_limit=1)
def quick(n: int) -> Dict[str, Any]:
    return {"square": n * n}


@worker_task("cw_tl_spin", time_limit=1)
def spin(n: int) -> Dict[str, Any]:
    while True:  # a bug: never ends by itself...
        n += 1
        check_time_limit()  # ...but past the limit its safe point raises TimeLimitExceeded


@worker_task("cw_tl_cooperative", time_limit=1)
def cooperative(n: int) -> Dict[str, Any]:
    done = 0
    while (time_remaining() or 0) > 0.3:  # leave itself time to report
        time.sleep(0.05)  # one unit of work
        done += 1
    return {"done": done, "stopped_early": True}


def main() -> int:
    names = ["cw_tl_quick", "cw_tl_spin", "cw_tl_cooperative"]
    with conductor_client() as client:
        client.metadata.register_task_defs(
            [TaskDef(name=name, retry_count=1, retry_delay_seconds=0) for name in names]
        )
        executor = WorkflowExecutor(client)
        for name in names:
            executor.register_workflow(
                WorkflowDef(
                    name=name + "_wf",
                    tasks=[WorkflowTask(name=name, task_reference_name="t", input_parameters={"n": "${workflow.input.n}"})],
                ),
                overwrite=True,
            )
        started = time.monotonic()
        with TaskManager(client, [quick, spin, cooperative]):
            ids = {name: executor.start_workflow(name + "_wf", {"n": 7}, version=1) for name in names}
            finished = {name: executor.wait_for_workflow(workflow_id, timeout=60) for name, workflow_id in ids.items()}
        for name, workflow in finished.items():
            last = workflow.tasks[-1]
            print(f"{name}: {workflow.status} after {len(workflow.tasks)} attempt(s); "
                  f"task {last.status}: {last.reason_for_incompletion or last.output_data}")
        print(f"all three settled in {time.monotonic() - started:.1f} s")
    ok = (
        finished["cw_tl_quick"].status is WorkflowStatus.COMPLETED
        and finished["cw_tl_spin"].status is WorkflowStatus.FAILED
        and len(finished["cw_tl_spin"].tasks) == 2
        and finished["cw_tl_cooperative"].status is WorkflowStatus.COMPLETED
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
