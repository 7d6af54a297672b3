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
    "script_error_message": Difference(
        "The text of a JavaScript error (INLINE, SWITCH, DO_WHILE conditions): the real server runs "
        "scripts on GraalJS, LocalConductor on V8 (mini-racer), and the two word a TypeError differently "
        "(GraalJS: `Cannot read property 'x' of undefined`). Both wrap it as ``Error evaluating the script "
        "`<error>` ...``. Value: a regular expression the message must match in full.",
        local=r"Error evaluating the script `TypeError: [^`]+`( at line \d+)?",
        real=r"Error evaluating the script `TypeError: Cannot read property 'x' of undefined` at line 1",
    ),
    "jq_error_message": Difference(
        "The text of a jq parse error (JSON_JQ_TRANSFORM): the real server uses jackson-jq, LocalConductor "
        "the C libjq (through the `jq` package), whose messages differ. Value: a regular expression the "
        "start of the message must match.",
        local=r"\S",
        real=r'Encountered "<EOF>" at line 1, column 11\.',
    ),
    "skiptask_refusal_status": Difference(
        "PUT /workflow/{id}/skiptask/{ref} for a task that is already scheduled or done (or a workflow "
        "that is not RUNNING, or a reference name not in the definition): the real server throws an "
        "IllegalStateException and answers 500; LocalConductor never answers 5xx for a request it "
        "understood, so it answers 409 (Conflict) with the same message. Value: the HTTP status.",
        local=409,
        real=500,
    ),
    "signal_sync_task_strategy_without_blocking_task": Difference(
        "POST /tasks/{id}/{status}/signal/sync with returnStrategy BLOCKING_TASK or BLOCKING_TASK_INPUT "
        "when, after the signal, no task blocks any more (the workflow ended) or the wait timed out: "
        "the real server's NotificationResult has no task to answer with (null), which fails the request "
        "with 500; LocalConductor answers 200 with an empty body. Value: the HTTP status.",
        local=200,
        real=500,
    ),
    "unknown_task_status_in_path": Difference(
        "An unknown task status in the path of POST /tasks/{workflowId}/{status}/signal[/sync] (e.g. "
        "BOGUS): the real server fails to convert it to TaskResult.Status and answers 500; "
        "LocalConductor answers 400 (the request is malformed). Value: the HTTP status.",
        local=400,
        real=500,
    ),
    "unknown_definition_delete_status": Difference(
        "DELETE /metadata/taskdefs/{name} or /metadata/workflow/{name}/{version} for a definition that does not "
        "exist: the real server's SQLite store throws its NotFoundException inside a transaction, which wraps "
        "it, and answers 500; LocalConductor answers 404. Value: the HTTP status.",
        local=404,
        real=500,
    ),
    "event_handler_conflict_status": Difference(
        "POST /event for a name already registered: the real server's SQLite store throws its "
        "ConflictException inside a transaction, which wraps it, and answers 500; LocalConductor answers 409 "
        "(Conflict) with the same message. Value: the HTTP status.",
        local=409,
        real=500,
    ),
    "event_handler_not_found_status": Difference(
        "PUT /event or DELETE /event/{name} for a name not registered: the real server's SQLite store "
        "wraps its NotFoundException and answers 500; LocalConductor answers 404 with the same message. "
        "Value: the HTTP status.",
        local=404,
        real=500,
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
