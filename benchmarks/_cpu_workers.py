"""The CPU-bound worker of ``benchmarks/cpu_processes.py``, run by ``conductor-workers run``.

    CPU_BENCH_TASK=<task type> CPU_BENCH_LOOPS=<n> \\
        python -m conductor_workers run benchmarks._cpu_workers --processes 2 --concurrency 2

One ``@worker_task`` whose task type and loop count come from the environment (the benchmark sets
them; spawned ``--processes`` children inherit it). :func:`spin` is a pure-Python loop that holds the
GIL throughout; ``peer_worker.py --mode cpu`` runs the same loop for the official SDK.
"""
from __future__ import annotations

import os
from typing import Dict

from conductor_workers import worker_task

TASK_TYPE = os.environ.get("CPU_BENCH_TASK", "cpu_bench")
LOOPS = int(os.environ.get("CPU_BENCH_LOOPS", "200000"))


def spin(loops: int) -> int:
    """Pure-Python arithmetic; ``loops`` is calibrated so that one call takes ~20 ms."""
    total = 0
    for i in range(loops):
        total += i * i % 7
    return total


@worker_task(TASK_TYPE)
def cpu_task() -> Dict[str, int]:
    return {"spin": spin(LOOPS)}
