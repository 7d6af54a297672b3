"""One rule for every number a user gives us: keyword, environment variable, flag or options file.

A number is accepted only when the runtime can use it as it is, so that it is refused at start
instead of crashing a thread later:

* **finite**: ``inf`` and ``nan`` are never a duration or a count (``None`` is "no limit" where an
  option has one);
* **within what the runtime can use**: a duration is at most :data:`MAX_WAIT_SECONDS` (30 days),
  below ``threading.TIMEOUT_MAX`` on every platform (about 49.7 days on Windows, 292 years on
  Linux), so every ``Event.wait``/``Condition.wait``/``join`` built from it works; counts have
  maxima chosen below what a process can actually start (see each constant);
* **integers where integers are meant**: ``concurrency=2.5`` or ``CONDUCTOR_WORKER_CONCURRENCY=1.7``
  is refused, never rounded; ``True`` is not a number.

Each kind has one function (:func:`seconds`, :func:`milliseconds`, :func:`count`, :func:`port`) that
returns the value in its canonical type or raises :class:`~conductor_workers.errors.InvalidOptionError`
naming the option; the ``*_problem`` functions behind them return the reason as text (``None`` when
the value is fine), which the command line turns into its one-line usage error. Text from the
environment, flags or files goes through :func:`parse_int` / :func:`parse_number` first.
"""
from __future__ import annotations

import decimal
import math
import threading
from typing import Optional

from .errors import InvalidOptionError

#: Longest wait any duration may ask for: 30 days. Longer than any drain, poll or time limit set on
#: purpose, and below ``threading.TIMEOUT_MAX`` everywhere, so the same value works on every platform.
MAX_WAIT_SECONDS: float = min(30 * 24 * 3600.0, threading.TIMEOUT_MAX)
#: The same bound for options given in milliseconds (``poll_interval``).
MAX_WAIT_MS: int = int(MAX_WAIT_SECONDS * 1000)
#: Most threads one worker may run at once (``concurrency``): each is a real thread with its own
#: stack, and past a few thousand a process usually fails to start more ("can't start new thread").
MAX_CONCURRENCY = 10_000
#: Most worker processes under one supervisor (``run --processes``): each holds a spawned
#: interpreter (tens of MB) and two or three of the parent's file descriptors (pipe, sentinel), so
#: 256 stays within the common 1,024-descriptor limit with room for sockets.
MAX_PROCESSES = 256
MAX_PORT = 65535

_LARGEST_DIGITS = 30  # whole numbers from text have fewer digits (far above every maximum)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def seconds_problem(value: object, *, positive: bool = False, maximum: float = MAX_WAIT_SECONDS) -> Optional[str]:
    """Why ``value`` is not a usable number of seconds (None when it is)."""
    lower = "> 0" if positive else ">= 0"
    days = f" ({maximum / 86400:g} days)" if maximum >= 86400 else ""
    expected = f"a number of seconds {lower} and <= {maximum:.0f}{days}"
    if not _is_number(value):
        return f"must be {expected}, got {value!r}"
    number = float(value)  # type: ignore[arg-type]  # an int or float, checked above
    if not math.isfinite(number) or number < 0 or (positive and number == 0) or number > maximum:
        return f"must be {expected}, got {value!r}"
    return None


def int_problem(value: object, minimum: int, maximum: int, unit: str = "") -> Optional[str]:
    """Why ``value`` is not an int between ``minimum`` and ``maximum`` (None when it is)."""
    if not _is_int(value):
        return f"must be an int, got {value!r}"
    if not minimum <= value <= maximum:  # type: ignore[operator]  # an int, checked above
        return f"must be between {minimum} and {maximum}{unit}, got {value!r}"
    return None


def _check(name: str, problem: Optional[str]) -> None:
    if problem is not None:
        raise InvalidOptionError(f"{name} {problem}")


def seconds(name: str, value: object, *, positive: bool = False, maximum: float = MAX_WAIT_SECONDS) -> float:
    """``value`` as a float number of seconds; InvalidOptionError unless it is finite, ``>= 0``
    (``> 0`` with ``positive``) and at most ``maximum``."""
    _check(name, seconds_problem(value, positive=positive, maximum=maximum))
    return float(value)  # type: ignore[arg-type]


def optional_seconds(name: str, value: object, *, positive: bool = False,
                     maximum: float = MAX_WAIT_SECONDS) -> Optional[float]:
    """:func:`seconds`, with None meaning "no limit"."""
    return None if value is None else seconds(name, value, positive=positive, maximum=maximum)


def milliseconds(name: str, value: object, *, minimum: int = 0, maximum: int = MAX_WAIT_MS) -> int:
    """``value`` as an int number of milliseconds between ``minimum`` and ``maximum``."""
    _check(name, int_problem(value, minimum, maximum, " ms"))
    return value  # type: ignore[return-value]  # an int, checked above


def count(name: str, value: object, *, minimum: int = 1, maximum: int) -> int:
    """``value`` as an int between ``minimum`` and ``maximum`` (threads, processes, retries, ...)."""
    _check(name, int_problem(value, minimum, maximum))
    return value  # type: ignore[return-value]


def port(name: str, value: object) -> int:
    """A TCP port, 0 (any free one) to 65535."""
    return count(name, value, minimum=0, maximum=MAX_PORT)


# -- text (environment, flags, files) ---------------------------------------------------------------


def parse_int(text: str) -> int:
    """A whole number (``"7"``, ``" 7 "``, ``"1_000"``, also ``"1.5e3"`` or ``"4.0"``, which are whole);
    ``"1.7"``, ``"inf"``, ``"nan"`` raise InvalidOptionError: a fraction is never rounded."""
    stripped = text.strip()
    try:
        return int(stripped)
    except ValueError:
        pass
    try:
        number = decimal.Decimal(stripped)
    except decimal.InvalidOperation:
        number = decimal.Decimal("nan")
    # its digits counted first: int(Decimal("1e999999999")) would build a billion-digit int
    if not number.is_finite() or number.adjusted() >= _LARGEST_DIGITS or number != number.to_integral_value():
        raise InvalidOptionError(f"expected a whole number, got {text!r}")
    return int(number)


def parse_number(text: str) -> float:
    """A number (``"2.5"``, ``"1e3"``); whether it is usable is the validator's call (``inf`` and
    ``nan`` parse here and are refused there)."""
    try:
        return float(text.strip())
    except ValueError:
        raise InvalidOptionError(f"expected a number, got {text!r}") from None


__all__ = [
    "MAX_CONCURRENCY", "MAX_PORT", "MAX_PROCESSES", "MAX_WAIT_MS", "MAX_WAIT_SECONDS", "count", "int_problem",
    "milliseconds", "optional_seconds", "parse_int", "parse_number", "port", "seconds", "seconds_problem",
]
