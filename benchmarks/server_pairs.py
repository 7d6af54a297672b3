"""Poll + update pairs per second: LocalConductor beside the real conductor-oss server, same run.

    python benchmarks/server_pairs.py [--tasks 1000] [--threads 1,4] [--rounds 3] [--no-real]

For each server: queue ``--tasks`` SIMPLE tasks (one-task workflows started up front), then
``threads`` client threads, each with its own ``requests.Session``, loop "batch poll 1 (timeout 0) →
POST /tasks COMPLETED" until the queue is empty. Servers are measured alternately, round by round;
the table shows the median and the spread. LocalConductor runs in its own process
(``python -m conductor_workers server``) so that it gets the same treatment as the JVM.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def start_local() -> Tuple[str, Callable[[], None]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "conductor_workers", "server", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "LocalConductor listening on http://127.0.0.1:PORT/api"
    url = line.strip().rsplit(" ", 1)[-1]

    def stop() -> None:
        proc.terminate()
        proc.wait(timeout=15)

    return url, stop


def start_real() -> Tuple[str, Callable[[], None]]:
    from support.conductor_oss import RealConductorServer

    server = RealConductorServer()
    server.start()
    return server.url, server.stop


def queue_tasks(url: str, count: int) -> str:
    """Register a one-task workflow and start ``count`` of them; returns the task type."""
    suffix = uuid.uuid4().hex[:8]
    task_type, workflow = f"pairs_t_{suffix}", f"pairs_wf_{suffix}"
    with requests.Session() as session:
        session.trust_env = False
        session.post(f"{url}/metadata/taskdefs", json=[{"name": task_type, "retryCount": 0}]).raise_for_status()
        session.post(
            f"{url}/metadata/workflow",
            json={"name": workflow, "version": 1, "schemaVersion": 2,
                  "tasks": [{"name": task_type, "taskReferenceName": "t", "type": "SIMPLE"}]},
        ).raise_for_status()
        for _ in range(count):
            session.post(f"{url}/workflow/{workflow}", json={}).raise_for_status()
    return task_type


def drain(url: str, task_type: str, threads: int, expected: int) -> float:
    """Poll+update until ``expected`` tasks are done; returns pairs per second."""
    done = [0]
    lock = threading.Lock()
    misses = [0]

    def loop() -> None:
        with requests.Session() as session:
            session.trust_env = False
            while True:
                with lock:
                    if done[0] >= expected or misses[0] > 200:
                        return
                resp = session.get(
                    f"{url}/tasks/poll/batch/{task_type}", params={"count": 1, "timeout": 0, "workerid": "pairs"}
                )
                tasks = resp.json() if resp.status_code == 200 and resp.content else []
                if not tasks:
                    with lock:
                        misses[0] += 1
                    time.sleep(0.01)  # the real server may not have queued every task yet
                    continue
                task = tasks[0]
                session.post(
                    f"{url}/tasks",
                    json={"taskId": task["taskId"], "workflowInstanceId": task["workflowInstanceId"],
                          "status": "COMPLETED", "outputData": {}, "workerId": "pairs"},
                ).raise_for_status()
                with lock:
                    done[0] += 1

    started = time.perf_counter()
    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    return done[0] / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--threads", default="1,4")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-real", action="store_true", help="only LocalConductor")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    threads_list = [int(t) for t in args.threads.split(",")]

    servers: Dict[str, Tuple[str, Callable[[], None]]] = {"local": start_local()}
    if not args.no_real:
        servers["real"] = start_real()
    figures: Dict[str, Dict[int, List[float]]] = {name: {t: [] for t in threads_list} for name in servers}
    try:
        for _ in range(args.rounds):
            for threads in threads_list:
                for name, (url, _) in servers.items():  # alternate: local, real, local, real, ...
                    task_type = queue_tasks(url, args.tasks)
                    time.sleep(0.5)
                    figures[name][threads].append(drain(url, task_type, threads, args.tasks))
    finally:
        for _, stop in servers.values():
            stop()

    print(f"\npoll+update pairs/s, {args.tasks} tasks, {args.rounds} rounds, median (min-max), {os.cpu_count()} cores\n")
    header = "| threads | " + " | ".join(servers) + (" | local / real |" if "real" in servers else " |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for threads in threads_list:
        cells = []
        for name in servers:
            values = figures[name][threads]
            cells.append(f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})")
        ratio = ""
        if "real" in servers:
            ratio = f" | {statistics.median(figures['local'][threads]) / statistics.median(figures['real'][threads]):.2f}"
        print(f"| {threads} | " + " | ".join(cells) + ratio + " |")
    if args.json:
        args.json.write_text(json.dumps({"tasks": args.tasks, "figures": figures}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
