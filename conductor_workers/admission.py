"""Memory-aware admission: an opt-in gate in front of every runner's pool.

``TaskManager(client, workers, admission=AdmissionGate(...))``: each worker's ``concurrency`` becomes
its maximum, and a process-wide gate decides how many of those slots a worker may hold now:

* every worker always gets ``min_slots`` (never fewer while work waits);
* while memory (and, with ``cpu_target``, CPU) is below its target, a worker whose slots are all
  busy and whose last poll came back full gets one more slot, at most one per ``ramp_interval``,
  and only on readings that show the tasks it already holds (see :func:`decide` for the timing
  rules: a task's memory shows some time after its slot is granted);
* between the target and the hard limit, limits hold: no worker grows, a freed slot may be refilled;
* at or above ``memory_hard_limit``, or while the cgroup's oom counters rise (or its ``high``
  counter rises with memory above the target), the gate holds polling altogether until memory falls
  below ``resume_below`` (halfway back to the target, at most 5 points under the hard limit). Every
  worker then keeps no more slots than it holds at that moment: after the episode each one grows
  again from there. Running tasks are never cancelled;
* without a readable signal, or when readings go stale (none newer than ``stale_after``), every
  worker runs at its fixed ``concurrency``, exactly as without a gate; the gate says so once in the log.

Signals (the default reader): cgroup v2 when this process's cgroup (or an ancestor) has a memory
limit: ``anon`` from ``memory.stat`` against the smaller of ``memory.max`` and ``memory.high``
(never ``memory.current``, which counts page cache), ``oom``/``oom_kill``/``high`` from
``memory.events``, CPU from ``cpu.stat`` against ``cpu.max``. Otherwise, with ``memory_budget``:
the process's RSS (``/proc/self/statm``) against it. Otherwise none. Tests and benchmarks inject a
:class:`ResourceReader`.

The decision is the pure function :func:`decide` (and :func:`memory_zone` for the process-wide
part); :class:`AdmissionGate` keeps the state (per task type: the limit, the last step's time, whether
the last poll was full, since when every slot is busy; process-wide: the latest reading, the
readings of the last ``settle_time``, the hold flag) under one lock, and refreshes readings on a daemon thread every ``refresh_interval``
(or, with an injected clock, lazily on the caller's thread). Nothing runs at import.
"""
from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from . import _validate
from ._admission_rules import (
    FALLBACK,
    GROW,
    HELD,
    HOLD,
    decide,
    Decision,
    _grow_reason,
    memory_zone,
    Picture,
    Settings,
    WorkerState,
    Zone,
)
from ._resources import (
    SIGNAL_CGROUP,
    SIGNAL_NONE,
    SIGNAL_RSS,
    CgroupV2Reader,
    Reading,
    ResourceReader,
    RssBudgetReader,
    default_reader,
)
from .errors import InvalidOptionError

log = logging.getLogger(__name__)



#: a log record to emit outside the lock: (level, format, args)
Message = Tuple[int, str, Tuple[Any, ...]]
_WAIT_FOR_READ = 0.05  # real seconds a caller waits for another thread's read when its own is stale


def _number(name: str, value: Any, *, low: float, high: float = math.inf, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidOptionError(f"{name} must be a finite number, got {value!r}")
    if value < low or (low_open and value == low) or value > high:
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        raise InvalidOptionError(f"{name} must be {bound}{'' if high == math.inf else f' and <= {high:g}'}, "
                                 f"got {value!r}")
    return float(value)


class AdmissionGate:
    """The process-wide admission controller that runners ask before every poll (see the module docs).

    :param memory_target: below this fraction of the memory limit, workers may grow.
    :param memory_hard_limit: at or above it, polling is held until memory falls.
    :param memory_budget: bytes; outside a container, the process RSS is measured against it (with a
        cgroup or an injected reader whose limit is larger, it caps that limit).
    :param cpu_target: fraction of the CPU quota (or of one core, for this process with the GIL)
        above which workers stop growing; None: CPU is not looked at.
    :param min_slots: slots every worker always gets (at most its ``concurrency``).
    :param ramp_interval: seconds between two steps of one worker; make it at least the time a task
        takes from its poll to its peak memory.
    :param settle_time: seconds memory must have stayed below the target before any worker grows,
        and the longest a worker waits after a poll that brought it several tasks (a ramp interval
        per task); default ``max(1, 5 * ramp_interval)``.
    :param reader: a :class:`ResourceReader` (tests, benchmarks, other platforms); default: cgroup v2,
        else the RSS budget, else none (fixed concurrency).
    :param clock: monotonic seconds; readings' ``at`` and every interval use it.
    :param refresh_interval: seconds between readings.
    :param stale_after: readings older than this are not used (fixed concurrency); default 5 ×
        ``refresh_interval``.
    :param background: read on a daemon thread (default when ``clock`` is ``time.monotonic``), or
        lazily on the calling thread (the default with an injected clock: deterministic tests).
    """

    def __init__(self, *, memory_target: float = 0.8, memory_hard_limit: float = 0.9,
                 memory_budget: Optional[int] = None, cpu_target: Optional[float] = None,
                 min_slots: int = 1, ramp_interval: float = 1.0,
                 reader: Optional[ResourceReader] = None,
                 clock: Callable[[], float] = time.monotonic,
                 refresh_interval: float = 0.1, stale_after: Optional[float] = None,
                 settle_time: Optional[float] = None, background: Optional[bool] = None) -> None:
        target = _number("memory_target", memory_target, low=0.0, high=1.0, low_open=True)
        hard = _number("memory_hard_limit", memory_hard_limit, low=target, high=1.0)
        if memory_budget is not None and (isinstance(memory_budget, bool) or not isinstance(memory_budget, int)
                                          or memory_budget <= 0):
            raise InvalidOptionError(f"memory_budget must be a number of bytes > 0, got {memory_budget!r}")
        cpu = None if cpu_target is None else _number("cpu_target", cpu_target, low=0.0, low_open=True)
        if isinstance(min_slots, bool) or not isinstance(min_slots, int) or min_slots < 1:
            raise InvalidOptionError(f"min_slots must be an integer >= 1, got {min_slots!r}")
        # durations end in waits: at most _validate's bound, which every wait takes
        longest = _validate.MAX_WAIT_SECONDS
        ramp = _number("ramp_interval", ramp_interval, low=0.0, high=longest)
        settle = max(1.0, 5 * ramp) if settle_time is None else _number("settle_time", settle_time, low=0.0,
                                                                         high=longest)
        refresh = _number("refresh_interval", refresh_interval, low=0.0, low_open=True, high=longest)
        stale = 5 * refresh if stale_after is None else _number("stale_after", stale_after, low=refresh,
                                                                 low_open=True, high=longest)
        if reader is not None and not callable(getattr(reader, "read", None)):
            raise InvalidOptionError(f"reader must have a read() method, got {reader!r}")
        if not callable(clock):
            raise InvalidOptionError(f"clock must be callable, got {clock!r}")
        self._settings = Settings(target, hard, hard - min(0.05, (hard - target) / 2), cpu, min_slots, ramp, settle)
        self.memory_budget = memory_budget
        self._clock = clock
        self._refresh_interval = refresh
        self._stale_after = stale
        self._background = (clock is time.monotonic) if background is None else bool(background)
        self._lock = threading.Condition()  # the one lock: guards everything below
        messages: List[Message] = []
        if reader is None:
            reader, why, level = default_reader(memory_budget, cpu is not None)
            if reader is None:
                messages.append((level, "admission gate: no memory signal (%s); every worker runs at its "
                                        "fixed concurrency", (why,)))
        self._reader = reader
        self._signal = SIGNAL_NONE if reader is None else str(getattr(reader, "signal", "custom"))
        self._workers: Dict[str, WorkerState] = {}
        self._last: Dict[str, Tuple[int, int]] = {}  # task type -> (limit, maximum) of its last decision
        self._reading: Optional[Reading] = None
        self._reading_at = -math.inf
        self._fraction: Optional[float] = None
        self._history: Deque[Tuple[float, float]] = deque()
        self._oom: Optional[int] = None
        self._high: Optional[int] = None
        self._pressure_until = -math.inf
        self._held = False
        self._episode = 0
        self._error: Optional[str] = None
        self._fallback: Optional[str] = "no memory signal" if reader is None else None
        self._fallback_logged = reader is None
        self._resume_logged = False
        self._refreshing = False
        self._last_attempt = -math.inf
        self._started = False
        self._closed = False
        self._thread: Optional[threading.Thread] = None
        _emit(messages)

    # -- what the runner calls ---------------------------------------------------------------------

    def limit(self, task_type: str, maximum: int, in_flight: int) -> int:
        """Slots this worker may hold now: ``min(min_slots, maximum) <= result <= maximum``."""
        self._refresh_if_due()
        messages: List[Message] = []
        with self._lock:
            now = self._clock()
            picture = self._picture(now, messages)
            state = self._workers.get(task_type)
            if state is None:
                state = WorkerState(limit=self._settings.min_slots)
            decision = decide(self._settings, state, picture, maximum=maximum, in_flight=in_flight, now=now,
                              held=self._held, episode=self._episode)
            self._held, self._episode = decision.held, decision.episode
            self._workers[task_type] = decision.state
            self._last[task_type] = (decision.limit, max(0, maximum))
        _emit(messages)
        return decision.limit

    def may_poll(self, task_type: str) -> bool:
        """False at or above the hard limit (until memory falls below ``resume_below``) or while the
        cgroup's oom/high counters rise: the runner then does not poll at all (nothing is cancelled)."""
        self._refresh_if_due()
        messages: List[Message] = []
        with self._lock:
            zone = memory_zone(self._settings, self._picture(self._clock(), messages), self._held)
            if zone.held and not self._held:
                self._episode += 1
            self._held = zone.held
        _emit(messages)
        return not zone.held

    def poll_returned(self, task_type: str, requested: int, received: int) -> None:
        """A poll for ``requested`` tasks brought ``received``; a full one makes the worker eligible
        for its next step, any other one ends that eligibility."""
        if requested <= 0:
            return
        with self._lock:
            state = self._workers.get(task_type) or WorkerState(limit=self._settings.min_slots)
            full = received >= requested
            state = state._replace(eligible=full, busy_since=state.busy_since if full else None)
            if received >= 2:
                # Several tasks at once: as if they were that many steps, wait a ramp interval for
                # each (at most settle_time) before the next step; their memory takes a while to show.
                wait = min(self._settings.settle_time, received * self._settings.ramp_interval)
                state = state._replace(reading_after=max(state.reading_after, self._clock() + wait))
            self._workers[task_type] = state

    def state(self, task_type: str) -> Dict[str, Any]:
        """``{"limit", "reason", "signal", "memory_fraction"}`` for status(), health and metrics.

        ``limit`` is None under fixed concurrency (no usable signal, or before the worker's first
        look), 0 while polling is held.
        """
        self._refresh_if_due()
        with self._lock:
            picture = self._picture(self._clock(), None)
            zone = memory_zone(self._settings, picture, self._held)
            last = self._last.get(task_type)
            limit: Optional[int]
            if zone.name == FALLBACK:
                limit, reason = None, zone.reason
            elif zone.held:
                limit, reason = 0, zone.reason
            elif last is None:
                limit, reason = None, "not polled yet"
            elif zone.name == HOLD:
                limit, reason = last[0], zone.reason
            else:
                limit, reason = last[0], _grow_reason(self._settings, zone, last[0], last[1])
            fraction = picture.memory_fraction
        return {"limit": limit, "reason": reason, "signal": self._signal,
                "memory_fraction": None if fraction is None else round(fraction, 4)}

    def wake_interval(self) -> float:
        """How often a poll thread held by the gate asks again."""
        return max(0.01, min(self._settings.ramp_interval / 2, 0.25))

    # -- other public bits -------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def signal(self) -> str:
        return self._signal

    def close(self) -> None:
        """Stop the reading thread (it also ends by itself once the gate is garbage); the gate goes on
        working, and reads on the caller's thread when its reading gets old."""
        with self._lock:
            self._closed = True

    def __repr__(self) -> str:
        s = self._settings
        return (f"AdmissionGate(signal={self._signal!r}, memory_target={s.memory_target}, "
                f"memory_hard_limit={s.memory_hard_limit}, min_slots={s.min_slots}, ramp_interval={s.ramp_interval})")

    # -- readings ----------------------------------------------------------------------------------

    def _refresh_if_due(self) -> None:
        """Read now when due: lazily every refresh_interval, or (with the reading thread) only when
        that thread fell behind by half of stale_after. The read happens outside the lock."""
        if self._reader is None:
            return
        with self._lock:
            now = self._clock()
            first = not self._started
            self._started = True
            due_after = self._stale_after / 2 if self._background else self._refresh_interval
            if not first and now - self._last_attempt < due_after:
                return
            if self._refreshing:  # another thread is reading: wait a little if what we have is stale
                if now - self._reading_at > self._stale_after:
                    self._lock.wait_for(lambda: not self._refreshing, _WAIT_FOR_READ)
                return
            self._refreshing = True
            self._last_attempt = now
        self._read()
        if first and self._background:
            thread = threading.Thread(target=_refresh_loop, args=(weakref.ref(self), self._refresh_interval),
                                      name="cw-admission", daemon=True)
            with self._lock:
                self._thread = thread
            thread.start()

    def _refresh_from_thread(self) -> bool:
        """One read by the reading thread; False once the gate is closed."""
        with self._lock:
            if self._closed:
                return False
            if self._refreshing:
                return True
            self._refreshing = True
            self._last_attempt = self._clock()
        self._read()
        return True

    def _read(self) -> None:
        """Call the reader (the caller set ``_refreshing``) and store what it says."""
        assert self._reader is not None
        error: Optional[BaseException] = None
        reading: Optional[Reading] = None
        try:
            reading = self._reader.read()
        except Exception as exc:  # noqa: BLE001 - a failed reading ages into "stale"
            error = exc
        messages: List[Message] = []
        with self._lock:
            self._refreshing = False
            self._lock.notify_all()
            now = self._clock()
            if reading is not None:
                self._store(reading, now, messages)
            elif error is not None:
                text = f"{type(error).__name__}: {error}"
                if self._error is None:
                    messages.append((logging.DEBUG, "admission gate: reading failed: %s", (text,)))
                self._error = text
        _emit(messages)

    def _store(self, reading: Reading, now: float, messages: List[Message]) -> None:
        at = now if reading.at is None else reading.at
        limit = reading.memory_limit
        if self.memory_budget is not None:
            limit = self.memory_budget if not limit else min(limit, self.memory_budget)
        reading = reading._replace(at=at, memory_limit=limit)
        fraction = reading.memory_fraction
        window = self._window()
        self._reading, self._reading_at, self._fraction = reading, at, fraction
        if fraction is not None:
            self._history.append((at, fraction))
        while self._history and self._history[0][0] < at - window:
            self._history.popleft()
        hold_for = max(self._settings.ramp_interval, 2 * self._refresh_interval)
        if reading.pressure_events is not None:
            if self._oom is not None and reading.pressure_events > self._oom:
                self._pressure_until = at + hold_for
            self._oom = reading.pressure_events
        if reading.high_events is not None:
            if (self._high is not None and reading.high_events > self._high and fraction is not None
                    and fraction >= self._settings.memory_target):
                self._pressure_until = at + hold_for
            self._high = reading.high_events
        if self._error is not None:
            messages.append((logging.DEBUG, "admission gate: reading works again", ()))
            self._error = None

    def _picture(self, now: float, messages: Optional[List[Message]]) -> Picture:
        """The memory picture now (caller holds the lock); notes a change to or from fixed concurrency."""
        reading = self._reading
        fallback: Optional[str] = None
        if self._reader is None:
            fallback = "no memory signal"
        elif reading is None:
            fallback = "memory cannot be read" if self._error is not None else "no reading yet"
        elif now - self._reading_at > self._stale_after:
            fallback = "readings stale"
        elif self._fraction is None:
            fallback = "no memory reading"
        if messages is not None:
            self._note_fallback(fallback, now, messages)
        if fallback is not None or reading is None:
            return Picture(None, None, None, False, self._reading_at, fallback)
        fraction = self._fraction
        assert fraction is not None
        since = now - self._window()
        peak = max([f for at, f in self._history if at >= since] + [fraction])
        return Picture(fraction, peak, reading.cpu_fraction, now < self._pressure_until, self._reading_at)

    def _window(self) -> float:
        return max(self._settings.ramp_interval, self._settings.settle_time)

    def _note_fallback(self, fallback: Optional[str], now: float, messages: List[Message]) -> None:
        if fallback == self._fallback or fallback == "no reading yet":
            return
        previous, self._fallback = self._fallback, fallback
        if fallback is None:
            if previous is not None:
                level = logging.INFO if not self._resume_logged else logging.DEBUG
                self._resume_logged = True
                messages.append((level, "admission gate: %s readings resumed; admission is memory-aware again",
                                 (self._signal,)))
            return
        detail = f"; last error: {self._error}" if self._error else ""
        if fallback == "readings stale":
            age = now - self._reading_at
            detail = f" (the last is {age:.1f}s old, stale after {self._stale_after:g}s){detail}"
        level = logging.WARNING if not self._fallback_logged else logging.DEBUG
        self._fallback_logged = True
        messages.append((level, "admission gate: %s%s; every worker runs at its fixed concurrency until "
                                "readings resume", (fallback, detail)))


def _emit(messages: List[Message]) -> None:
    for level, message, args in messages:
        log.log(level, message, *args)


def _refresh_loop(ref: "weakref.ReferenceType[AdmissionGate]", interval: float) -> None:
    """The reading thread: holds the gate only weakly, ends with it or at close()."""
    while True:
        gate = ref()
        if gate is None:
            return
        try:
            if not gate._refresh_from_thread():
                return
        except Exception:  # noqa: BLE001 - callers take over the reading when this thread falls behind
            log.exception("admission gate: the reading thread failed; callers read from now on")
            return
        del gate
        time.sleep(interval)


__all__ = [
    "FALLBACK", "GROW", "HELD", "HOLD", "SIGNAL_CGROUP", "SIGNAL_NONE", "SIGNAL_RSS",
    "AdmissionGate", "CgroupV2Reader", "Decision", "Picture", "Reading", "ResourceReader", "RssBudgetReader",
    "Settings", "WorkerState", "Zone", "decide", "memory_zone",
]
