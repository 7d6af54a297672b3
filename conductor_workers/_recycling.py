"""When a supervised worker process should be replaced: the limits of ``run --max-tasks-per-child`` and
``--max-memory-per-child``, and a wedged worker.

* The child measures, the supervisor replaces. Each time a child reports to its supervisor it asks
  :meth:`RecycleLimits.reason` whether it is due; once it is, every report carries the reason.
* Tasks are the executions that ended (completed, failed, over the time limit, or returned
  IN_PROGRESS), summed over the child's workers, from its health report's counters.
* Memory is the child's resident set size: ``/proc/self/statm`` where there is one, else the peak
  RSS ``getrusage`` reports. A megabyte is 2**20 bytes (Celery's option counts KiB; ours MB).
* A worker whose health entry says ``wedged`` (every slot held past a grace period by tasks over
  their time limit, threads that cannot be stopped) makes its process due whatever the limits.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Mapping, Optional

import attrs

try:
    import resource
except ImportError:  # pragma: no cover - not on Windows
    resource = None  # type: ignore[assignment]

MB = 1024 * 1024


def _statm_rss() -> Optional[int]:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # no procfs
        return None


def resident_memory() -> Optional[int]:
    """This process's resident set size in bytes (None where it cannot be read)."""
    rss = _statm_rss()
    if rss is not None or resource is None:
        return rss
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # macOS counts bytes, Linux KiB


def tasks_executed(health: Mapping[str, Any]) -> int:
    """Executions that ended, over every worker of a :func:`~conductor_workers.health.health_report`."""
    return sum(worker.get(name) or 0 for worker in health.get("workers", {}).values()
               for name in ("executions_completed", "executions_failed", "executions_in_progress"))


@attrs.frozen
class RecycleLimits:
    """When a worker process is due for replacement (None: no such limit)."""

    max_tasks: Optional[int] = None
    max_memory_mb: Optional[int] = None

    def reason(self, health: Mapping[str, Any], rss: Optional[int]) -> Optional[str]:
        """Why the process with this health report and resident memory (bytes) is due, or None."""
        wedged = sorted(name for name, worker in health.get("workers", {}).items() if worker.get("wedged"))
        if wedged:
            return f"wedged: every slot of {', '.join(wedged)} is held by tasks over their time limit"
        executed = tasks_executed(health)
        if self.max_tasks is not None and executed >= self.max_tasks:
            return f"executed {executed} tasks (--max-tasks-per-child {self.max_tasks})"
        if self.max_memory_mb is not None and rss is not None and rss > self.max_memory_mb * MB:
            return f"resident memory {rss / MB:.0f} MB (--max-memory-per-child {self.max_memory_mb})"
        return None


__all__ = ["RecycleLimits", "resident_memory", "tasks_executed"]
