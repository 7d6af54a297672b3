"""What the admission gate reads: a :class:`Reading` of memory, CPU and pressure, from cgroup v2
(:class:`CgroupV2Reader`) or the process RSS against a budget (:class:`RssBudgetReader`); stdlib only."""
from __future__ import annotations

import logging
import os
import time
from typing import Callable, NamedTuple, Optional, Tuple

from . import _cgroup
from ._cgroup import CgroupLocation, CgroupUnavailable

from .errors import InvalidOptionError

log = logging.getLogger("conductor_workers.admission")

SIGNAL_CGROUP = "cgroup v2"
SIGNAL_RSS = "rss budget"
SIGNAL_NONE = "none: fixed concurrency"


# -- readings ----------------------------------------------------------------------------------------


class Reading(NamedTuple):
    """One look at the resources. ``memory_used``/``memory_limit`` in bytes (a limit of None: the
    gate's ``memory_budget``); ``cpu_fraction`` of the quota (None: unknown); ``pressure_events``:
    a counter that rises on OOM (cgroup ``oom`` + ``oom_kill``); ``at``: the gate's clock when read
    (None: the gate stamps it); ``high_events``: cgroup ``memory.events`` ``high``, which counts as
    pressure only while memory is above the target (page cache alone also trips it)."""

    memory_used: Optional[int]
    memory_limit: Optional[int]
    cpu_fraction: Optional[float] = None
    pressure_events: Optional[int] = None
    at: Optional[float] = None
    high_events: Optional[int] = None

    @property
    def memory_fraction(self) -> Optional[float]:
        if self.memory_used is None or not self.memory_limit:
            return None
        return self.memory_used / self.memory_limit


class ResourceReader:
    """What the gate reads. Subclass and implement :meth:`read`; the gate calls it from one thread at
    a time, and treats an exception as a failed reading (the previous one ages until it is stale)."""

    #: shown as ``signal`` in :meth:`AdmissionGate.state`
    signal: str = "custom"

    def read(self) -> Reading:
        raise NotImplementedError


def _process_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


class _CpuMeter:
    """A CPU fraction from successive counter readings: the cgroup's usage against its quota, and this
    process's own CPU against one core (the GIL: Python code in one process tops out near one core);
    the higher of the two, and at least 1.0 when the cgroup was throttled in between."""

    def __init__(self, process_cpu: Callable[[], float]) -> None:
        self._process_cpu = process_cpu
        self._previous: Optional[Tuple[float, Optional[int], Optional[int], float]] = None

    def sample(self, at: float, usage_usec: Optional[int] = None, throttled: Optional[int] = None,
               cores: float = 1.0) -> Optional[float]:
        process = self._process_cpu()
        previous, self._previous = self._previous, (at, usage_usec, throttled, process)
        if previous is None or at <= previous[0]:
            return None
        elapsed = at - previous[0]
        fraction = max(0.0, process - previous[3]) / elapsed
        if usage_usec is not None and previous[1] is not None:
            fraction = max(fraction, max(0, usage_usec - previous[1]) / 1e6 / elapsed / max(cores, 1e-9))
        if throttled is not None and previous[2] is not None and throttled > previous[2]:
            fraction = max(fraction, 1.0)
        return fraction


class CgroupV2Reader(ResourceReader):
    """This process's cgroup v2: ``memory.stat`` ``anon`` against the tightest ``memory.max`` /
    ``memory.high`` of its cgroup and ancestors, ``memory.events`` counters, and (``cpu=True``) CPU
    from ``cpu.stat`` against ``cpu.max`` (no quota: the CPUs this process may run on).

    The cgroup is found from ``proc_self_cgroup`` at the first read; limits are re-read every time.
    Raises :class:`~conductor_workers._cgroup.CgroupUnavailable` (an ``OSError``) without cgroup v2.
    """

    signal = SIGNAL_CGROUP

    def __init__(self, root: str = "/sys/fs/cgroup", proc_self_cgroup: str = "/proc/self/cgroup", *,
                 cpu: bool = True, clock: Callable[[], float] = time.monotonic,
                 process_cpu: Callable[[], float] = _process_cpu_seconds) -> None:
        self.root = root
        self.proc_self_cgroup = proc_self_cgroup
        self.cpu = cpu
        self._clock = clock
        self._location: Optional[CgroupLocation] = None
        self._meter = _CpuMeter(process_cpu)

    def location(self) -> CgroupLocation:
        """Where the files are (found once); raises ``CgroupUnavailable``."""
        if self._location is None:
            self._location = _cgroup.locate(self.root, self.proc_self_cgroup)
        return self._location

    def read(self) -> Reading:
        where = self.location()
        stat = _cgroup.parse_keyed(_cgroup.read_text(os.path.join(where.memory, "memory.stat")))
        if "anon" not in stat:
            raise ValueError(f"no anon in {where.memory}/memory.stat")
        limit = _cgroup.limit_of(where.memory)
        events_path = os.path.join(where.memory, "memory.events")
        oom: Optional[int] = None
        high: Optional[int] = None
        if os.path.exists(events_path):
            events = _cgroup.parse_keyed(_cgroup.read_text(events_path))
            oom = events.get("oom", 0) + events.get("oom_kill", 0)
            high = events.get("high", 0)
        now = self._clock()
        cpu: Optional[float] = None
        if self.cpu:
            cpu = self._read_cpu(where, now)
        return Reading(stat["anon"], limit, cpu, oom, now, high)

    def _read_cpu(self, where: CgroupLocation, now: float) -> Optional[float]:
        stat_path = os.path.join(where.cpu, "cpu.stat")
        usage = throttled = None
        if os.path.exists(stat_path):
            stat = _cgroup.parse_keyed(_cgroup.read_text(stat_path))
            usage, throttled = stat.get("usage_usec"), stat.get("nr_throttled")
        max_path = os.path.join(where.cpu, "cpu.max")
        quota = _cgroup.parse_cpu_max(_cgroup.read_text(max_path)) if os.path.exists(max_path) else None
        cores = quota if quota is not None else float(_available_cpus())
        return self._meter.sample(now, usage, throttled, cores)


class RssBudgetReader(ResourceReader):
    """This process's resident set size (``/proc/self/statm``) against ``budget_bytes``, and its CPU
    against one core. Linux only (elsewhere :meth:`read` raises ``OSError``: no signal)."""

    signal = SIGNAL_RSS

    def __init__(self, budget_bytes: int, *, statm: str = "/proc/self/statm",
                 clock: Callable[[], float] = time.monotonic,
                 process_cpu: Callable[[], float] = _process_cpu_seconds) -> None:
        if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, int) or budget_bytes <= 0:
            raise InvalidOptionError(f"budget_bytes must be a number of bytes > 0, got {budget_bytes!r}")
        self.budget_bytes = budget_bytes
        self.statm = statm
        self._clock = clock
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._meter = _CpuMeter(process_cpu)

    def read(self) -> Reading:
        fields = _cgroup.read_text(self.statm).split()
        if len(fields) < 2:
            raise ValueError(f"unexpected {self.statm}: {' '.join(fields)!r}")
        now = self._clock()
        return Reading(int(fields[1]) * self._page, self.budget_bytes, self._meter.sample(now), None, now)


def default_reader(memory_budget: Optional[int], cpu: bool) -> Tuple[Optional[ResourceReader], str, int]:
    """cgroup v2 with a memory limit, else the RSS budget, else none: (reader, why none, log level)."""
    cgroup = CgroupV2Reader(cpu=cpu)
    try:
        where = cgroup.location()
        if where.memory_limit is not None:
            return cgroup, "", logging.INFO
        why = f"cgroup v2 {where.own} has no memory limit"
    except CgroupUnavailable as exc:
        why = str(exc)
    if memory_budget is None:
        return None, f"{why}, and no memory_budget was given", logging.INFO
    rss = RssBudgetReader(memory_budget)
    try:
        rss.read()
    except (OSError, ValueError) as exc:
        return None, f"{why}, and the process RSS cannot be read ({exc})", logging.WARNING
    return rss, "", logging.INFO
