"""Capped exponential backoff with jitter, for poll and update failures."""
from __future__ import annotations

import random


class Backoff:
    """``next()`` gives the next delay in seconds: base·2ⁿ capped at ``cap``, jittered to [½, 1]×."""

    __slots__ = ("base", "cap", "_attempt")

    def __init__(self, base: float = 0.25, cap: float = 10.0) -> None:
        self.base = base
        self.cap = cap
        self._attempt = 0

    @property
    def attempts(self) -> int:
        return self._attempt

    def next(self) -> float:
        delay = min(self.cap, self.base * (2 ** min(self._attempt, 30)))
        self._attempt += 1
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self._attempt = 0


def retry_delay(backoff: Backoff, error: BaseException) -> float:
    """The next backoff delay, or the server's ``Retry-After`` (already capped) when that is longer."""
    delay = backoff.next()
    retry_after = getattr(error, "retry_after", None)
    return max(delay, retry_after) if retry_after else delay
