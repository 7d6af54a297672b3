"""When the host's main thread ends while runners poll: stop them before ``concurrent.futures`` stops
taking work and before Python joins the threads, so in-flight tasks finish and are reported.

A runner registers itself when it starts (:func:`stop_at_exit`); the hook knows it only as a
:class:`Stoppable`: whether it is busy, :meth:`~Stoppable.begin_stop` and :meth:`~Stoppable.stop`.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import Optional, Protocol

log = logging.getLogger("conductor_workers.runner")

_exit_lock = threading.Lock()  # guards _started_runners and _exit_hook_installed


class Stoppable(Protocol):
    """What the exit hook needs of a runner (:class:`~conductor_workers.TaskRunner` is one)."""

    shutdown_timeout: float

    @property
    def is_polling(self) -> bool: ...

    @property
    def in_flight(self) -> int: ...

    @property
    def abandoned(self) -> bool: ...

    def begin_stop(self) -> None: ...

    def stop(self, timeout: Optional[float] = ...) -> bool: ...


_started_runners: "weakref.WeakSet[Stoppable]" = weakref.WeakSet()
_exit_hook_installed = False


def stop_at_exit(runner: Stoppable) -> None:
    """Have ``runner`` stopped when the main thread ends (installed once, at the first start)."""
    global _exit_hook_installed
    with _exit_lock:
        _started_runners.add(runner)
        if _exit_hook_installed:
            return
        _exit_hook_installed = True
    # CPython calls these hooks when the main thread has ended, before it joins the other threads,
    # newest first: registered after concurrent.futures' own (imported with the poll loop), this one
    # runs while the pools still take work, so that in-flight tasks finish and are reported.
    if hasattr(os, "register_at_fork"):  # a forked child has none of these runners' threads
        os.register_at_fork(after_in_child=_started_runners.clear)
    register = getattr(threading, "_register_atexit", None)
    if register is None:
        log.warning("this Python has no threading exit hook: call stop_polling() before the main thread ends")
        return
    try:
        register(_stop_runners_at_exit)
    except RuntimeError:  # the interpreter is already shutting down
        log.debug("interpreter shutting down; no exit hook installed")


def _stop_runners_at_exit() -> None:
    with _exit_lock:
        runners = list(_started_runners)
    busy = [runner for runner in runners if runner.is_polling or runner.in_flight]
    if not busy:
        return
    log.warning(
        "the main thread ended while %d worker(s) were polling: stopping them (in-flight tasks get up to %.0fs)",
        len(busy), max(runner.shutdown_timeout for runner in busy),
    )
    started = time.monotonic()
    for runner in busy:
        runner.begin_stop()
    for runner in busy:
        # an abandoned runner (a second Ctrl-C during serve_forever's drain) is not waited for again
        budget = 0.0 if runner.abandoned else runner.shutdown_timeout
        runner.stop(max(0.0, started + budget - time.monotonic()))


__all__ = ["Stoppable", "stop_at_exit"]
