"""The admission decision as pure functions: :func:`memory_zone` (the process-wide picture: grow,
hold, held or fall back) and :func:`decide` (one worker's limit), with the values they work on."""
from __future__ import annotations

import math
from typing import NamedTuple, Optional



FALLBACK = "fallback"  # no usable reading: fixed concurrency
HELD = "held"  # at or above the hard limit, or under pressure: no polling
HOLD = "hold"  # at or above a target: no growth
GROW = "grow"  # below the targets: one more slot per ramp interval after a full poll


# -- the decision (pure) -----------------------------------------------------------------------------


class Settings(NamedTuple):
    """The gate's thresholds (fractions of the memory limit, of the CPU quota; seconds)."""

    memory_target: float = 0.8
    memory_hard_limit: float = 0.9
    resume_below: float = 0.85
    cpu_target: Optional[float] = None
    min_slots: int = 1
    ramp_interval: float = 1.0
    settle_time: float = 5.0  # memory below the target for this long before any growth


class WorkerState(NamedTuple):
    """One task type's part: slots granted, when the last one was, whether its last poll came back
    full, the hold episode it last shrank for, when it was first seen with every slot busy since
    its last step or short poll (None: not yet), and the time a reading must be newer than after a
    poll brought it several tasks at once."""

    limit: int
    last_grant: float = -math.inf
    eligible: bool = False
    episode: int = 0
    busy_since: Optional[float] = None
    reading_after: float = -math.inf  # no step on a reading older than this (set by a burst)


class Picture(NamedTuple):
    """The process-wide memory picture at the time of a decision."""

    memory_fraction: Optional[float]
    memory_peak: Optional[float]  # the highest fraction read in the last settle_time (and ramp interval)
    cpu_fraction: Optional[float]
    pressure: bool  # cgroup counters rose recently
    read_at: float  # when the reading was taken
    fallback: Optional[str] = None  # why there is no usable reading (fixed concurrency)


class Zone(NamedTuple):
    name: str  # FALLBACK, HELD, HOLD or GROW
    reason: str
    held: bool  # the process-wide hold flag after this look (hysteresis)


class Decision(NamedTuple):
    limit: int
    may_poll: bool
    reason: str
    state: WorkerState
    held: bool
    episode: int


def _pct(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def memory_zone(settings: Settings, picture: Picture, held: bool) -> Zone:
    """Where memory stands for every worker. ``held``: polling was held at the previous look (it
    resumes only below ``settings.resume_below``)."""
    fraction = picture.memory_fraction
    if picture.fallback is not None or fraction is None:
        return Zone(FALLBACK, f"{picture.fallback or 'no memory reading'}: fixed concurrency", False)
    if picture.pressure:
        return Zone(HELD, "cgroup memory pressure (memory.events): polling held", True)
    if fraction >= settings.memory_hard_limit or (held and fraction >= settings.resume_below):
        return Zone(HELD, f"memory reached the hard limit {_pct(settings.memory_hard_limit)}: polling held "
                          f"until below {_pct(settings.resume_below)}", True)
    if fraction >= settings.memory_target:
        return Zone(HOLD, f"memory at or above the target {_pct(settings.memory_target)}: holding", False)
    cpu = picture.cpu_fraction
    if settings.cpu_target is not None and cpu is not None and cpu >= settings.cpu_target:
        return Zone(HOLD, f"cpu at or above the target {_pct(settings.cpu_target)}: holding", False)
    return Zone(GROW, f"below the target {_pct(settings.memory_target)}: +1 slot per "
                      f"{settings.ramp_interval:g}s after a full poll", False)


def _grow_reason(settings: Settings, zone: Zone, limit: int, maximum: int) -> str:
    if limit >= maximum:
        return f"below the target {_pct(settings.memory_target)}: at the maximum"
    return zone.reason


def decide(settings: Settings, state: WorkerState, picture: Picture, *, maximum: int, in_flight: int,
           now: float, held: bool = False, episode: int = 0) -> Decision:
    """The slots one worker may hold now, and its new state.

    ``maximum`` is the worker's ``concurrency``, ``in_flight`` the slots it holds, ``held`` and
    ``episode`` the process-wide hold flag and the count of hold episodes so far. The result's
    ``limit`` is always within ``min(min_slots, maximum) .. maximum``; it is ``maximum`` without a
    usable reading; it never rises while ``may_poll`` is False, and rises by at most one per call.
    """
    maximum = max(0, maximum)
    base = min(settings.min_slots, maximum)
    zone = memory_zone(settings, picture, held)
    if zone.held and not held:
        episode += 1
    limit = min(max(state.limit, base), maximum)
    if zone.name == FALLBACK:
        return Decision(maximum, True, zone.reason, state._replace(limit=limit), zone.held, episode)
    if zone.held or state.episode < episode:
        # A hold episode: keep no more slots than are held now; grow again from there afterwards.
        # (Its eligibility stays: a worker whose slots all run chained tasks does not poll again.)
        limit = max(base, min(limit, in_flight))
        state = state._replace(episode=episode, busy_since=None)
    # Since when every slot has been seen busy; a slot freed and refilled does not end it (the
    # settle window covers that gap), a poll that came back short or a step does.
    busy_since = state.busy_since
    if busy_since is None and in_flight >= limit:
        busy_since = now
    state = state._replace(limit=limit, busy_since=busy_since)
    if zone.held:
        return Decision(limit, False, zone.reason, state, True, episode)
    if zone.name == HOLD:
        return Decision(limit, True, zone.reason, state, False, episode)
    ramp = settings.ramp_interval
    peak = picture.memory_peak if picture.memory_peak is not None else picture.memory_fraction
    if (
        limit < maximum
        and in_flight >= limit  # every slot busy ...
        and state.eligible  # ... and the last poll brought all it asked for: work is waiting
        and busy_since is not None
        and now - state.last_grant >= ramp
        and picture.read_at - busy_since >= ramp  # a reading that shows every busy slot's memory
        and picture.read_at >= state.reading_after  # ... also after a burst
        and peak is not None
        and peak < settings.memory_target
    ):
        limit += 1
        state = state._replace(limit=limit, last_grant=now, eligible=False, busy_since=None)
    return Decision(limit, True, _grow_reason(settings, zone, limit, maximum), state, False, episode)


# -- the gate ----------------------------------------------------------------------------------------



