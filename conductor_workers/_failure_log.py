"""Logging a failing channel (a worker's polls, its reports) by state changes, not by retries.

The first failure is a WARNING, later ones are DEBUG with a WARNING reminder at most once a
minute, and the recovery is a WARNING again, declared by the first success that comes ``settle``
seconds after the last failure (so that intermittent failures do not log a failure and a recovery
each time), so that with no logging configured at all (Python then
prints WARNING and above to stderr) a worker that cannot reach its server is visible without
flooding the output.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Optional

REMIND_EVERY = 60.0  # seconds between reminders while a channel keeps failing
SETTLE = 5.0  # seconds without a failure before a success counts as recovery


class FailureLog:
    """``failed(error, retry_in)`` on every failure, ``succeeded()`` on every success (cheap)."""

    def __init__(
        self, logger: logging.Logger, subject: str, remind_every: float = REMIND_EVERY, settle: float = SETTLE
    ) -> None:
        self._log = logger
        self._subject = subject
        self._remind_every = remind_every
        self._settle = settle
        self._lock = threading.Lock()  # guards the four fields below
        self._failing_since: Optional[float] = None
        self._failures = 0
        self._last_warned = 0.0
        self._last_failure = 0.0

    @property
    def failing(self) -> bool:
        return self._failing_since is not None

    def failed(self, error: BaseException, retry_in: float) -> None:
        now = time.monotonic()
        with self._lock:
            self._failures += 1
            self._last_failure = now
            first = self._failing_since is None
            if first:
                self._failing_since = now
            remind = not first and now - self._last_warned >= self._remind_every
            if first or remind:
                self._last_warned = now
            failures, since = self._failures, self._failing_since or now
        if first:
            self._log.warning(
                "%s failed: %s; retrying in %.1fs (while it keeps failing: a reminder every %.0fs)",
                self._subject, error, retry_in, self._remind_every,
            )
        elif remind:
            self._log.warning(
                "%s still failing after %d attempts over %.0fs: %s", self._subject, failures, now - since, error
            )
        else:
            self._log.debug("%s failed again (%d): %s; retrying in %.2fs", self._subject, failures, error, retry_in)

    def succeeded(self) -> None:
        if self._failing_since is None:  # the common case: one attribute read, no lock
            return
        now = time.monotonic()
        with self._lock:
            since = self._failing_since
            if since is None or now - self._last_failure < self._settle:
                return
            failures, lasted = self._failures, self._last_failure - since
            self._failing_since, self._failures = None, 0
        self._log.warning(
            "%s works again, after %d failed attempts over %.1fs", self._subject, failures, lasted
        )
