"""When a supervised worker process is due for replacement (``conductor_workers._recycling``)."""
from __future__ import annotations

from typing import Any, Dict

from hypothesis import given
from hypothesis import strategies as st

from conductor_workers._recycling import MB, RecycleLimits, resident_memory, tasks_executed


def report(**workers: Dict[str, Any]) -> Dict[str, Any]:
    return {"healthy": True, "workers": workers}


def worker(completed: int = 0, failed: int = 0, in_progress: int = 0, **extra: Any) -> Dict[str, Any]:
    return {"executions_completed": completed, "executions_failed": failed,
            "executions_in_progress": in_progress, "tasks_received": 99, **extra}


def test_no_limits_never_recycle() -> None:
    assert RecycleLimits().reason(report(a=worker(10 ** 6)), 10 ** 12) is None


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(0, 50)), max_size=4),
       st.integers(1, 200))
def test_the_task_limit_counts_every_ended_execution_of_every_worker(counts, limit) -> None:
    health = report(**{f"w{i}": worker(*c) for i, c in enumerate(counts)})
    executed = sum(sum(c) for c in counts)
    assert tasks_executed(health) == executed
    reason = RecycleLimits(max_tasks=limit).reason(health, None)
    assert (reason is not None) == (executed >= limit)
    if reason:
        assert "--max-tasks-per-child" in reason


def test_the_memory_limit_is_in_megabytes_of_resident_memory() -> None:
    limits = RecycleLimits(max_memory_mb=100)
    assert limits.reason(report(a=worker()), 100 * MB) is None
    assert "--max-memory-per-child 100" in (limits.reason(report(a=worker()), 100 * MB + 1) or "")
    assert limits.reason(report(a=worker()), None) is None  # unknown: never due


def test_a_wedged_worker_makes_its_process_due_whatever_the_limits() -> None:
    health = report(a=worker(), b=worker(wedged=True), c=worker(wedged=False))
    assert "wedged" in (RecycleLimits().reason(health, None) or "")
    assert "b" in (RecycleLimits(max_tasks=1000).reason(health, 1) or "")
    assert RecycleLimits().reason(report(a=worker(wedged=False)), None) is None


def test_resident_memory_is_this_process_s() -> None:
    rss = resident_memory()
    assert rss is not None and 5 * MB < rss < 10 ** 12
    ballast = bytearray(64 * MB)
    ballast[:: 4096] = b"x" * len(ballast[:: 4096])  # touch every page: resident now
    grown = resident_memory()
    assert grown is not None and grown - rss > 48 * MB
