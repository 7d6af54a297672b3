"""The admission gate: the pure decision, the gate's state with an injected clock and reader, cgroup v2
parsing from fixture files (this machine is cgroup v1), the RSS budget path live, and properties
(hypothesis): never above the maximum, never below the minimum while work waits, never admitting at
or above the hard limit, and a simulated workload that never overshoots by more than one step."""
from __future__ import annotations

import logging
import math
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conductor_workers import _cgroup
from conductor_workers.admission import (
    FALLBACK,
    GROW,
    HELD,
    HOLD,
    SIGNAL_CGROUP,
    SIGNAL_NONE,
    SIGNAL_RSS,
    AdmissionGate,
    CgroupV2Reader,
    Picture,
    Reading,
    ResourceReader,
    RssBudgetReader,
    Settings,
    WorkerState,
    decide,
    memory_zone,
)
from conductor_workers.errors import InvalidOptionError

FIXTURES = Path(__file__).resolve().parent / "cgroup_fixtures"
GIB = 2**30
MIB = 2**20


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeReader(ResourceReader):
    """Reports ``fraction`` of a 1 GiB limit, stamped with the gate's fake clock (or ``frozen_at``)."""

    signal = "fake"

    def __init__(self, clock: Clock, fraction: float = 0.1) -> None:
        self.clock = clock
        self.fraction = fraction
        self.cpu: Optional[float] = None
        self.oom: Optional[int] = None
        self.high: Optional[int] = None
        self.fail: Optional[Exception] = None
        self.frozen_at: Optional[float] = None
        self.reads = 0

    def read(self) -> Reading:
        self.reads += 1
        if self.fail is not None:
            raise self.fail
        at = self.clock() if self.frozen_at is None else self.frozen_at
        return Reading(int(self.fraction * GIB), GIB, self.cpu, self.oom, at, self.high)


def make_gate(clock: Clock, reader: ResourceReader, **kwargs) -> AdmissionGate:
    options = dict(memory_target=0.8, memory_hard_limit=0.9, min_slots=1, ramp_interval=1.0,
                   refresh_interval=0.1, reader=reader, clock=clock)
    options.update(kwargs)
    return AdmissionGate(**options)


def picture(fraction: Optional[float], *, peak: Optional[float] = None, cpu: Optional[float] = None,
            pressure: bool = False, read_at: float = 100.0, fallback: Optional[str] = None) -> Picture:
    return Picture(fraction, fraction if peak is None else peak, cpu, pressure, read_at, fallback)


SETTINGS = Settings(memory_target=0.8, memory_hard_limit=0.9, resume_below=0.85, cpu_target=None,
                    min_slots=2, ramp_interval=1.0)


# -- the pure decision -------------------------------------------------------------------------------


def test_without_a_reading_the_limit_is_the_maximum():
    state = WorkerState(limit=3)
    decision = decide(SETTINGS, state, picture(None, fallback="readings stale"), maximum=16, in_flight=0, now=100)
    assert decision.limit == 16 and decision.may_poll
    assert decision.reason == "readings stale: fixed concurrency"
    assert decision.state.limit == 3  # the memory-aware limit is kept for when readings resume


def test_one_step_after_a_full_poll_with_every_slot_busy():
    state = WorkerState(limit=4, eligible=True, busy_since=99.0)
    decision = decide(SETTINGS, state, picture(0.5), maximum=16, in_flight=4, now=100)
    assert decision.limit == 5 and decision.may_poll
    assert decision.state == WorkerState(limit=5, last_grant=100, eligible=False, episode=0, busy_since=None)


def test_the_step_waits_for_a_reading_taken_a_ramp_interval_after_every_slot_became_busy():
    # the slots just filled (a burst refill): their memory is not in the reading yet
    state = WorkerState(limit=4, eligible=True)
    decision = decide(SETTINGS, state, picture(0.1, read_at=99.0), maximum=16, in_flight=4, now=100)
    assert decision.limit == 4 and decision.state.busy_since == 100
    later = decide(SETTINGS, decision.state, picture(0.1, read_at=100.9), maximum=16, in_flight=4, now=101)
    assert later.limit == 4
    later = decide(SETTINGS, decision.state, picture(0.1, read_at=101.0), maximum=16, in_flight=4, now=101)
    assert later.limit == 5
    # a slot freed and refilled in between does not start the wait again (the settle window covers it)
    freed = decide(SETTINGS, decision.state, picture(0.1, read_at=101.0), maximum=16, in_flight=3, now=101)
    assert freed.limit == 4 and freed.state.busy_since == 100


def test_after_a_poll_that_brought_several_tasks_the_step_waits_a_ramp_interval_for_each():
    clock = Clock()
    gate = make_gate(clock, FakeReader(clock, 0.2), ramp_interval=0.1, settle_time=1.0)
    assert gate.limit("t", 32, 0) == 1
    gate.poll_returned("t", 1, 1)
    gate.limit("t", 32, 1)
    clock.advance(0.1)
    assert gate.limit("t", 32, 1) == 2
    gate.poll_returned("t", 1, 1)
    gate.limit("t", 32, 2)
    clock.advance(0.1)
    assert gate.limit("t", 32, 2) == 3  # single tasks: one step per ramp interval
    assert gate.limit("t", 32, 0) == 3  # idle, then three tasks at once
    gate.poll_returned("t", 3, 3)
    gate.limit("t", 32, 3)
    clock.advance(0.2)
    assert gate.limit("t", 32, 3) == 3  # their memory may not show yet
    clock.advance(0.1)
    assert gate.limit("t", 32, 3) == 4
    assert gate.limit("t", 32, 0) == 4  # 30 tasks at once: at most settle_time
    gate.poll_returned("t", 30, 30)
    gate.limit("t", 32, 4)
    clock.advance(0.9)
    assert gate.limit("t", 32, 4) == 4
    clock.advance(0.1)
    assert gate.limit("t", 32, 4) == 5


def test_a_short_poll_starts_the_wait_for_a_reading_again():
    clock = Clock()
    gate = make_gate(clock, FakeReader(clock, 0.2))
    assert gate.limit("t", 32, 0) == 1
    gate.poll_returned("t", 1, 1)
    assert gate.limit("t", 32, 1) == 1  # busy from 1000
    clock.advance(0.5)
    gate.poll_returned("t", 1, 0)  # idle: the queue is empty ...
    gate.poll_returned("t", 1, 1)  # ... and a burst arrives at 1000.5
    clock.advance(0.6)
    assert gate.limit("t", 32, 1) == 1  # busy again from 1001.1
    clock.advance(1.0)
    assert gate.limit("t", 32, 1) == 2


@pytest.mark.parametrize("change, why", [
    (dict(eligible=False), "the last poll was not full"),
    (dict(in_flight=3), "a slot is free"),
    (dict(last_grant=99.5), "less than a ramp interval since the last step"),
    (dict(read_at=99.5), "the reading does not show every busy slot yet"),
    (dict(peak=0.82), "memory reached the target within the ramp interval"),
    (dict(maximum=4), "at the maximum"),
])
def test_no_step_when(change, why):
    state = WorkerState(limit=4, eligible=change.get("eligible", True), last_grant=change.get("last_grant", -math.inf),
                        busy_since=98.8)
    pic = picture(0.5, peak=change.get("peak"), read_at=change.get("read_at", 100.0))
    decision = decide(SETTINGS, state, pic, maximum=change.get("maximum", 16), in_flight=change.get("in_flight", 4),
                      now=100)
    assert decision.limit == 4, why
    assert decision.may_poll


def test_between_target_and_hard_limit_limits_hold_and_freed_slots_refill():
    state = WorkerState(limit=6, eligible=True)
    decision = decide(SETTINGS, state, picture(0.85), maximum=16, in_flight=2, now=100)
    assert decision.limit == 6 and decision.may_poll  # 4 slots may be refilled, none added
    assert decision.reason == "memory at or above the target 80%: holding"


def test_at_the_hard_limit_polling_is_held_and_the_limit_shrinks_to_what_is_held():
    state = WorkerState(limit=10, eligible=True)
    decision = decide(SETTINGS, state, picture(0.93), maximum=16, in_flight=7, now=100)
    assert not decision.may_poll and decision.held and decision.episode == 1
    assert decision.limit == 7
    assert decision.reason == "memory reached the hard limit 90%: polling held until below 85%"
    # never below the minimum
    assert decide(SETTINGS, state, picture(0.93), maximum=16, in_flight=0, now=100).limit == 2


def test_polling_resumes_only_below_resume_below():
    zone = memory_zone(SETTINGS, picture(0.87), held=True)
    assert zone.name == HELD and zone.held
    zone = memory_zone(SETTINGS, picture(0.87), held=False)
    assert zone.name == HOLD and not zone.held
    zone = memory_zone(SETTINGS, picture(0.84), held=True)
    assert zone.name == HOLD and not zone.held


def test_after_a_hold_episode_a_worker_that_was_not_asked_shrinks_at_its_next_look():
    state = WorkerState(limit=10, episode=0)
    decision = decide(SETTINGS, state, picture(0.5), maximum=16, in_flight=3, now=100, held=False, episode=1)
    assert decision.limit == 3 and decision.state.episode == 1 and decision.may_poll
    again = decide(SETTINGS, decision.state, picture(0.5), maximum=16, in_flight=1, now=101, episode=1)
    assert again.limit == 3  # shrinks once per episode, then holds or grows as usual


def test_cpu_at_its_target_holds_growth_but_not_polling():
    cpu_settings = SETTINGS._replace(cpu_target=0.7)
    state = WorkerState(limit=4, eligible=True, busy_since=90.0)
    decision = decide(cpu_settings, state, picture(0.3, cpu=0.75), maximum=16, in_flight=4, now=100)
    assert decision.limit == 4 and decision.may_poll
    assert decision.reason == "cpu at or above the target 70%: holding"
    assert decide(cpu_settings, state, picture(0.3, cpu=0.5), maximum=16, in_flight=4, now=100).limit == 5
    assert decide(SETTINGS, state, picture(0.3, cpu=0.99), maximum=16, in_flight=4, now=100).limit == 5


def test_pressure_holds_polling_whatever_the_fraction():
    decision = decide(SETTINGS, WorkerState(limit=4), picture(0.2, pressure=True), maximum=8, in_flight=1, now=100)
    assert not decision.may_poll and decision.limit == 2
    assert decision.reason == "cgroup memory pressure (memory.events): polling held"


def test_a_lower_maximum_and_a_minimum_above_it():
    decision = decide(SETTINGS, WorkerState(limit=10), picture(0.3), maximum=4, in_flight=0, now=100)
    assert decision.limit == 4 and decision.state.limit == 4
    decision = decide(SETTINGS._replace(min_slots=8), WorkerState(limit=1), picture(0.95), maximum=3, in_flight=0,
                      now=100)
    assert decision.limit == 3  # min(min_slots, maximum)


def test_reasons_do_not_change_with_the_fraction_within_a_zone():
    # the runner reports (limit, reason) changes to a hook: the reason must not flicker
    for zone_fractions in ([0.1, 0.5, 0.79], [0.8, 0.85, 0.89], [0.9, 0.99, 1.5]):
        reasons = {memory_zone(SETTINGS, picture(f), held=False).reason for f in zone_fractions}
        assert len(reasons) == 1, reasons


# -- the gate, with an injected clock and reader ------------------------------------------------------


def ramp(gate: AdmissionGate, clock: Clock, task_type: str, steps: int, maximum: int = 32) -> List[int]:
    """Drive one worker like the runner does: full polls, every slot busy, a look per ramp interval."""
    limits = []
    in_flight = RAMPED.get((id(gate), task_type), (gate, 0))[1]
    for _ in range(steps):
        limit = gate.limit(task_type, maximum, in_flight)  # a slot free: the runner polls for it ...
        if limit > in_flight:
            gate.poll_returned(task_type, limit - in_flight, limit - in_flight)  # ... and gets it
            in_flight = limit
        gate.limit(task_type, maximum, in_flight)  # every slot busy from now
        clock.advance(gate.settings.ramp_interval)
        limits.append(gate.limit(task_type, maximum, in_flight))  # a ramp interval later
    RAMPED[(id(gate), task_type)] = (gate, in_flight)  # the gate kept alive: its id is never reused
    return limits


RAMPED: Dict[Tuple[int, str], Tuple[AdmissionGate, int]] = {}


def test_starts_at_the_minimum_and_ramps_one_slot_per_interval_after_full_polls():
    clock = Clock()
    gate = make_gate(clock, FakeReader(clock, 0.2), min_slots=2)
    assert gate.limit("t", 32, 0) == 2
    gate.poll_returned("t", 2, 1)  # one task queued
    assert gate.limit("t", 32, 1) == 2
    gate.poll_returned("t", 1, 1)  # and another
    assert gate.limit("t", 32, 2) == 2  # every slot busy
    clock.advance(0.5)
    assert gate.limit("t", 32, 2) == 2
    clock.advance(0.5)
    assert gate.limit("t", 32, 2) == 3
    assert gate.limit("t", 32, 2) == 3  # a slot free
    gate.poll_returned("t", 1, 1)
    assert gate.limit("t", 32, 3) == 3  # every slot busy: a reading a ramp interval from now decides
    clock.advance(0.5)
    assert gate.limit("t", 32, 3) == 3
    clock.advance(0.5)
    assert gate.limit("t", 32, 3) == 4
    assert gate.state("t") == {"limit": 4, "reason": "below the target 80%: +1 slot per 1s after a full poll",
                               "signal": "fake", "memory_fraction": 0.2}


def test_a_poll_that_is_not_full_ends_the_eligibility():
    clock = Clock()
    gate = make_gate(clock, FakeReader(clock, 0.2))
    gate.poll_returned("t", 1, 1)
    gate.poll_returned("t", 4, 3)  # the queue ran dry: no more work than slots
    clock.advance(5)
    assert gate.limit("t", 32, 1) == 1
    gate.poll_returned("t", 0, 0)  # a zero-count poll says nothing
    assert gate.limit("t", 32, 1) == 1


def test_ramps_to_the_maximum_and_no_further():
    clock = Clock()
    gate = make_gate(clock, FakeReader(clock, 0.2), ramp_interval=0.5)
    assert ramp(gate, clock, "t", 12, maximum=8)[-1] == 8
    assert gate.state("t")["reason"] == "below the target 80%: at the maximum"


def test_task_types_ramp_on_their_own_but_share_one_memory_picture():
    clock = Clock()
    reader = FakeReader(clock, 0.2)
    gate = make_gate(clock, reader)
    assert ramp(gate, clock, "a", 4) == [2, 3, 4, 5]
    assert gate.limit("b", 32, 0) == 1  # b starts at its own minimum
    reader.fraction = 0.83
    clock.advance(1)
    assert gate.state("a")["reason"] == "memory at or above the target 80%: holding"
    assert ramp(gate, clock, "b", 3) == [1, 1, 1]
    assert gate.limit("a", 32, 5) == 5


def test_above_the_target_nothing_grows_above_the_hard_limit_polling_stops_until_memory_falls():
    clock = Clock()
    reader = FakeReader(clock, 0.2)
    gate = make_gate(clock, reader)
    ramp(gate, clock, "t", 5)
    assert gate.limit("t", 32, 6) == 6
    reader.fraction = 0.85
    clock.advance(2)
    assert ramp(gate, clock, "t", 3) == [6, 6, 6]
    assert gate.may_poll("t")
    reader.fraction = 0.95
    clock.advance(0.2)
    assert not gate.may_poll("t")
    assert gate.state("t") == {"limit": 0, "reason": "memory reached the hard limit 90%: polling held until below 85%",
                               "signal": "fake", "memory_fraction": 0.95}
    reader.fraction = 0.87  # below the hard limit, above resume_below: still held
    clock.advance(0.2)
    assert not gate.may_poll("t")
    reader.fraction = 0.84
    clock.advance(0.2)
    assert gate.may_poll("t")
    # the runner held 4 tasks when it looked again: it keeps 4 slots, not 6
    assert gate.limit("t", 32, 4) == 4
    assert gate.state("t")["limit"] == 4


def test_oom_events_hold_polling_for_a_ramp_interval():
    clock = Clock()
    reader = FakeReader(clock, 0.3)
    reader.oom = 0
    gate = make_gate(clock, reader)
    assert gate.may_poll("t")
    reader.oom = 1
    clock.advance(0.2)
    assert not gate.may_poll("t")
    assert gate.state("t")["reason"] == "cgroup memory pressure (memory.events): polling held"
    clock.advance(0.5)
    assert not gate.may_poll("t")
    clock.advance(0.6)
    assert gate.may_poll("t")


def test_high_events_count_as_pressure_only_above_the_target():
    clock = Clock()
    reader = FakeReader(clock, 0.3)
    reader.high = 5
    gate = make_gate(clock, reader)
    assert gate.may_poll("t")
    reader.high = 50  # page cache pressing on memory.high: not ours to react to
    clock.advance(0.2)
    assert gate.may_poll("t")
    reader.fraction, reader.high = 0.82, 51
    clock.advance(0.2)
    assert not gate.may_poll("t")


def test_memory_budget_caps_the_limit_of_any_reader():
    clock = Clock()
    gate = make_gate(clock, FakeReader(clock, 0.3), memory_budget=GIB // 2)
    gate.limit("t", 8, 0)
    assert gate.state("t")["memory_fraction"] == 0.6


def test_a_reading_that_dipped_below_the_target_does_not_grow_for_the_settle_time():
    clock = Clock()
    reader = FakeReader(clock, 0.82)
    gate = make_gate(clock, reader, settle_time=1.0)
    assert gate.limit("t", 32, 0) == 1
    gate.poll_returned("t", 1, 1)
    assert gate.limit("t", 32, 1) == 1
    clock.advance(0.1)
    assert gate.limit("t", 32, 1) == 1  # 0.82 read at 1000.1
    reader.fraction = 0.7  # a task just finished, the next one has not allocated yet
    clock.advance(0.2)
    assert gate.limit("t", 32, 1) == 1
    clock.advance(0.75)
    assert gate.limit("t", 32, 1) == 1
    clock.advance(0.1)  # the 0.82 reading is older than the settle time now
    assert gate.limit("t", 32, 1) == 2


def test_stale_readings_fall_back_to_fixed_concurrency_and_say_so_once(caplog):
    caplog.set_level(logging.DEBUG, logger="conductor_workers.admission")
    clock = Clock()
    reader = FakeReader(clock, 0.95)
    gate = make_gate(clock, reader)
    assert not gate.may_poll("t")
    reader.frozen_at = clock()  # the reader keeps answering, with an old reading
    clock.advance(0.6)
    assert gate.may_poll("t")
    assert gate.limit("t", 12, 0) == 12
    assert gate.state("t") == {"limit": None, "reason": "readings stale: fixed concurrency", "signal": "fake",
                               "memory_fraction": None}
    for _ in range(20):
        clock.advance(0.1)
        gate.limit("t", 12, 3)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "readings stale" in warnings[0].getMessage()
    assert "fixed concurrency" in warnings[0].getMessage()
    reader.frozen_at = None
    reader.fraction = 0.3
    clock.advance(0.1)
    assert gate.limit("t", 12, 3) == 1  # memory-aware again, from the minimum it had
    assert any("resumed" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)


def test_a_failing_reader_ages_into_fixed_concurrency():
    clock = Clock()
    reader = FakeReader(clock, 0.5)
    gate = make_gate(clock, reader)
    assert gate.limit("t", 8, 0) == 1
    reader.fail = OSError("gone")
    clock.advance(0.3)
    assert gate.limit("t", 8, 0) == 1  # the last reading is still fresh enough
    clock.advance(0.3)
    assert gate.limit("t", 8, 0) == 8
    assert gate.state("t")["reason"] == "readings stale: fixed concurrency"


def test_a_reader_that_never_worked(caplog):
    caplog.set_level(logging.WARNING, logger="conductor_workers.admission")
    clock = Clock()
    reader = FakeReader(clock)
    reader.fail = PermissionError("denied")
    gate = make_gate(clock, reader)
    assert gate.limit("t", 8, 0) == 8 and gate.may_poll("t")
    assert gate.state("t")["reason"] == "memory cannot be read: fixed concurrency"
    assert len(caplog.records) == 1 and "PermissionError: denied" in caplog.records[0].getMessage()


def test_no_signal_behaves_as_fixed_concurrency_and_logs_once(caplog, monkeypatch):
    caplog.set_level(logging.DEBUG, logger="conductor_workers.admission")
    monkeypatch.setattr(CgroupV2Reader, "location", lambda self: (_ for _ in ()).throw(
        _cgroup.CgroupUnavailable("no cgroup v2 hierarchy at /sys/fs/cgroup")))
    gate = AdmissionGate(min_slots=1)
    assert gate.signal == SIGNAL_NONE
    for in_flight in range(10):
        assert gate.may_poll("t")
        assert gate.limit("t", 10, in_flight) == 10
    assert gate.state("t") == {"limit": None, "reason": "no memory signal: fixed concurrency",
                               "signal": SIGNAL_NONE, "memory_fraction": None}
    assert len(caplog.records) == 1
    assert caplog.records[0].levelno == logging.INFO
    assert "no memory_budget" in caplog.records[0].getMessage()


def test_lazy_refresh_reads_at_most_every_refresh_interval():
    clock = Clock()
    reader = FakeReader(clock)
    gate = make_gate(clock, reader)
    for _ in range(50):
        gate.limit("t", 8, 0)
        gate.may_poll("t")
        gate.state("t")
    assert reader.reads == 1
    clock.advance(0.1)
    gate.limit("t", 8, 0)
    assert reader.reads == 2


def test_the_reading_thread_refreshes_and_stops_at_close():
    class Counting(ResourceReader):
        def __init__(self) -> None:
            self.reads = 0

        def read(self) -> Reading:
            self.reads += 1
            return Reading(100 * MIB, GIB)

    reader = Counting()
    gate = AdmissionGate(reader=reader, refresh_interval=0.02)  # the real clock: a daemon thread reads
    assert gate.limit("t", 4, 0) == 1
    deadline = time.monotonic() + 5
    while reader.reads < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert reader.reads >= 5
    assert gate.state("t")["signal"] == "custom"
    gate.close()
    time.sleep(0.1)
    after = reader.reads
    time.sleep(0.1)
    assert reader.reads == after


def test_wake_interval():
    clock = Clock()
    assert make_gate(clock, FakeReader(clock)).wake_interval() == 0.25
    assert make_gate(clock, FakeReader(clock), ramp_interval=0.1).wake_interval() == 0.05
    assert make_gate(clock, FakeReader(clock), ramp_interval=0).wake_interval() == 0.01


@pytest.mark.parametrize("kwargs", [
    dict(memory_target=0), dict(memory_target=1.2), dict(memory_target=0.9, memory_hard_limit=0.8),
    dict(memory_hard_limit=1.5), dict(memory_target=True), dict(memory_budget=0), dict(memory_budget=1.5),
    dict(cpu_target=0), dict(min_slots=0), dict(min_slots=1.0), dict(ramp_interval=-1),
    dict(refresh_interval=0), dict(refresh_interval=1.0, stale_after=0.5), dict(reader=object()),
    dict(memory_target=float("nan")),
])
def test_invalid_settings(kwargs):
    with pytest.raises(InvalidOptionError):
        AdmissionGate(**kwargs)


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(["ramp_interval", "settle_time", "refresh_interval", "stale_after", "cpu_target"]),
       value=st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                       st.integers(min_value=-(10 ** 30), max_value=10 ** 30),
                       st.sampled_from([float("inf"), 1e300, 1e10]), st.text(max_size=3), st.none()))
@example(name="refresh_interval", value=float("inf"))
@example(name="ramp_interval", value=1e300)
def test_any_duration_is_refused_or_can_be_waited_on(name, value):
    """A duration ends in a wait (the reading thread sleeps refresh_interval; runners wait for the
    gate): it must be finite and fit in one, or be refused at once."""
    clock = Clock()
    try:
        gate = make_gate(clock, FakeReader(clock), **{name: value})
    except InvalidOptionError:
        return
    lock = threading.Lock()  # free: acquire returns at once, after checking the timeout as every wait does
    assert lock.acquire(timeout=gate.wake_interval())
    lock.release()
    if value is not None and name != "cpu_target":
        assert lock.acquire(timeout=value)
        lock.release()
    assert value is None or math.isfinite(value)


def test_threads_at_once_keep_the_bounds():
    clock_lock = threading.Lock()
    now = [0.0]

    def clock() -> float:
        with clock_lock:
            now[0] += 0.001
            return now[0]

    class Swinging(ResourceReader):
        def __init__(self) -> None:
            self.n = 0

        def read(self) -> Reading:
            self.n += 1
            return Reading(int((0.5 + 0.45 * math.sin(self.n / 7)) * GIB), GIB)

    gate = AdmissionGate(reader=Swinging(), clock=clock, ramp_interval=0.01, refresh_interval=0.005, min_slots=2)
    errors: List[str] = []

    def worker(name: str) -> None:
        in_flight = 0
        for i in range(400):
            if gate.may_poll(name):
                limit = gate.limit(name, 16, in_flight)
                if not 2 <= limit <= 16:
                    errors.append(f"{name}: {limit}")
                in_flight = min(limit, in_flight + 1) if i % 3 else max(0, in_flight - 2)
                gate.poll_returned(name, 1, 1)
            gate.state(name)

    threads = [threading.Thread(target=worker, args=(f"t{i % 3}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors


# -- cgroup v2 from fixture files --------------------------------------------------------------------


def fixture(name: str) -> Tuple[str, str]:
    return str(FIXTURES / name / "root"), str(FIXTURES / name / "proc_self_cgroup")


def copy_fixture(name: str, tmp_path: Path) -> Tuple[Path, str]:
    shutil.copytree(FIXTURES / name, tmp_path / name)
    return tmp_path / name / "root", str(tmp_path / name / "proc_self_cgroup")


@pytest.mark.parametrize("text, path", [
    ("0::/\n", "/"),
    ("0::/kubepods.slice/pod1/ctr1\n", "/kubepods.slice/pod1/ctr1"),
    ((FIXTURES / "v1_hybrid" / "proc_self_cgroup").read_text(), "/"),
    ((FIXTURES / "v1_only" / "proc_self_cgroup").read_text(), None),
    ("", None),
    ("garbage\n12:\n", None),
])
def test_v2_path(text, path):
    assert _cgroup.v2_path(text) == path


def test_parsers():
    assert _cgroup.parse_keyed("anon 12\nfile 0\n\n") == {"anon": 12, "file": 0}
    with pytest.raises(ValueError):
        _cgroup.parse_keyed("anon twelve\n")
    with pytest.raises(ValueError):
        _cgroup.parse_keyed("some avg10=0.00 total=0\n")
    assert _cgroup.parse_limit("max\n") is None
    assert _cgroup.parse_limit("2147483648\n") == 2 * GIB
    with pytest.raises(ValueError):
        _cgroup.parse_limit("-1")
    assert _cgroup.parse_cpu_max("max 100000\n") is None
    assert _cgroup.parse_cpu_max("150000 100000\n") == 1.5
    assert _cgroup.parse_cpu_max("50000\n") == 0.5
    for bad in ("", "0 100000", "1 2 3", "x 100000"):
        with pytest.raises(ValueError):
            _cgroup.parse_cpu_max(bad)


def test_a_container_reads_anon_not_page_cache():
    root, proc = fixture("v2_container")
    where = _cgroup.locate(root, proc)
    assert where.own == root and where.memory == root and where.memory_limit == 2 * GIB and where.cpu_quota == 2.0
    reading = CgroupV2Reader(root, proc, process_cpu=lambda: 0.0).read()
    assert reading.memory_used == 512 * MIB and reading.memory_limit == 2 * GIB
    assert reading.memory_fraction == 0.25  # memory.current says 100 %: 1.5 GiB of it is page cache
    assert reading.pressure_events == 2 and reading.high_events == 0  # oom + oom_kill; "max" is not counted
    assert reading.cpu_fraction is None  # CPU needs two readings


def test_the_limit_of_a_parent_cgroup_applies():
    root, proc = fixture("v2_nested")
    where = _cgroup.locate(root, proc)
    pod = os.path.join(root, "kubepods.slice", "pod1")
    assert where.own == os.path.join(pod, "ctr1")
    assert where.memory == pod and where.memory_limit == GIB
    assert where.cpu == pod and where.cpu_quota == 0.5
    reading = CgroupV2Reader(root, proc, process_cpu=lambda: 0.0).read()
    assert reading.memory_fraction == 0.25 and reading.high_events == 3


def test_memory_high_below_memory_max_is_the_limit():
    root, proc = fixture("v2_memory_high")
    reading = CgroupV2Reader(root, proc, cpu=False).read()
    assert reading.memory_limit == 1536 * MIB and reading.memory_fraction == 0.5
    assert reading.pressure_events is None and reading.cpu_fraction is None


def test_the_host_path_without_a_cgroup_namespace_falls_back_to_the_mount_root():
    root, proc = fixture("v2_host_path")
    assert _cgroup.locate(root, proc).own == root
    assert CgroupV2Reader(root, proc, cpu=False).read().memory_fraction == 0.5


def test_no_memory_limit_is_no_cgroup_limit():
    root, proc = fixture("v2_no_limit")
    where = _cgroup.locate(root, proc)
    assert where.memory_limit is None
    assert CgroupV2Reader(root, proc, cpu=False).read().memory_limit is None


@pytest.mark.parametrize("name, message", [
    ("v1_hybrid", "cgroup v1 or hybrid"),
    ("v1_only", "no cgroup v2 entry"),
    ("v2_no_memory_controller", "memory controller"),
])
def test_unavailable(name, message):
    root, proc = fixture(name)
    with pytest.raises(_cgroup.CgroupUnavailable, match=message):
        _cgroup.locate(root, proc)
    with pytest.raises(OSError):
        CgroupV2Reader(root, proc).read()


def test_a_garbled_file_is_an_error_not_zero():
    root, proc = fixture("v2_garbled")
    with pytest.raises(ValueError):
        CgroupV2Reader(root, proc).read()


def test_cpu_from_cpu_stat_against_cpu_max(tmp_path):
    root, proc = copy_fixture("v2_container", tmp_path)
    clock = Clock(0.0)
    process = [0.0]
    reader = CgroupV2Reader(str(root), proc, clock=clock, process_cpu=lambda: process[0])
    assert reader.read().cpu_fraction is None
    clock.advance(1.0)
    (root / "cpu.stat").write_text("usage_usec 6000000\nnr_throttled 0\n")  # 1 s of CPU in 1 s, quota 2 cores
    assert reader.read().cpu_fraction == pytest.approx(0.5)
    clock.advance(1.0)
    process[0] = 0.9  # this process alone used 0.9 of one core (the GIL)
    (root / "cpu.stat").write_text("usage_usec 7000000\nnr_throttled 0\n")
    assert reader.read().cpu_fraction == pytest.approx(0.9)
    clock.advance(1.0)
    (root / "cpu.stat").write_text("usage_usec 7100000\nnr_throttled 3\n")  # throttled: the quota is spent
    assert reader.read().cpu_fraction == 1.0


def test_limits_are_read_again_every_time(tmp_path):
    root, proc = copy_fixture("v2_container", tmp_path)
    reader = CgroupV2Reader(str(root), proc, cpu=False)
    assert reader.read().memory_limit == 2 * GIB
    (root / "memory.max").write_text("1073741824\n")  # resized in place
    assert reader.read().memory_fraction == 0.5


def test_a_gate_on_a_cgroup_fixture(tmp_path):
    root, proc = copy_fixture("v2_container", tmp_path)
    clock = Clock()
    gate = make_gate(clock, CgroupV2Reader(str(root), proc, clock=clock, process_cpu=lambda: 0.0), cpu_target=0.8)
    assert gate.signal == SIGNAL_CGROUP
    assert gate.limit("t", 8, 0) == 1 and gate.may_poll("t")
    assert gate.state("t")["memory_fraction"] == 0.25
    (root / "memory.stat").write_text("anon 2040109465\nfile 0\n")  # 95 %
    clock.advance(0.2)
    assert not gate.may_poll("t")
    (root / "memory.stat").write_text("anon 536870912\nfile 0\n")
    (root / "memory.events").write_text("low 0\nhigh 0\nmax 17\noom 2\noom_kill 1\n")  # an OOM
    clock.advance(0.2)
    assert not gate.may_poll("t")
    assert gate.state("t")["reason"] == "cgroup memory pressure (memory.events): polling held"
    clock.advance(1.2)
    assert gate.may_poll("t")


def test_this_machine_has_no_cgroup_v2_hierarchy():
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        pytest.skip("a cgroup v2 host")
    with pytest.raises(_cgroup.CgroupUnavailable):
        CgroupV2Reader().location()


# -- the RSS budget, live ----------------------------------------------------------------------------


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="no /proc/self/statm (not Linux)")
def test_rss_budget_live():
    reader = RssBudgetReader(4 * GIB)
    first = reader.read()
    assert 10 * MIB < first.memory_used < 4 * GIB and first.memory_limit == 4 * GIB
    ballast = b"\x01" * (64 * MIB)  # touched pages: resident
    assert reader.read().memory_used >= first.memory_used + 60 * MIB
    del ballast
    assert reader.read().memory_used < first.memory_used + 32 * MIB


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="no /proc/self/statm (not Linux)")
def test_a_gate_on_the_process_rss_live():
    rss = RssBudgetReader(GIB).read().memory_used
    assert rss is not None
    budget = int(rss / 0.5)  # half the budget in use now
    gate = AdmissionGate(memory_budget=budget, refresh_interval=0.01, background=False, ramp_interval=0.02)
    assert gate.signal == SIGNAL_RSS
    assert gate.limit("t", 8, 0) == 1 and gate.may_poll("t")
    gate.poll_returned("t", 1, 1)
    assert gate.limit("t", 8, 1) == 1
    time.sleep(0.05)
    assert gate.limit("t", 8, 1) == 2
    ballast = b"\x01" * int(budget * 0.45)  # to about 95 %
    time.sleep(0.03)
    assert not gate.may_poll("t")
    assert gate.state("t")["limit"] == 0
    del ballast
    time.sleep(0.03)
    assert gate.may_poll("t")
    assert gate.state("t")["memory_fraction"] < 0.8


def test_rss_reader_errors(tmp_path):
    with pytest.raises(InvalidOptionError):
        RssBudgetReader(0)
    with pytest.raises(OSError):
        RssBudgetReader(GIB, statm=str(tmp_path / "missing")).read()


def test_memory_budget_without_proc_warns_and_falls_back(caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="conductor_workers.admission")
    monkeypatch.setattr(CgroupV2Reader, "location", lambda self: (_ for _ in ()).throw(
        _cgroup.CgroupUnavailable("no cgroup v2 entry")))
    monkeypatch.setattr(RssBudgetReader, "read", lambda self: (_ for _ in ()).throw(OSError("no /proc")))
    gate = AdmissionGate(memory_budget=GIB)
    assert gate.signal == SIGNAL_NONE and gate.limit("t", 5, 0) == 5
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


# -- properties --------------------------------------------------------------------------------------

fractions = st.floats(min_value=0.0, max_value=1.5, allow_nan=False)
maybe_fraction = st.one_of(st.none(), fractions)


@st.composite
def settings_strategy(draw) -> Settings:
    target = draw(st.floats(min_value=0.05, max_value=1.0))
    hard = draw(st.floats(min_value=target, max_value=1.0))
    return Settings(target, hard, hard - min(0.05, (hard - target) / 2),
                    draw(st.one_of(st.none(), st.floats(min_value=0.05, max_value=2.0))),
                    draw(st.integers(1, 8)), draw(st.sampled_from([0.0, 0.1, 1.0, 5.0])),
                    draw(st.sampled_from([0.0, 1.0, 5.0])))


@settings(max_examples=400, deadline=None)
@given(
    cfg=settings_strategy(),
    limit=st.integers(0, 80), eligible=st.booleans(), last_grant=st.floats(-1e3, 1e3), state_episode=st.integers(0, 3),
    busy_since=st.one_of(st.none(), st.floats(900, 1000)), reading_after=st.floats(-1e3, 1e3),
    fraction=maybe_fraction, peak_extra=st.floats(0.0, 0.5), cpu=maybe_fraction, pressure=st.booleans(),
    read_age=st.floats(0.0, 10.0), fallback=st.sampled_from([None, None, None, "readings stale"]),
    maximum=st.integers(1, 64), in_flight=st.integers(0, 80), held=st.booleans(), episode=st.integers(0, 3),
)
def test_property_decide_bounds(cfg, limit, eligible, last_grant, state_episode, busy_since, reading_after, fraction,
                                peak_extra, cpu, pressure, read_age, fallback, maximum, in_flight, held, episode):
    now = 1000.0
    state = WorkerState(limit, last_grant, eligible, state_episode, busy_since, reading_after)
    pic = Picture(fraction, None if fraction is None else fraction + peak_extra, cpu, pressure, now - read_age,
                  fallback)
    decision = decide(cfg, state, pic, maximum=maximum, in_flight=in_flight, now=now, held=held, episode=episode)
    base = min(cfg.min_slots, maximum)
    zone = memory_zone(cfg, pic, held)
    # never above the maximum, never below the minimum
    assert base <= decision.limit <= maximum
    assert base <= decision.state.limit <= maximum
    if zone.name == FALLBACK:
        assert decision.limit == maximum and decision.may_poll
        return
    before = min(max(limit, base), maximum)
    # never admitting at or above the hard limit, or under pressure
    if fraction is not None and (fraction >= cfg.memory_hard_limit or pressure):
        assert not decision.may_poll
    assert decision.may_poll == (zone.name in (GROW, HOLD))
    # polling is held only for memory: below the hard limit with no pressure, at least the minimum is polled
    if fraction < cfg.resume_below and not pressure:
        assert decision.may_poll
    # it rises by one at most, and only below both targets, with every slot busy after a full poll
    assert decision.limit <= before + 1
    if decision.limit > before:
        assert zone.name == GROW and fraction + peak_extra < cfg.memory_target
        assert eligible and in_flight >= before and now - last_grant >= cfg.ramp_interval
        busy = now if busy_since is None else busy_since  # a streak that begins at this look
        assert (now - read_age) - busy >= cfg.ramp_interval
        assert now - read_age >= reading_after
    if not decision.may_poll:
        assert decision.limit <= before


class SimWorkload:
    """A discrete-event workload: each worker type has endless queued tasks of ``size`` (fraction of
    the limit) lasting ``duration``; the runner's loop is emulated tick by tick."""

    def __init__(self, gate: AdmissionGate, clock: Clock, types: Dict[str, Tuple[float, float, int]],
                 baseline: float) -> None:
        self.gate, self.clock, self.types, self.baseline = gate, clock, types, baseline
        self.running: Dict[str, List[float]] = {name: [] for name in types}  # finish times
        self.admitted_at: List[float] = []  # per poll that admitted tasks: the memory the gate last read
        self.peak = baseline
        self.last_seen = baseline

    def memory(self) -> float:
        return self.baseline + sum(self.types[name][0] * len(ends) for name, ends in self.running.items())

    def tick(self, dt: float, queued: bool = True) -> None:
        self.clock.advance(dt)
        now = self.clock()
        for name, ends in self.running.items():
            ends[:] = [end for end in ends if end > now]
        # what the gate reads in this tick (its clock stands still in it), in whole bytes as the reader says
        seen = self.last_seen = int(self.memory() * GIB) / GIB
        for name, (size, duration, maximum) in self.types.items():
            ends = self.running[name]
            if not self.gate.may_poll(name):
                continue
            limit = self.gate.limit(name, maximum, len(ends))
            assert min(self.gate.settings.min_slots, maximum) <= limit <= maximum
            free = limit - len(ends)
            if free > 0:
                received = free if queued else 0
                self.gate.poll_returned(name, free, received)
                ends.extend([now + duration] * received)
                if received:
                    self.admitted_at.append(seen)
        self.peak = max(self.peak, self.memory())


class SimReader(ResourceReader):
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.sim: Optional[SimWorkload] = None

    def read(self) -> Reading:
        assert self.sim is not None
        return Reading(int(self.sim.memory() * GIB), GIB, None, None, self.clock())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.floats(0.005, 0.2), duration=st.floats(0.02, 3.0), baseline=st.floats(0.0, 0.6),
    ramp_interval=st.sampled_from([0.0, 0.1, 0.25, 0.5]), min_slots=st.integers(1, 3),
    phases=st.lists(st.booleans(), min_size=1, max_size=4),
)
def test_property_one_worker_overshoots_the_target_by_one_step_at_most(size, duration, baseline, ramp_interval,
                                                                       min_slots, phases):
    clock = Clock(0.0)
    reader = SimReader(clock)
    gate = AdmissionGate(reader=reader, clock=clock, memory_target=0.8, memory_hard_limit=0.9,
                         ramp_interval=ramp_interval, refresh_interval=0.01, min_slots=min_slots)
    sim = SimWorkload(gate, clock, {"t": (size, duration, 32)}, baseline)
    reader.sim = sim
    for queued in phases:  # phases with and without queued work
        for _ in range(120):
            sim.tick(0.02, queued)
    # tasks of one size, memory read at every tick: one step past the target at most
    assert sim.peak <= max(baseline + min_slots * size, 0.8 + size) + 1e-9
    assert all(seen < 0.9 for seen in sim.admitted_at)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    heavy=st.floats(0.01, 0.25), light=st.floats(0.0001, 0.01),
    heavy_duration=st.floats(0.02, 3.0), light_duration=st.floats(0.02, 0.5),
    baseline=st.floats(0.0, 0.95), ramp_interval=st.sampled_from([0.1, 0.25, 0.5]),
    min_slots=st.integers(1, 3), phases=st.lists(st.booleans(), min_size=1, max_size=4),
)
@example(heavy=0.25, light=0.0078125, heavy_duration=1.0, light_duration=0.5, baseline=0.9, ramp_interval=0.1,
         min_slots=1, phases=[False])  # idle at exactly the hard limit
def test_property_never_admits_at_the_hard_limit_and_always_admits_the_minimum_below_it(
        heavy, light, heavy_duration, light_duration, baseline, ramp_interval, min_slots, phases):
    clock = Clock(0.0)
    reader = SimReader(clock)
    gate = AdmissionGate(reader=reader, clock=clock, memory_target=0.8, memory_hard_limit=0.9,
                         ramp_interval=ramp_interval, refresh_interval=0.01, min_slots=min_slots)
    sim = SimWorkload(gate, clock, {"heavy": (heavy, heavy_duration, 32), "light": (light, light_duration, 8)},
                      baseline)
    reader.sim = sim
    for queued in phases:
        for _ in range(120):
            sim.tick(0.02, queued)
            if sim.last_seen >= 0.9:
                assert not gate.may_poll("heavy") and not gate.may_poll("light")
            elif sim.last_seen < gate.settings.resume_below:  # the minimum is always admitted below it
                assert gate.may_poll("heavy") and gate.may_poll("light")
    assert all(seen < 0.9 for seen in sim.admitted_at)
    for name in ("heavy", "light"):
        assert gate.state(name)["limit"] in (0, None) or gate.state(name)["limit"] >= min(min_slots, 8)


def test_simulated_heavy_tasks_settle_one_step_above_the_target_and_never_reach_the_budget():
    clock = Clock(0.0)
    reader = SimReader(clock)
    gate = AdmissionGate(reader=reader, clock=clock, ramp_interval=0.1, refresh_interval=0.01)
    # 300 MB tasks on a 2 GB budget with a 200 MB baseline: 4 fit under the target, the 5th crosses it
    sim = SimWorkload(gate, clock, {"heavy": (300 / 2048, 1.0, 32)}, 200 / 2048)
    reader.sim = sim
    for _ in range(500):
        sim.tick(0.02)
    assert len(sim.running["heavy"]) <= 5
    assert sim.peak == pytest.approx((200 + 5 * 300) / 2048)
    assert gate.state("heavy")["reason"] == "memory at or above the target 80%: holding"


# -- end to end: a TaskManager on LocalConductor follows the real gate --------------------------------


@pytest.fixture(scope="module")
def local_server():
    from conductor_workers.testing import LocalConductor

    with LocalConductor() as server:
        yield server


def test_a_task_manager_follows_the_gate_end_to_end(local_server):
    import uuid

    from conductor_workers import (ConductorClient, Configuration, StartWorkflowRequest, TaskDef, TaskManager,
                                   WorkflowDef, WorkflowTask, worker_task)

    name = f"adm_e2e_{uuid.uuid4().hex[:8]}"
    lock = threading.Lock()
    running = [0]
    most = [0]
    baseline = [0.45]

    class Memory(ResourceReader):
        signal = "test"

        def read(self) -> Reading:  # 0.1 of the limit per running task
            with lock:
                return Reading(int((baseline[0] + 0.1 * running[0]) * GIB), GIB)

    @worker_task(name, concurrency=8, poll_interval=10, batch_poll_timeout=100)
    def task(i: int) -> Dict[str, int]:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.3)
        finally:
            with lock:
                running[0] -= 1
        return {"i": i}

    gate = AdmissionGate(reader=Memory(), ramp_interval=0.1, refresh_interval=0.01, settle_time=0.5)
    with ConductorClient(Configuration(server_url=local_server.url)) as client:
        client.metadata.register_task_defs([TaskDef(name=name, retry_count=0, response_timeout_seconds=60)])
        client.metadata.register_workflow_def(WorkflowDef(
            name=f"{name}_wf", version=1, timeout_seconds=0,
            tasks=[WorkflowTask(name=name, task_reference_name="t", input_parameters={"i": "${workflow.input.i}"})],
        ), overwrite=True)

        def start(count: int) -> None:
            for i in range(count):
                client.workflows.start(StartWorkflowRequest(name=f"{name}_wf", version=1, input={"i": i}))

        def wait_for(predicate, timeout: float = 20.0) -> None:
            deadline = time.monotonic() + timeout
            while not predicate():
                assert time.monotonic() < deadline, "timed out"
                time.sleep(0.02)

        manager = TaskManager(client, [task], admission=gate)
        manager.start_polling()
        try:
            start(16)
            wait_for(lambda: not client.workflows.running(f"{name}_wf", 1))
            # 0.45 + 0.1 per task: the 4th task reaches 0.85 (above the target 0.8): no 5th slot
            assert 2 <= most[0] <= 4, most[0]
            status = manager.status()[name].admission
            assert status["signal"] == "test" and status["limit"] in (3, 4)
            with lock:
                baseline[0] = 0.95  # above the hard limit: nothing new starts
                most[0] = 0
            time.sleep(0.3)  # a long poll under way (100 ms) comes back empty meanwhile
            assert manager.status()[name].admission["limit"] == 0
            start(4)
            time.sleep(0.6)
            assert most[0] == 0
            with lock:
                baseline[0] = 0.3
            wait_for(lambda: not client.workflows.running(f"{name}_wf", 1))
            assert 1 <= most[0] <= 4
        finally:
            assert manager.stop_polling(10)
            gate.close()


def test_after_a_hold_a_worker_running_chained_tasks_grows_again_without_polling():
    # update-v2 hands the next task to a finishing slot: a worker whose slots are all busy never
    # polls, so its eligibility from the last full poll must survive the hold episode
    clock = Clock()
    reader = FakeReader(clock, 0.3)
    gate = make_gate(clock, reader, settle_time=1.0)
    ramp(gate, clock, "t", 3)
    gate.poll_returned("t", 1, 1)  # the poll for the slot of the last step
    reader.fraction = 0.95
    clock.advance(0.2)
    assert not gate.may_poll("t")
    reader.fraction = 0.3
    clock.advance(1.5)
    assert gate.may_poll("t")
    assert gate.limit("t", 32, 1) == 1  # it held one task when the episode ended
    clock.advance(1.0)
    assert gate.limit("t", 32, 1) == 2  # no poll in between
