"""``PollingOptions``: how a worker polls, as one frozen object swapped whole at runtime.

Precedence, lowest first: code defaults < the manager's options < the worker's own < the environment
< runtime updates (``update_polling_options`` / ``update_polling_option_for_worker``, latest wins).
"""
from __future__ import annotations

import os
import socket
from typing import Any, Dict, Mapping, Optional, Tuple

import attrs

from . import _validate
from .errors import InvalidOptionError

MAX_BATCH_POLL_TIMEOUT_MS = 5000  # the server refuses longer long-polls


def default_worker_id() -> str:
    """``host:pid``: this host's name and this process's id, so that the processes of one host (``run
    --processes N``) can be told apart in the server's poll data and in each task's ``workerId``.

    A colon, not a hyphen: host names have hyphens of their own, never a colon.
    """
    return f"{socket.gethostname()}:{os.getpid()}"


def _count(maximum: int) -> Any:
    def check(instance: object, attribute: "attrs.Attribute[int]", value: int) -> None:
        _validate.count(attribute.name, value, minimum=1, maximum=maximum)

    return check


def _milliseconds(maximum: int) -> Any:
    def check(instance: object, attribute: "attrs.Attribute[int]", value: int) -> None:
        _validate.milliseconds(attribute.name, value, maximum=maximum)

    return check


def _optional_str(instance: object, attribute: "attrs.Attribute[str]", value: Optional[str]) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise InvalidOptionError(f"{attribute.name} must be a non-empty string or None, got {value!r}")


def _bool(instance: object, attribute: "attrs.Attribute[bool]", value: bool) -> None:
    if not isinstance(value, bool):
        raise InvalidOptionError(f"{attribute.name} must be True or False, got {value!r}")


def _optional_seconds(instance: object, attribute: "attrs.Attribute[float]", value: Optional[float]) -> None:
    _validate.optional_seconds(attribute.name, value, positive=True)


def _option(default: Any, validator: Any, kind: str, *env_aliases: str) -> Any:
    """A field of :class:`PollingOptions`. ``kind`` says how an environment variable is read
    (``int``, ``bool``, ``str``, ``seconds``); ``env_aliases`` are extra spellings of its name there
    (the official Python SDK's), after the field's own name."""
    return attrs.field(default=default, validator=validator, metadata={"kind": kind, "env_aliases": env_aliases})


@attrs.frozen
class PollingOptions:
    """How a :class:`~conductor_workers.TaskRunner` polls and runs tasks.

    Every field is also a :class:`~conductor_workers.Worker` option (class attribute or constructor
    keyword) and an environment variable (see the README); this class is the one list of them.

    :param poll_interval: milliseconds to wait after a poll that found nothing.
    :param concurrency: tasks executed at once (the thread-pool size); never polls more than free slots.
    :param domain: task domain to poll (None: tasks without a domain).
    :param worker_id: identity sent with polls and results (None: :func:`default_worker_id`,
        ``host:pid``, one per process).
    :param batch_poll_timeout: milliseconds the server may hold an idle poll open (long-poll, ≤ 5000).
    :param paused: stop polling without stopping the runner; in-flight tasks still finish.
    :param lease_extend: send ``extendLease`` heartbeats while a task runs longer than ~80 % of its
        ``responseTimeoutSeconds``.
    :param time_limit: seconds a task may run (None: no limit). Past it the task is reported FAILED
        at once, the worker's thread is interrupted where Python can interrupt it, and whatever it
        returns later is discarded (see :mod:`conductor_workers.time_limit`).
    :param time_limit_terminal: report a task over its ``time_limit`` as FAILED_WITH_TERMINAL_ERROR
        (no retry) instead of FAILED (the task definition's retries apply).
    """

    poll_interval: int = _option(100, _milliseconds(_validate.MAX_WAIT_MS), "int", "polling_interval")
    concurrency: int = _option(1, _count(_validate.MAX_CONCURRENCY), "int", "thread_count")
    domain: Optional[str] = _option(None, _optional_str, "str")
    worker_id: Optional[str] = _option(None, _optional_str, "str")
    batch_poll_timeout: int = _option(2000, _milliseconds(MAX_BATCH_POLL_TIMEOUT_MS), "int", "poll_timeout")
    paused: bool = _option(False, _bool, "bool")
    lease_extend: bool = _option(False, _bool, "bool", "lease_extend_enabled")
    time_limit: Optional[float] = _option(None, _optional_seconds, "seconds")
    time_limit_terminal: bool = _option(False, _bool, "bool")

    def __attrs_post_init__(self) -> None:
        if self.poll_interval == 0 and self.batch_poll_timeout == 0:
            raise InvalidOptionError(
                "poll_interval=0 with batch_poll_timeout=0 would poll the server in a tight loop while "
                "it has no tasks; set batch_poll_timeout (ms the server may hold a poll) or poll_interval above 0"
            )

    def evolve(self, **changes: Any) -> "PollingOptions":
        """A copy with ``changes``; unknown names and bad values raise InvalidOptionError."""
        check_option_names(changes)
        return attrs.evolve(self, **changes)

    def explicit(self) -> Dict[str, Any]:
        """The fields that differ from the defaults (what a manager-level options object sets)."""
        return {
            field.name: getattr(self, field.name)
            for field in attrs.fields(PollingOptions)
            if getattr(self, field.name) != field.default
        }


OPTION_NAMES: Tuple[str, ...] = tuple(field.name for field in attrs.fields(PollingOptions))


def check_option_names(options: Mapping[str, Any]) -> None:
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise InvalidOptionError(
            f"unknown polling option(s) {', '.join(unknown)}; valid options are {', '.join(OPTION_NAMES)}"
        )


# -- environment ---------------------------------------------------------------------------------

# Property names as they appear in environment variables: ours, then the official Python SDK's.
_ENV_ALIASES: Dict[str, Tuple[str, ...]] = {
    field.name: (field.name, *field.metadata["env_aliases"]) for field in attrs.fields(PollingOptions)
}
_KINDS: Dict[str, str] = {field.name: field.metadata["kind"] for field in attrs.fields(PollingOptions)}
_FIELDS: Dict[str, "attrs.Attribute[Any]"] = {field.name: field for field in attrs.fields(PollingOptions)}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}


def _candidate_names(task: str, prop: str) -> Tuple[str, ...]:
    """Variable names for one property, highest priority first (the official SDK's order)."""
    return (
        f"conductor.worker.{task}.{prop}",
        f"conductor_worker_{task}_{prop}",
        f"CONDUCTOR_WORKER_{task.upper()}_{prop.upper()}",
        f"CONDUCTOR_WORKER_{task}_{prop.upper()}",
        f"conductor.worker.all.{prop}",
        f"conductor_worker_all_{prop}",
        f"CONDUCTOR_WORKER_ALL_{prop.upper()}",
        f"conductor_worker_{prop}",
        f"CONDUCTOR_WORKER_{prop.upper()}",
    )


def _parse(option: str, variable: str, raw: str) -> Any:
    value = raw.strip()
    kind = _KINDS[option]
    if kind == "bool":
        lowered = value.lower()
        if lowered in _TRUE or lowered in _FALSE:
            return lowered in _TRUE
        raise InvalidOptionError(f"environment variable {variable}={raw!r}: expected true/false")
    if kind in ("int", "seconds"):
        if kind == "seconds" and value.lower() in ("", "none"):
            return None
        try:
            return parse_option(option, value)
        except InvalidOptionError as exc:
            raise InvalidOptionError(f"environment variable {variable}={raw!r}: {exc}") from None
    return value or None


def parse_option(name: str, text: str) -> Any:
    """The value of the numeric option ``name`` written as ``text`` (an environment variable, a flag),
    checked by the option's own validator: InvalidOptionError unless ``PollingOptions`` takes it."""
    kind = _KINDS[name]
    if kind not in ("int", "seconds"):
        raise InvalidOptionError(f"{name} is not a numeric option")
    number = _validate.parse_number(text) if kind == "seconds" else _validate.parse_int(text)
    field = _FIELDS[name]
    field.validator(None, field, number)  # type: ignore[misc]  # attrs validators take (instance, attribute, value)
    return number


def options_from_env(task_def_name: str, environ: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """The polling options the environment sets for ``task_def_name`` (see the README's table).

    Per property, a task-specific variable beats an ``all`` one, which beats a global one; within a
    level our property name beats the official SDK's alias (``thread_count`` = ``concurrency``, ...).
    """
    env = os.environ if environ is None else environ
    found: Dict[str, Any] = {}
    for option, aliases in _ENV_ALIASES.items():
        # Level by level, then alias by alias: (ours, SDK's) at the task level, then at "all", ...
        by_level = zip(*(_candidate_names(task_def_name, alias) for alias in aliases))
        hit = next((name for names in by_level for name in names if name in env), None)
        if hit is not None:
            found[option] = _parse(option, hit, env[hit])
    return found


def resolve_options(
    manager: Optional[Mapping[str, Any]] = None,
    worker: Optional[Mapping[str, Any]] = None,
    environment: Optional[Mapping[str, Any]] = None,
) -> PollingOptions:
    """Merge the layers in precedence order into validated options."""
    merged: Dict[str, Any] = {}
    for layer in (manager, worker, environment):
        if layer:
            check_option_names(layer)
            merged.update(layer)
    return PollingOptions(**merged)


__all__ = ["OPTION_NAMES", "PollingOptions", "default_worker_id", "options_from_env", "resolve_options"]
