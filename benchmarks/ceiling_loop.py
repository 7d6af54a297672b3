"""The ceiling: the tightest worker loop we can write with ``requests`` (no framework at all).

``--threads`` threads, each with its own ``requests.Session`` (``trust_env=False``): batch-poll one
task, report it with ``update-v2`` and keep running the task that update hands back, until
``--count`` tasks are completed in total. Prints one JSON line on stdout::

    {"completed": N, "t_first": <monotonic s>, "t_done": <monotonic s>, "elapsed": s,
     "tasks_per_s": x, "cpu_s": <process CPU between first task and done>}

Usage: ``python benchmarks/ceiling_loop.py --server-url URL --task T --count N [--threads 10]``
"""
from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from typing import Any, Dict, List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server-url", required=True)
    parser.add_argument("--task", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--threads", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)

    import requests

    base = args.server_url.rstrip("/")
    if not base.endswith("/api"):
        base += "/api"
    poll_url = f"{base}/tasks/poll/batch/{args.task}"
    update_url = f"{base}/tasks/update-v2"
    worker_id = socket.gethostname()
    lock = threading.Lock()
    done = threading.Event()
    state: Dict[str, Any] = {"completed": 0, "t_first": None, "cpu_first": None, "t_done": None, "cpu_done": None}

    def run() -> None:
        session = requests.Session()
        session.trust_env = False
        params: Dict[str, Any] = {"count": 1, "timeout": 100, "workerid": worker_id}
        task: Optional[Dict[str, Any]] = None
        while not done.is_set():
            if task is None:
                response = session.get(poll_url, params=params, timeout=10)
                tasks = response.json() if response.status_code == 200 and response.content else []
                if not tasks:
                    continue
                task = tasks[0]
                if state["t_first"] is None:
                    with lock:
                        if state["t_first"] is None:
                            state["t_first"] = time.monotonic()
                            state["cpu_first"] = time.process_time()
            result = {
                "taskId": task["taskId"],
                "workflowInstanceId": task["workflowInstanceId"],
                "workerId": worker_id,
                "status": "COMPLETED",
                "outputData": {},
            }
            response = session.post(update_url, json=result, timeout=10)
            response.raise_for_status()
            task = response.json() if response.content and response.status_code == 200 else None
            if not task:
                task = None
            with lock:
                state["completed"] += 1
                if state["completed"] == args.count:
                    state["t_done"] = time.monotonic()
                    state["cpu_done"] = time.process_time()
                    done.set()

    threads = [threading.Thread(target=run, daemon=True) for _ in range(args.threads)]
    for thread in threads:
        thread.start()
    if not done.wait(args.timeout):
        print(json.dumps({"error": "timeout", "completed": state["completed"]}), flush=True)
        return 1
    elapsed = state["t_done"] - state["t_first"]
    print(json.dumps({
        "completed": state["completed"],
        "t_first": state["t_first"],
        "t_done": state["t_done"],
        "elapsed": elapsed,
        "tasks_per_s": args.count / elapsed if elapsed > 0 else None,
        "cpu_s": state["cpu_done"] - state["cpu_first"],
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
