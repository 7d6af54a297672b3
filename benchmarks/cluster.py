"""Throughput and pickup latency on a Conductor cluster, beside one SQLite node and the official SDK.

    python benchmarks/cluster.py [--tasks 500] [--pickups 20] [--rounds 2] [--threads 10]
                                 [--no-peer] [--peer-sqlite] [--json out.json]

Servers, all started by this script in the same run:

* **cluster**: PostgreSQL + two conductor-oss 3.32.1 nodes + HAProxy (``tests/cluster/harness.py``);
  clients talk to the load balancer.
* **sqlite**: one conductor-oss 3.32.1 node on its throwaway SQLite database (``tests/real_server.py``).

Clients, each in its own process group: ours is ``benchmarks/our_worker.py`` (one process, a
``TaskManager`` with concurrency ``--threads`` per task type), the peer is ``benchmarks/peer_worker.py``
in ``.bench/peer-venv`` (conductor-python 2.0.0, its default process per worker; ``benchmarks/peer.py``
builds it), both in ``record`` mode: each execution appends ``<time> <taskId>`` to a file on entry.

One measurement = one client start against one server, with two fresh task types:

* **warm-up**: first, ours drains ``--tasks / 2`` queued workflows once on each server, not counted
  (the JVMs' JIT makes the first minute slower).
* **throughput**: ``--tasks`` one-task workflows of the first type are started *before* the client
  (queued first); tasks/s = (N - 1) / (last record - first record); then no workflow of that name may
  still be running. The time the N starts took (4 threads) gives the workflow starts/s row.
* **pickup latency**: once the first queue is drained, the idle client gets ``--pickups`` workflows of
  the second type, one every 0.3 s; latency = the record's time - the return of the start call.

Combinations run alternately, round by round (ours on the cluster, ours on SQLite, the peer on the
cluster, and with ``--peer-sqlite`` the peer on SQLite); the table gives the median [min-max] over the
rounds and the ratios of the medians. A default run takes about 4 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import peer  # noqa: E402
from run import percentile, start_our_workers  # noqa: E402

from conductor_workers import ConductorClient, Configuration, TaskDef, WorkflowDef, WorkflowTask  # noqa: E402
from tests.cluster.harness import ConductorCluster  # noqa: E402  (puts tests/ on sys.path)

from support.conductor_oss import RealConductorServer  # noqa: E402

PICKUP_GAP_S = 0.3


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Target:
    """One server: its API URL, a client for the benchmark's own calls, fresh names per measurement."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url
        self.client = ConductorClient(Configuration(server_url=url, read_timeout=60))

    def fresh(self, label: str) -> Tuple[str, str]:
        suffix = uuid.uuid4().hex[:8]
        types = (f"bench_{label}_thr_{suffix}", f"bench_{label}_pick_{suffix}")
        self.client.metadata.register_task_defs(
            [TaskDef(name=name, retry_count=0, response_timeout_seconds=60) for name in types])
        for name in types:
            self.client.metadata.register_workflow_def(WorkflowDef(
                name=f"{name}_wf", tasks=[WorkflowTask(name=name, task_reference_name="t")]), overwrite=True)
        return types

    def start(self, task_type: str, count: int, first: int = 0, threads: int = 4) -> List[str]:
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(lambda i: self.client.workflows.start_by_name(f"{task_type}_wf", {"i": i}),
                                 range(first, first + count)))

    def wait_polled(self, task_types: Tuple[str, ...], since_ms: int, handle: peer.PeerHandle,
                    timeout: float = 120.0) -> None:
        """Until the server has a poll of every type from after ``since_ms`` (the client polls)."""
        deadline = time.monotonic() + timeout
        while True:
            if handle.process.poll() is not None:
                raise RuntimeError(f"client exited with {handle.process.returncode}:\n{handle.log_text()[-3000:]}")
            if all(any(p.last_poll_time >= since_ms for p in self.client.tasks.poll_data(t)) for t in task_types):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"client did not poll within {timeout:.0f} s:\n{handle.log_text()[-3000:]}")
            time.sleep(0.2)

    def wait_done(self, task_type: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.client.workflows.running(f"{task_type}_wf"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{task_type}: workflows still running after {timeout:.0f} s")
            time.sleep(0.2)


def read_records(path: Path) -> Dict[str, float]:
    seen: Dict[str, float] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            seen.setdefault(parts[1], float(parts[0]))
    return seen


def wait_records(path: Path, count: int, timeout: float) -> Dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        seen = read_records(path)
        if len(seen) >= count or time.monotonic() > deadline:
            return seen
        time.sleep(0.1)


def measure(side: str, target: Target, tmp: Path, peer_python: Optional[Path], tasks: int, pickups: int,
            threads: int) -> Dict[str, Any]:
    thr, pick = target.fresh(f"{side}_{target.name}")
    record = tmp / f"record-{thr}.txt"
    record.write_text("")
    started = time.monotonic()
    target.start(thr, tasks)  # queued first
    queued_s = time.monotonic() - started
    log_path = tmp / f"{side}-{thr}.log"
    since_ms = int(time.time() * 1000)
    if side == "ours":
        env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        handle = start_our_workers(target.url, [thr, pick], threads=threads, mode="record", record_file=record,
                                   log_path=log_path, env=env)
    else:
        assert peer_python is not None
        handle = peer.start_peer_workers(peer_python, target.url, [thr, pick], threads=threads, mode="record",
                                         record_file=record, log_path=log_path, env={"PYTHONPATH": ""})
    try:
        seen = wait_records(record, tasks, timeout=max(120.0, tasks / 3.0))
        if len(seen) < tasks:
            raise RuntimeError(f"only {len(seen)}/{tasks} tasks ran:\n{handle.log_text()[-2000:]}")
        stamps = sorted(seen.values())
        tasks_per_s = (tasks - 1) / max(1e-6, stamps[-1] - stamps[0])
        target.wait_done(thr, timeout=120)
        target.wait_polled((pick,), since_ms, handle)
        time.sleep(2.0)  # the client is idle now: every poller waiting
        calls: List[Tuple[str, float]] = []
        for i in range(pickups):
            (workflow_id,) = target.start(pick, 1, first=i, threads=1)
            calls.append((workflow_id, time.time()))
            time.sleep(PICKUP_GAP_S)
        seen = wait_records(record, tasks + pickups, timeout=30)
        latencies = []
        for workflow_id, returned in calls:
            task_id = target.client.workflows.get(workflow_id).tasks[0].task_id
            if task_id not in seen:
                raise RuntimeError(f"pickup task {task_id} never ran")
            latencies.append((seen[task_id] - returned) * 1000.0)
        target.wait_done(pick, timeout=60)
    finally:
        peer.stop(handle)
    return {"tasks_per_s": tasks_per_s, "starts_per_s": tasks / queued_s, "pickup_p50_ms": percentile(latencies, 50),
            "pickup_p95_ms": percentile(latencies, 95), "pickup_ms": latencies}


def warm_up(target: Target, tmp: Path, tasks: int, threads: int) -> None:
    """Ours drains ``tasks`` queued workflows once, not measured (the JVMs' JIT warms up)."""
    thr, _ = target.fresh(f"warmup_{target.name}")
    record = tmp / f"record-{thr}.txt"
    record.write_text("")
    target.start(thr, tasks)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    handle = start_our_workers(target.url, [thr], threads=threads, mode="record", record_file=record,
                               log_path=tmp / f"warmup-{thr}.log", env=env)
    try:
        wait_records(record, tasks, timeout=max(120.0, tasks / 3.0))
        target.wait_done(thr, timeout=120)
    finally:
        peer.stop(handle)


def cell(values: List[float], digits: int = 0) -> str:
    if not values:
        return "–"
    fmt = f"{{:.{digits}f}}"
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}–{fmt.format(max(values))}]"


def ratio(a: List[float], b: List[float]) -> str:
    return f"{statistics.median(a) / statistics.median(b):.2f}" if a and b else "–"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=500, help="queued one-task workflows per measurement")
    parser.add_argument("--pickups", type=int, default=20, help="workflows for pickup latency per measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=10, help="concurrency per task type, both clients")
    parser.add_argument("--no-peer", action="store_true", help="skip the official SDK")
    parser.add_argument("--peer-sqlite", action="store_true", help="also the official SDK on the SQLite node")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)

    began = time.monotonic()
    peer_python: Optional[Path] = None
    if not args.no_peer:
        try:
            peer_python = peer.ensure_peer_venv()
        except peer.PeerError as exc:
            log(f"official SDK unavailable, skipped: {exc}")
    cluster = ConductorCluster(nodes=2)
    sqlite = RealConductorServer()
    stops: List[Callable[[], None]] = []
    figures: Dict[str, List[Dict[str, Any]]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    try:
        log("starting the cluster (PostgreSQL, 2 conductor-oss nodes, HAProxy) and one node on SQLite")
        stops += [cluster.stop, sqlite.stop]  # both are safe to call when not (fully) started
        with ThreadPoolExecutor(2) as pool:  # side by side: about 30 s less than one after the other
            starting = [pool.submit(cluster.start), pool.submit(sqlite.start)]
            for future in starting:
                future.result()
        log(f"started: {cluster.url} and {sqlite.url}")
        targets = {"cluster": Target("cluster", cluster.url), "sqlite": Target("sqlite", sqlite.url)}
        combos = [("ours", "cluster"), ("ours", "sqlite")]
        if peer_python is not None:
            combos.append(("peer", "cluster"))
            if args.peer_sqlite:
                combos.append(("peer", "sqlite"))
        for server, target in targets.items():  # the JVMs' JIT: the first minute is slower
            log(f"warm-up on {server} (not counted)")
            warm_up(target, tmp, max(50, args.tasks // 2), args.threads)
        for round_no in range(args.rounds):
            for side, server in combos:
                log(f"round {round_no + 1}: {side} on {server}")
                result = measure(side, targets[server], tmp, peer_python, args.tasks, args.pickups, args.threads)
                log(f"  {result['tasks_per_s']:.1f} tasks/s, pickup p50 {result['pickup_p50_ms']:.1f} ms")
                figures.setdefault(f"{side}/{server}", []).append(result)
    finally:
        for stop in reversed(stops):
            stop()

    def values(key: str, metric: str) -> List[float]:
        return [run[metric] for run in figures.get(key, [])]

    print(f"\n{args.tasks} queued one-task workflows, {args.pickups} pickups, concurrency {args.threads}, "
          f"{args.rounds} round(s), median [min–max], {os.cpu_count()} cores; run took "
          f"{time.monotonic() - began:.0f} s\n")
    header = ["metric", "ours, cluster", "ours, 1 SQLite node", "cluster / SQLite"]
    has_peer = "peer/cluster" in figures
    if has_peer:
        header += ["peer, cluster", "ours / peer, cluster"]
    if "peer/sqlite" in figures:
        header += ["peer, 1 SQLite node"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for label, metric, digits in (("throughput (tasks/s)", "tasks_per_s", 1),
                                  ("workflow starts/s, 4 threads, before the client runs", "starts_per_s", 1),
                                  ("pickup latency p50 (ms)", "pickup_p50_ms", 1),
                                  ("pickup latency p95 (ms)", "pickup_p95_ms", 1)):
        ours_c, ours_s = values("ours/cluster", metric), values("ours/sqlite", metric)
        row = [label, cell(ours_c, digits), cell(ours_s, digits), ratio(ours_c, ours_s)]
        if has_peer:
            peer_c = values("peer/cluster", metric)
            # the starts are the benchmark's own calls, before either client runs: no ratio to draw
            row += [cell(peer_c, digits), "–" if metric == "starts_per_s" else ratio(ours_c, peer_c)]
        if "peer/sqlite" in figures:
            row += [cell(values("peer/sqlite", metric), digits)]
        print("| " + " | ".join(row) + " |")
    if args.json:
        args.json.write_text(json.dumps({"params": vars(args), "figures": figures}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
