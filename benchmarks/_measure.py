"""How the benchmarks measure: CPU and RSS of a process group from ``/proc``, and the statistics
of repeated rounds (median, spread, percentiles).
"""
from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- /proc sampling


class GroupSampler:
    """CPU seconds and RSS of every process in one process group, from ``/proc``."""

    def __init__(self, pgid: int, interval: float = 0.05) -> None:
        self.pgid = pgid
        self.interval = interval
        self._cpu_by_pid: Dict[int, float] = {}
        self._lock = threading.Lock()
        self.rss = 0
        self.peak_rss = 0
        self.processes = 0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> float:
        """Read /proc now; the group's CPU seconds so far."""
        rss = 0
        count = 0
        seen: Dict[int, float] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as fh:
                    stat = fh.read()
            except OSError:
                continue
            fields = stat[stat.rindex(b")") + 2:].split()
            if int(fields[2]) != self.pgid or fields[0] == b"Z":
                continue
            seen[int(entry.name)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
            rss += int(fields[21]) * PAGE
            count += 1
        with self._lock:
            self._cpu_by_pid.update(seen)
            self.rss = rss
            self.processes = count
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_processes = max(self.peak_processes, count)
            return sum(self._cpu_by_pid.values())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------- statistics


def summary(values: Sequence[Optional[float]]) -> Optional[Dict[str, Any]]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "values": list(values)}


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear interpolation between closest ranks."""
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    k = (len(data) - 1) * pct / 100.0
    lo = int(k)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)
