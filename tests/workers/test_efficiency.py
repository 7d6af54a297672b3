"""HTTP requests per completed task with a busy queue, and the cost of an idle worker.

Loose bounds only; the benchmark reports the exact figures.
"""
from __future__ import annotations

import time
from collections import Counter
from typing import Any, Dict

from support.workers import Env, wait_until

from conductor_workers import WorkflowStatus, worker_task

TASKS = 200


def test_requests_per_task_with_a_busy_queue(proxied_env: Env) -> None:
    proxy = proxied_env.proxy
    assert proxy is not None
    flow = proxied_env.flow("perreq")
    ids = flow.start_many(TASKS)  # queued before the manager starts

    @worker_task(flow.task_name, concurrency=4)
    def work(i: int) -> Dict[str, Any]:
        return {"i": i}

    manager = proxied_env.manager([work])
    manager.start_polling()
    workflows = proxied_env.wait_all(ids)
    assert all(wf.status is WorkflowStatus.COMPLETED for wf in workflows)
    wait_until(lambda: manager.status()[flow.task_name].executions_completed == TASKS, timeout=10, message="all reported")
    requests = proxy.requests
    kinds = Counter(f"{r.method} {r.path.rsplit('/', 1)[0] if 'poll' in r.path else r.path}" for r in requests)
    ratio = len(requests) / TASKS
    print(f"\nrequests per completed task (busy queue, concurrency 4): {ratio:.3f} "
          f"({len(requests)} requests for {TASKS} tasks: {dict(kinds)})")
    assert ratio < 2.5


def test_idle_worker_makes_few_requests(proxied_env: Env) -> None:
    proxy = proxied_env.proxy
    assert proxy is not None
    flow = proxied_env.flow("idle")

    @worker_task(flow.task_name)  # default options
    def work() -> None:
        return None

    manager = proxied_env.manager([work])
    manager.start_polling()
    wait_until(lambda: proxy.requests, message="the first poll")
    proxy.reset()
    window = 3.0
    time.sleep(window)
    count = len(proxy.requests)
    print(f"\nidle worker, default options: {count} requests in {window:.0f} s ({count / window:.2f}/s)")
    assert count / window <= 1.5
