"""Benchmarks: conductor_workers (ours) against the official Python SDK (the peer), side by side.

    python benchmarks/run.py [--server local|real|URL] [--quick] [--rounds N] [--json out.json]

Each scenario runs ours and the peer alternately (ours, peer, ours, peer, ... for ``--rounds``
rounds) and reports the median and the spread (min–max) of the rounds, as a Markdown table (ours,
peer, ratio ours/peer, target) on stdout and as JSON (``--json``; default
``benchmarks/results/<server>-<time>.json``).

How things are measured (the same way for both sides):

* Both clients run in their OWN process group: ours is ``benchmarks/our_worker.py`` (TaskManager +
  ``@worker_task``), the peer is ``benchmarks/peer_worker.py`` in the peer venv (conductor-python
  2.0.0). Client CPU = utime+stime of every process of the group, from ``/proc`` (sampled every
  50 ms and right at the edges of a measurement window; a process that appears later is added, one
  that exits keeps its last value); RSS = the sum of VmRSS over the group, peak = the highest sum
  sampled.
* The server runs in its own process too: ``python -m conductor_workers server`` (``local``), the
  real conductor-oss server from ``tests/real_server.py`` (``real``), or a given URL.
* Every client talks to the server through ``tests/support/proxy.py``, a counting HTTP proxy on
  loopback; the benchmark itself registers definitions and starts workflows directly, so only the
  client's requests are counted.
* Task and workflow names are fresh per run (uuid).
* Throughput (scenarios 1 and 3) QUEUES FIRST: the client is started and idles while the proxy's
  gate answers its polls with "nothing" (not counted); the N workflows are started; then the gate
  opens. Time = from the first poll forwarded after that to the N-th task update the proxy sees;
  requests/task = requests forwarded in that window / N; CPU/1000 tasks = client CPU in that window.
  Completion is then confirmed on the server (no running workflow of that name left).
* The ceiling (scenario 2) is ``benchmarks/ceiling_loop.py`` (requests, 10 threads, one Session
  each, trust_env=False, batch-poll + update-v2 chaining) on the same queued-first work, run both
  through the proxy and directly, which shows what the proxy costs.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(HERE))
sys.path.append(str(REPO_ROOT / "tests"))  # the test support package: support.proxy

import peer  # noqa: E402
from _measure import GroupSampler, log, percentile, summary  # noqa: E402 - some re-exported, see __all__
from _report import SCENARIOS, build_rows, markdown  # noqa: E402
from _scenarios import Bench, import_times  # noqa: E402
from _servers import Server, start_our_workers  # noqa: E402 - some re-exported, see __all__
from support.proxy import LoopbackProxy  # noqa: E402

from _report import SIDES  # noqa: E402


# --------------------------------------------------------------------------- main


def _attempt(fn: Callable[[], Dict[str, Any]], what: str) -> Dict[str, Any]:
    started = time.monotonic()
    try:
        result = fn()
        log(f"{what}: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in result.items() if not isinstance(v, (list, dict))))
        return result
    except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others
        log(f"{what}: FAILED {type(exc).__name__}: {exc}")
        traceback.print_exc(file=sys.stderr)
        return {"error": f"{type(exc).__name__}: {exc}", "seconds": time.monotonic() - started}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="local", help="local (default), real, or a server URL")
    parser.add_argument("--quick", action="store_true", help="1 round, tiny N, 3 s idle (a smoke run)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per scenario (default 3; quick 1)")
    parser.add_argument("--json", default=None, help="write results here (default benchmarks/results/...)")
    parser.add_argument("--n", type=int, default=None, help="tasks for throughput/ceiling (default 3000; quick 200)")
    parser.add_argument("--io-n", type=int, default=None, help="tasks for the I/O-bound run (default 2000; quick 200)")
    parser.add_argument("--idle-seconds", type=float, default=None, help="idle window (default 30; quick 3)")
    parser.add_argument("--pickups", type=int, default=None, help="workflows for pickup latency (default 20; quick 5)")
    parser.add_argument("--no-peer", action="store_true", help="run our side only")
    parser.add_argument("--only", default=None, help="comma-separated scenarios to run (others are left empty)")
    args = parser.parse_args(argv)
    quick = args.quick
    rounds = args.rounds or (1 if quick else 3)
    n = args.n or (200 if quick else 3000)
    io_n = args.io_n or (200 if quick else 2000)
    idle_s = args.idle_seconds if args.idle_seconds is not None else (3.0 if quick else 30.0)
    pickups = args.pickups or (5 if quick else 20)
    per_type = 3 if quick else 10
    only = set(args.only.split(",")) if args.only else set(SCENARIOS)

    results: Dict[str, Any] = {
        "meta": {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "server_kind": args.server if args.server in ("local", "real") else "url",
            "rounds": rounds, "quick": quick, "nproc": os.cpu_count(),
            "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "python": platform.python_version(), "platform": platform.platform(),
            "params": {"n": n, "io_n": io_n, "idle_s": idle_s, "pickups": pickups, "memory_tasks_per_type": per_type},
            "method": {
                "throughput": "queued first behind the proxy's gate; from the first poll forwarded after the gate "
                              "opens to the N-th update at the proxy",
                "cpu": "utime+stime of every process in the client's process group (/proc)",
                "rss": "sum of RSS over the client's process group, sampled every 50-100 ms; peak of the sums",
                "requests": "counted at tests/support/proxy.py (client requests only)",
            },
        },
        "scenarios": {s: {} for s in SCENARIOS},
    }

    # peer venv
    peer_python: Optional[Path] = None
    if args.no_peer:
        results["meta"]["peer_unavailable"] = "--no-peer"
    else:
        try:
            # A machine without PyPI makes pip fail; do not let it eat a quick run's time budget.
            peer_python = peer.ensure_peer_venv(pip_timeout=120.0 if quick else 600.0)
        except Exception as exc:  # noqa: BLE001
            results["meta"]["peer_unavailable"] = f"peer venv could not be built ({type(exc).__name__}: {str(exc).splitlines()[0]})"
            log(results["meta"]["peer_unavailable"])
    results["meta"]["peer"] = (f"{peer.PEER_DISTRIBUTION}=={peer.PEER_VERSION}" if peer_python
                               else results["meta"]["peer_unavailable"])
    sides = [s for s in SIDES if s == "ours" or peer_python is not None]

    tmp = Path(tempfile.mkdtemp(prefix="cw-bench-"))
    started = time.monotonic()
    log(f"starting server {args.server} (work dir {tmp})")
    server = Server(args.server, tmp)
    results["meta"]["server"] = server.version
    proxy = LoopbackProxy(server.url, record=False)
    bench = Bench(server, proxy, tmp, peer_python)
    sc = results["scenarios"]
    try:
        if "import_time" in only:
            log("7. import time")
            sc["import_time"] = import_times(peer_python, repeats=3 if quick else 7)
            log(f"import: ours {sc['import_time']['ours']:.3f} s, peer {sc['import_time']['peer']}")

        if "throughput" in only or "ceiling" in only:
            for side in sides:
                sc["throughput"][side] = []
            sc["ceiling"] = {"via_proxy": [], "direct": []}
            for r in range(rounds):
                if "throughput" in only:
                    for side in sides:
                        sc["throughput"][side].append(
                            _attempt(lambda: bench.run_drain(side, n, 10, "noop"), f"1. throughput {side} round {r + 1}"))
                sc["ceiling"]["via_proxy"].append(_attempt(lambda: bench.run_ceiling(n, True), f"2. ceiling via proxy round {r + 1}"))
                sc["ceiling"]["direct"].append(_attempt(lambda: bench.run_ceiling(n, False), f"2. ceiling direct round {r + 1}"))
            rates = [c["tasks_per_s"] for c in sc["ceiling"]["via_proxy"] if "tasks_per_s" in c]
            bench.ceiling_rate = statistics.median(rates) if rates else None

        if "io_bound" in only:
            ideal = io_n * 0.05 / 50
            sc["io_bound"] = {"n": io_n, "concurrency": 50, "ideal_s": ideal,
                              "ceiling_tasks_per_s": bench.ceiling_rate,
                              "bound_s": max(ideal, io_n / bench.ceiling_rate) if bench.ceiling_rate else ideal}
            for side in sides:
                sc["io_bound"][side] = []
            for r in range(rounds):
                for side in sides:
                    sc["io_bound"][side].append(
                        _attempt(lambda: bench.run_drain(side, io_n, 50, "sleep50"), f"3. io-bound {side} round {r + 1}"))

        if "pickup_latency" in only:
            for side in sides:
                sc["pickup_latency"][side] = []
            for r in range(rounds):
                for side in sides:
                    sc["pickup_latency"][side].append(
                        _attempt(lambda: bench.run_pickup(side, pickups), f"4. pickup {side} round {r + 1}"))

        if "idle" in only or "memory" in only:
            for side in sides:
                sc["idle"][side] = []
            for r in range(rounds):
                for side in sides:
                    sc["idle"][side].append(
                        _attempt(lambda: bench.run_idle_memory(side, idle_s, per_type), f"5+6. idle+memory {side} round {r + 1}"))
            # the memory figures come from the same runs (idle first, then a few tasks per type)
            sc["memory"] = {side: sc["idle"][side] for side in sides}
            sc["memory"]["note"] = "same client runs as 'idle': 10 types x 10 threads idle, then tasks per type"
    finally:
        proxy.close()
        bench.client.close()
        server.stop()

    if peer_python is None:
        for s in SCENARIOS:
            sc[s]["peer_unavailable"] = results["meta"]["peer_unavailable"]
    results["meta"]["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results["meta"]["seconds"] = time.monotonic() - started
    results["rows"] = build_rows(results)
    table = markdown(results)
    print(table)

    out = Path(args.json) if args.json else HERE / "results" / (
        f"{results['meta']['server_kind']}-{datetime.datetime.now():%Y%m%d-%H%M%S}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    log(f"wrote {out} ({results['meta']['seconds']:.0f} s)")
    return 0

# What other benchmarks import from here (middleware_cost.py, admission.py, cluster.py, ...).
__all__ = ["Bench", "GroupSampler", "Server", "log", "main", "percentile", "start_our_workers", "summary"]


if __name__ == "__main__":
    sys.exit(main())
