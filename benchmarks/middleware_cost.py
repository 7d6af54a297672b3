"""Client CPU per task with no middleware, with the metrics middleware, with tracing and with a time limit.

Usage::

    python benchmarks/middleware_cost.py [--n 2000] [--rounds 3] [--server local|real|URL]

Each variant is ``benchmarks/our_worker.py`` (10 threads, no-op tasks) draining N queued tasks, as
scenario 1 of ``benchmarks/run.py`` does: the same server, proxy and /proc sampling, the variants
interleaved round by round in one run. The variant is passed to the worker process in
``BENCH_MIDDLEWARE``:

* ``none``: what ``run.py`` measures (no middleware);
* ``metrics``: :class:`~conductor_workers.metrics.MetricsMiddleware` (hooks only);
* ``tracing``: :class:`~conductor_workers.tracing.TracingMiddleware` on the OpenTelemetry SDK with
  a batching span processor (spans are dropped at export, so the figure is the SDK's pipeline);
* ``time_limit``: the ``time_limit`` option (600 s, never reached: the watchdog's bookkeeping);
* ``all``: the three together.

Prints a table: median client CPU seconds per 1000 tasks, tasks/s, and each as a ratio to ``none``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as harness  # noqa: E402
from support.proxy import LoopbackProxy  # noqa: E402  (run put tests/ on sys.path)

VARIANTS = ("none", "metrics", "tracing", "time_limit", "all")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="local", help="local (default), real, or a server URL")
    parser.add_argument("--n", type=int, default=2000, help="tasks per run (default 2000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="cw-mw-bench-"))
    server = harness.Server(args.server, tmp)
    proxy = LoopbackProxy(server.url, record=False)
    bench = harness.Bench(server, proxy, tmp, None)
    results: Dict[str, List[Dict[str, Any]]] = {variant: [] for variant in VARIANTS}
    started = time.monotonic()
    try:
        for round_index in range(args.rounds):
            order = VARIANTS if round_index % 2 == 0 else tuple(reversed(VARIANTS))
            for variant in order:
                os.environ["BENCH_MIDDLEWARE"] = variant
                result = bench.run_drain("ours", args.n, 10, "noop")
                results[variant].append(result)
                harness.log(f"round {round_index + 1} {variant}: {result['cpu_s_per_1000']:.2f} CPU s/1000 tasks, "
                            f"{result['tasks_per_s']:.0f} tasks/s, complete={result['verified_complete']}")
    finally:
        os.environ.pop("BENCH_MIDDLEWARE", None)
        proxy.close()
        server.stop()

    def median(variant: str, key: str) -> float:
        return statistics.median(r[key] for r in results[variant])

    base_cpu, base_rate = median("none", "cpu_s_per_1000"), median("none", "tasks_per_s")
    print(f"\nMiddleware cost: our_worker.py, 10 threads, {args.n} no-op tasks, {args.rounds} rounds, "
          f"server {server.version}, {os.cpu_count()} cores, {time.monotonic() - started:.0f} s\n")
    print("| variant | client CPU s / 1000 tasks | × none | tasks/s | × none |")
    print("|---|---|---|---|---|")
    for variant in VARIANTS:
        cpu, rate = median(variant, "cpu_s_per_1000"), median(variant, "tasks_per_s")
        print(f"| {variant} | {cpu:.2f} | {cpu / base_cpu:.2f} | {rate:.0f} | {rate / base_rate:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
