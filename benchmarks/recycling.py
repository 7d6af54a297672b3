"""The throughput dip while ``conductor-workers run`` recycles a process, beside fixed processes.

    python benchmarks/recycling.py [--tasks 600] [--rounds 3] [--processes 2] [--concurrency 2]
                                   [--ms 20] [--max-tasks-per-child 50]

* The work: ``benchmarks/_cpu_workers.py`` (a pure-Python loop holding the GIL, calibrated to
  ``--ms`` per task, as in ``cpu_processes.py``): every process is busy, so a process that is not
  polling, or a replacement starting up beside it, shows in the rate.
* The server: LocalConductor in its own process. Each run: a fresh task type, ``--tasks`` one-task
  workflows queued first, then ``run benchmarks._cpu_workers --processes P --concurrency C``, with
  ``--max-tasks-per-child N`` ("recycled") or without ("fixed"); SIGTERM once none is running.
* tasks/s = tasks / (last task endTime - first task startTime) from the server's task records
  (start-up left out). The dip: completions per 1-second window over that span, the lowest whole
  window beside the median one. Recycles: the supervisor's "stops polling and drains" log lines.
* Rounds alternate fixed, recycled, fixed, ...; median (min-max) and the ratio recycled/fixed of
  the medians (and per round); the cost of one recycle = the recycled run's extra time over the
  fixed one's (medians), divided by its recycles.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from cpu_processes import Bench, calibrate, fmt, log  # noqa: E402
from server_pairs import start_local  # noqa: E402  (LocalConductor in its own process)


def start(url: str, task_type: str, args: argparse.Namespace, loops: int, recycle: Optional[int],
          log_path: Path) -> "subprocess.Popen[bytes]":
    cmd = [sys.executable, "-m", "conductor_workers", "run", "benchmarks._cpu_workers",
           "--processes", str(args.processes), "--concurrency", str(args.concurrency), "--server-url", url]
    if recycle is not None:
        cmd += ["--max-tasks-per-child", str(recycle)]
    env = dict(os.environ, CPU_BENCH_TASK=task_type, CPU_BENCH_LOOPS=str(loops))
    with open(log_path, "ab") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def one_run(bench: Bench, args: argparse.Namespace, loops: int, recycle: Optional[int], tmp: Path) -> Dict[str, float]:
    task_type = bench.fresh()
    ids = bench.queue(task_type, args.tasks)
    log_path = tmp / f"{'recycled' if recycle else 'fixed'}-{task_type}.log"
    proc = start(bench.url, task_type, args, loops, recycle, log_path)
    try:
        if not bench.wait_done(task_type, timeout=max(120.0, args.tasks * args.ms / 1000 * 4)):
            raise RuntimeError(f"not done in time; log: {log_path}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait()
    seconds = bench.window(ids)  # also: every workflow COMPLETED
    with ThreadPoolExecutor(4) as pool:
        workflows = list(pool.map(lambda w: bench.client.workflows.get(w, include_tasks=True), ids))
    ends = sorted(t.end_time for w in workflows for t in w.tasks)
    first = min(t.start_time for w in workflows for t in w.tasks)
    windows = [0] * int((ends[-1] - first) // 1000)  # whole 1-second windows only
    for end in ends:
        index = int((end - first) // 1000)
        if index < len(windows):
            windows[index] += 1
    text = log_path.read_text(errors="replace")
    return {"tasks_per_s": args.tasks / seconds, "lowest_window": min(windows) if windows else float("nan"),
            "median_window": statistics.median(windows) if windows else float("nan"),
            "recycles": text.count("stops polling and drains"), "exit": code}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--ms", type=float, default=20.0, help="target duration of one task, ms")
    parser.add_argument("--max-tasks-per-child", type=int, default=50)
    args = parser.parse_args()

    loops, measured_ms = calibrate(args.ms)
    log(f"calibrated: {loops} loops = {measured_ms:.1f} ms per task")
    url, stop_server = start_local()
    tmp = Path(tempfile.mkdtemp(prefix="recycling-"))
    bench = Bench(url, tmp, loops, measured_ms, args.concurrency, None)
    figures: Dict[str, List[Dict[str, float]]] = {"fixed": [], "recycled": []}
    load_before = os.getloadavg()
    try:
        for round_no in range(1, args.rounds + 1):
            for side, recycle in (("fixed", None), ("recycled", args.max_tasks_per_child)):
                result = one_run(bench, args, loops, recycle, tmp)
                figures[side].append(result)
                log(f"round {round_no} {side}: {result}")
    finally:
        stop_server()
    load_after = os.getloadavg()

    print(f"\n{args.tasks} CPU-bound tasks of {measured_ms:.1f} ms, --processes {args.processes} --concurrency "
          f"{args.concurrency}, LocalConductor; {args.rounds} rounds alternating; median (min-max); "
          f"{os.cpu_count()} cores; load {load_before[0]:.2f} before, {load_after[0]:.2f} after\n")
    print("| processes | tasks/s | completions per 1 s window: median | lowest | recycles per run | exit codes |")
    print("|---|---|---|---|---|---|")
    for side in ("fixed", "recycled"):
        runs = figures[side]
        label = "fixed" if side == "fixed" else f"recycled (--max-tasks-per-child {args.max_tasks_per_child})"
        print(f"| {label} | {fmt([r['tasks_per_s'] for r in runs])} | {fmt([r['median_window'] for r in runs], 0)} "
              f"| {fmt([r['lowest_window'] for r in runs], 0)} | {fmt([r['recycles'] for r in runs], 0)} "
              f"| {sorted({int(r['exit']) for r in runs})} |")
    fixed = [r["tasks_per_s"] for r in figures["fixed"]]
    recycled = [r["tasks_per_s"] for r in figures["recycled"]]
    print(f"\nrecycled/fixed (medians): {statistics.median(recycled) / statistics.median(fixed):.2f}; per round: "
          + ", ".join(f"{b / a:.2f}" for a, b in zip(fixed, recycled)))
    # what one recycle costs: the extra time of the recycled run, spread over its recycles
    recycles = statistics.median(r["recycles"] for r in figures["recycled"])
    if recycles:
        lost = (args.tasks / statistics.median(recycled) - args.tasks / statistics.median(fixed)) / recycles
        print(f"one recycle costs the fleet about {lost:.2f} s of its throughput (medians; a spawned replacement "
              f"imports and starts while the others work)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
