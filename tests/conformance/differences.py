"""Deliberate differences between ``LocalConductor`` and the real conductor-oss server.

This is the one place that lists them. Each entry is data: a human-readable description (the README
renders this table) and, per server, the value a conformance test uses where the two differ — usually
a time limit. Tests call :func:`expect_difference` instead of weakening an assertion for both servers.
"""

from __future__ import annotations

from typing import Any, Dict, NamedTuple


class Difference(NamedTuple):
    description: str
    local: Any
    real: Any


DIFFERENCES: Dict[str, Difference] = {
    "long_poll_wakeup": Difference(
        "A waiting batch poll: the real server looks at its queue about every 100 ms, so a task queued "
        "during a long poll is handed out up to ~100 ms later; LocalConductor wakes the poll at once. "
        "Value: seconds a test allows between queueing a task and receiving it.",
        local=1.0,
        real=2.0,
    ),
    "response_timeout_detection": Difference(
        "Response timeouts are found by a sweeper on both servers. The real server re-checks a workflow "
        "when its decider-queue entry falls due (about responseTimeoutSeconds + 1 s after the poll) and "
        "its sweeper threads run that check with some further delay; LocalConductor's sweeper wakes at "
        "the task's deadline (at most `sweep_interval` late). Value: seconds a test waits for TIMED_OUT.",
        local=5.0,
        real=30.0,
    ),
}


def expect_difference(conductor: Any, name: str) -> Any:
    """The value of the documented difference ``name`` for this server (``conductor.kind``)."""
    try:
        difference = DIFFERENCES[name]
    except KeyError:
        raise AssertionError(f"undocumented difference {name!r}: add it to differences.py") from None
    return getattr(difference, conductor.kind)


def as_markdown() -> str:
    """The table, as the README shows it."""
    rows = ["| Difference | Description | LocalConductor | real server |", "|---|---|---|---|"]
    for name, diff in DIFFERENCES.items():
        rows.append(f"| `{name}` | {diff.description} | {diff.local} | {diff.real} |")
    return "\n".join(rows)
