"""CPU-bound tasks: ``conductor-workers run --processes 1`` against ``--processes 2``.

    python benchmarks/cpu_processes.py [--tasks 300] [--rounds 3] [--concurrency 2] [--ms 20]
                                       [--idle-seconds 10] [--no-peer]

* The work: ``benchmarks/_cpu_workers.py``, one ``@worker_task`` running a pure-Python loop that
  holds the GIL. Its loop count is calibrated here at start so that one execution takes ``--ms``
  (20 ms) on this machine, and handed to the workers through ``CPU_BENCH_LOOPS``.
* The server: LocalConductor in its own process (``python -m conductor_workers server --port 0``).
* Each run: a fresh task type and one-task workflow; ``--tasks`` workflows are started up front
  (queued first); then ``python -m conductor_workers run benchmarks._cpu_workers --processes P
  --concurrency C`` is started in its own process group; once no workflow of that name is running,
  the supervisor gets SIGTERM. Every workflow is then checked to be COMPLETED.
  tasks/s = tasks / (last task endTime - first task startTime), from the server's task records, so
  interpreter start-up and the spawn of the children are left out ("wall" is from the launch of the
  command to the last completion, start-up included).
* Rounds alternate P=1, P=2, P=1, P=2, ... The table gives median (min-max) over the rounds, and the
  ratio P2/P1 of the medians (and of each round's pair).
* Idle: ``run --processes 2`` with nothing queued, after start-up; CPU % of one core =
  utime+stime summed over its process group from ``/proc`` over ``--idle-seconds``; RSS = the sum of
  VmRSS over the group (the highest sum sampled).
* Peer (unless ``--no-peer``): the official Python SDK (``benchmarks/peer_worker.py --mode cpu``, in
  ``.bench/peer-venv``, built by ``benchmarks/peer.py``) in its default one-process-per-worker
  model, with one Worker (one process) and two Workers for the same task type (two processes), each
  with ``thread_count`` = ``--concurrency``; same loop, same queue, same measure.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import peer  # noqa: E402
from _cpu_workers import spin  # noqa: E402
from server_pairs import start_local  # noqa: E402  (LocalConductor in its own process)

from conductor_workers import (  # noqa: E402
    ConductorClient,
    Configuration,
    StartWorkflowRequest,
    TaskDef,
    WorkflowDef,
    WorkflowTask,
)

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- calibration -----------------------------------------------------------------------------------


def calibrate(target_ms: float) -> Tuple[int, float]:
    """Loop count for one ``spin`` of ~``target_ms``; returns (loops, measured ms of that count)."""
    loops = 100_000
    while True:  # grow until one call takes >= 10 ms, so the timer's noise does not matter
        started = time.perf_counter()
        spin(loops)
        if time.perf_counter() - started >= 0.01:
            break
        loops *= 2
    samples = []
    for _ in range(7):
        started = time.perf_counter()
        spin(loops)
        samples.append(time.perf_counter() - started)
    loops = max(1, int(loops * target_ms / 1000 / min(samples)))
    check = []
    for _ in range(7):
        started = time.perf_counter()
        spin(loops)
        check.append(time.perf_counter() - started)
    return loops, min(check) * 1000  # the least disturbed run: the machine is shared


# -- server and process groups ---------------------------------------------------------------------


def group_usage(pgid: int) -> Tuple[int, int, int]:
    """(utime+stime ticks, VmRSS bytes, processes) summed over the live processes of ``pgid``."""
    ticks = rss = count = 0
    for pid in peer.group_pids(pgid):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            statm = Path(f"/proc/{pid}/statm").read_text().split()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        rss += int(statm[1]) * PAGE
        count += 1
    return ticks, rss, count


def start_ours(url: str, task_type: str, processes: int, concurrency: int, loops: int,
               log_path: Path) -> peer.PeerHandle:
    cmd = [sys.executable, "-m", "conductor_workers", "run", "benchmarks._cpu_workers",
           "--processes", str(processes), "--concurrency", str(concurrency),
           "--server-url", url, "--log-level", "warning"]
    env = dict(os.environ, CPU_BENCH_TASK=task_type, CPU_BENCH_LOOPS=str(loops))
    log_file = open(log_path, "ab")
    process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                               stderr=subprocess.STDOUT, start_new_session=True)
    return peer.PeerHandle(process=process, pgid=process.pid, command=cmd, log_path=log_path, _log_file=log_file)


def stop_ours(handle: peer.PeerHandle, timeout: float = 30.0) -> int:
    """SIGTERM to the supervisor (it stops its children and drains); the whole group as a fallback."""
    handle.process.send_signal(signal.SIGTERM)
    try:
        code = handle.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        code = None
    deadline = time.monotonic() + 10
    while peer.group_pids(handle.pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if code is None or peer.group_pids(handle.pgid):
        peer.stop(handle)  # SIGTERM, then SIGKILL, to whatever is left of the group
        code = handle.process.returncode if code is None else code
    elif handle._log_file is not None:
        handle._log_file.close()
        handle._log_file = None
    return -1 if code is None else code


# -- one measurement ---------------------------------------------------------------------------


class Bench:
    def __init__(self, url: str, tmp: Path, loops: int, loops_ms: float, concurrency: int,
                 peer_python: Optional[Path]) -> None:
        self.url = url
        self.loops_ms = loops_ms
        self.client = ConductorClient(Configuration(server_url=url))
        self.tmp = tmp
        self.loops = loops
        self.concurrency = concurrency
        self.peer_python = peer_python

    def fresh(self) -> str:
        task_type = f"cpu_{uuid.uuid4().hex[:10]}"
        self.client.metadata.register_task_defs([
            TaskDef(name=task_type, retry_count=0, response_timeout_seconds=600, timeout_seconds=0,
                    owner_email="bench@example.com")])
        self.client.metadata.register_workflow_def(
            WorkflowDef(name=f"{task_type}_wf", version=1, owner_email="bench@example.com", timeout_seconds=0,
                        tasks=[WorkflowTask(name=task_type, task_reference_name="t")]),
            overwrite=True)
        return task_type

    def queue(self, task_type: str, count: int) -> List[str]:
        name = f"{task_type}_wf"
        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(
                lambda i: self.client.workflows.start(StartWorkflowRequest(name=name, version=1, input={"i": i})),
                range(count)))

    def wait_done(self, task_type: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.client.workflows.running(f"{task_type}_wf", 1):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def window(self, workflow_ids: List[str]) -> float:
        """Seconds from the first task's start to the last task's end; every workflow must be COMPLETED."""
        with ThreadPoolExecutor(4) as pool:
            workflows = list(pool.map(lambda w: self.client.workflows.get(w, include_tasks=True), workflow_ids))
        bad = [w.workflow_id for w in workflows if str(getattr(w.status, "value", w.status)) != "COMPLETED"]
        if bad:
            raise RuntimeError(f"{len(bad)} workflows not COMPLETED, e.g. {bad[0]}")
        tasks = [t for w in workflows for t in w.tasks]
        return (max(t.end_time for t in tasks) - min(t.start_time for t in tasks)) / 1000.0

    def run(self, side: str, processes: int, count: int) -> Dict[str, float]:
        task_type = self.fresh()
        ids = self.queue(task_type, count)
        log_path = self.tmp / f"{side}-{processes}-{task_type}.log"
        launched = time.perf_counter()
        if side == "ours":
            handle = self.start_ours(task_type, processes, log_path)
        else:
            handle = self.start_peer(task_type, processes, log_path)
        try:
            if not self.wait_done(task_type, timeout=max(60.0, count * self.loops_ms / 1000 * 3)):
                raise RuntimeError(f"{side} P={processes}: not done in time; log: {log_path}")
            wall = time.perf_counter() - launched
        finally:
            code = stop_ours(handle) if side == "ours" else peer.stop(handle)
        seconds = self.window(ids)
        return {"tasks_per_s": count / seconds, "window_s": seconds, "wall_s": wall, "exit": code}

    def start_ours(self, task_type: str, processes: int, log_path: Path) -> peer.PeerHandle:
        return start_ours(self.url, task_type, processes, self.concurrency, self.loops, log_path)

    def start_peer(self, task_type: str, processes: int, log_path: Path) -> peer.PeerHandle:
        assert self.peer_python is not None
        # The SDK runs one process per Worker: P Workers for the same task type give P processes.
        return peer.start_peer_workers(self.peer_python, self.url, [task_type] * processes,
                                       threads=self.concurrency, mode="cpu", log_path=log_path,
                                       env={"CPU_BENCH_LOOPS": str(self.loops)})

    def idle(self, side: str, processes: int, seconds: float, settle: float = 4.0) -> Dict[str, float]:
        task_type = self.fresh()
        log_path = self.tmp / f"idle-{side}-{task_type}.log"
        handle = (self.start_ours(task_type, processes, log_path) if side == "ours"
                  else self.start_peer(task_type, processes, log_path))
        try:
            time.sleep(settle)  # start-up (imports, spawn, first polls) is not idling
            ticks0, _, _ = group_usage(handle.pgid)
            started = time.perf_counter()
            peak_rss = peak_count = 0
            while time.perf_counter() - started < seconds:
                _, rss, count = group_usage(handle.pgid)
                peak_rss, peak_count = max(peak_rss, rss), max(peak_count, count)
                time.sleep(0.5)
            ticks1, rss, count = group_usage(handle.pgid)
            elapsed = time.perf_counter() - started
        finally:
            stop_ours(handle) if side == "ours" else peer.stop(handle)
        return {"cpu_pct": (ticks1 - ticks0) / CLK_TCK / elapsed * 100, "rss_mb": max(peak_rss, rss) / 1e6,
                "processes": max(peak_count, count)}


def fmt(values: List[float], digits: int = 1) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2, help="--concurrency of run (thread_count of the peer)")
    parser.add_argument("--ms", type=float, default=20.0, help="target duration of one task, ms")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--no-peer", action="store_true", help="only conductor-workers run")
    args = parser.parse_args()

    loops, measured_ms = calibrate(args.ms)
    log(f"calibrated: {loops} loops = {measured_ms:.1f} ms per task")

    peer_python: Optional[Path] = None
    if not args.no_peer:
        try:
            peer_python = peer.ensure_peer_venv(pip_timeout=300.0)
        except Exception as exc:  # noqa: BLE001 - the peer is optional
            log(f"peer unavailable: {type(exc).__name__}: {exc}")
    sides = ["ours"] + (["peer"] if peer_python is not None else [])

    url, stop_server = start_local()
    tmp = Path(tempfile.mkdtemp(prefix="cpu-processes-"))
    bench = Bench(url, tmp, loops, measured_ms, args.concurrency, peer_python)
    figures: Dict[str, Dict[int, List[Dict[str, float]]]] = {s: {1: [], 2: []} for s in sides}
    load_before = os.getloadavg()
    idle: Dict[str, Dict[str, float]] = {}
    try:
        for round_no in range(1, args.rounds + 1):
            for side in sides:
                for processes in (1, 2):
                    result = bench.run(side, processes, args.tasks)
                    figures[side][processes].append(result)
                    log(f"round {round_no} {side} P={processes}: {result['tasks_per_s']:.1f} tasks/s "
                        f"(window {result['window_s']:.2f} s, wall {result['wall_s']:.2f} s, exit {result['exit']})")
        for side in sides:
            idle[side] = bench.idle(side, 2, args.idle_seconds)
            log(f"idle {side} P=2: {idle[side]}")
    finally:
        stop_server()
    load_after = os.getloadavg()

    print(f"\nCPU-bound tasks: {args.tasks} one-task workflows queued first, one task = {measured_ms:.1f} ms of "
          f"pure-Python loop ({loops} iterations), concurrency {args.concurrency} per process, "
          f"LocalConductor; {args.rounds} rounds alternating P=1, P=2; median (min-max); {os.cpu_count()} cores; "
          f"load {load_before[0]:.2f} before, {load_after[0]:.2f} after\n")
    print("| client | processes | tasks/s | wall s (incl. start-up) | P2/P1 (medians) | P2/P1 per round |")
    print("|---|---|---|---|---|---|")
    names = {"ours": "conductor-workers run", "peer": "official SDK (1 process per Worker)"}
    for side in sides:
        rates = {p: [r["tasks_per_s"] for r in figures[side][p]] for p in (1, 2)}
        ratio = statistics.median(rates[2]) / statistics.median(rates[1])
        per_round = ", ".join(f"{b / a:.2f}" for a, b in zip(rates[1], rates[2]))
        for p in (1, 2):
            walls = [r["wall_s"] for r in figures[side][p]]
            tail = f" {ratio:.2f} | {per_round} |" if p == 2 else " | |"
            print(f"| {names[side]} | {p} | {fmt(rates[p])} | {fmt(walls, 2)} |{tail}")
    print(f"\nideal: {1000 / measured_ms:.1f} tasks/s per core; target P2/P1 >= 1.7 on 2 cores\n")
    print(f"| idle, 2 processes, {args.idle_seconds:.0f} s, nothing queued | CPU % of one core | RSS MB (sum) | processes |")
    print("|---|---|---|---|")
    for side in sides:
        i = idle[side]
        label = "conductor-workers run --processes 2" if side == "ours" else "official SDK, 2 Workers"
        print(f"| {label} | {i['cpu_pct']:.2f} | {i['rss_mb']:.1f} | {i['processes']:.0f} |")
    exits = {side: sorted({int(r["exit"]) for p in (1, 2) for r in figures[side][p]}) for side in sides}
    print(f"\nexit codes after SIGTERM: {exits}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
