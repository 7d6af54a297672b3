"""Smoke test of the benchmark harness: ``benchmarks/run.py --server local --quick`` runs to the end.

It asserts nothing about speed (figures are printed by the benchmark, never asserted): only that
the run exits 0 and its JSON has every scenario. Without the peer venv (no PyPI), the peer is marked
unavailable and our side still runs.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("throughput", "ceiling", "io_bound", "pickup_latency", "idle", "memory", "import_time")


def test_quick_benchmark_runs_and_reports_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "run.py"), "--server", "local", "--quick", "--json", str(out)],
        cwd=str(REPO_ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    results = json.loads(out.read_text())
    for scenario in SCENARIOS:
        assert scenario in results["scenarios"], scenario
        assert results["scenarios"][scenario], f"{scenario} is empty"
    assert "| metric |" in proc.stdout
