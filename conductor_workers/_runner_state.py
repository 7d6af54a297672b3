"""The state a runner's threads share, under the runner's one lock.

:class:`RunnerState` owns the lock (a ``Condition``) and everything it guards: the options in force,
the slots taken (``in_flight``), the lifecycle (running, stopping, the poll thread, whether that
thread is in an idle long poll), the time-limit failures still being reported on threads of their
own, and the pool threads waiting inside some ``stop()``. Its waiters are the poll thread (a free
slot, an option change, a stop) and ``stop()`` (the drain). The poll loop, the pool threads and
the reporter change this state only through the methods below, each one short and free of I/O:
nothing is called out of this object while its lock is held.

``abort`` is set when a stop gives up waiting (or the runner is abandoned): update retries then
end. It is an ``Event`` of its own, so the reporter waits on it without the lock.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable, Optional, Protocol, Tuple

import attrs

from ._stats import RunnerStats
from .errors import ConductorError
from .events import TaskEvents
from .options import PollingOptions, default_worker_id

if TYPE_CHECKING:  # pragma: no cover
    from .client import ConductorClient

_current = threading.local()  # .state: the RunnerState whose task this pool thread is running


def state_of_current_task() -> Optional["RunnerState"]:
    """The state of the runner whose task the calling thread is running, None outside a task."""
    return getattr(_current, "state", None)


class SlotLimit(Protocol):
    """A limit below ``concurrency`` that changes without notice (the admission gate's)."""

    def limit(self, options: PollingOptions, in_flight: int) -> int:
        """The slots the runner may hold now (called outside the runner's lock)."""

    def wake_interval(self) -> float:
        """How often to ask again while the limit holds polling back."""


class Job:
    """Who owns a submitted task's slot: the pool thread that starts it, or the poll thread taking it
    back (its submit failed). Both fields are guarded by the runner's lock."""

    __slots__ = ("started", "cancelled")

    def __init__(self) -> None:
        self.started = False
        self.cancelled = False


class RunnerState:
    """The options, slots and lifecycle of one runner, under its one lock (see the module docs)."""

    def __init__(self, task_type: str, options: PollingOptions) -> None:
        self._task_type = task_type
        # _cond guards everything below but abort; waiters: the poll thread and stop()
        self._cond = threading.Condition()
        self._options = options
        self._in_flight = 0
        self._early_reports = 0  # time-limit failures still being reported on threads of their own
        self._long_polling: Optional[threading.Thread] = None  # the poll thread, while in an idle long poll
        self._blocked_in_stop = 0  # our pool threads now waiting inside some stop(): not waited for
        self._wake_gen = 0
        self._stopping = False
        self._running = False
        self._thread: Optional[threading.Thread] = None
        self._default_worker_id = default_worker_id()  # when options.worker_id is None; renewed at start()
        #: set when stop() gives up waiting (or abandon()): update retries end
        self.abort = threading.Event()

    # -- reading ------------------------------------------------------------------------------------
    # Single references, written whole under the lock: read without it.

    @property
    def options(self) -> PollingOptions:
        """The options in force (the poll loop reads them once per round)."""
        return self._options

    def worker_id(self, options: PollingOptions) -> str:
        """The worker id to send: the option's, else this process's default."""
        return options.worker_id or self._default_worker_id

    @property
    def in_flight(self) -> int:
        """Slots taken: tasks polled and not yet returned by their thread."""
        return self._in_flight

    def snapshot(self) -> Tuple[PollingOptions, int]:
        """The options and the slots taken, read together."""
        with self._cond:
            return self._options, self._in_flight

    @property
    def stopping(self) -> bool:
        """A stop began (or the runner was abandoned); no task is taken any more."""
        return self._stopping

    @property
    def is_polling(self) -> bool:
        """Started, not stopping, and the poll thread alive."""
        with self._cond:
            thread = self._thread
            return self._running and not self._stopping and thread is not None and thread.is_alive()

    def set_options(self, options: PollingOptions) -> PollingOptions:
        """Swap in ``options``; the old ones. The poll thread looks again at once."""
        with self._cond:
            old, self._options = self._options, options
            self._poke()
        return old

    # -- lifecycle ----------------------------------------------------------------------------------

    def stopping_thread(self) -> Optional[threading.Thread]:
        """The poll thread of a run being stopped (it may still be in its last long poll), else None."""
        with self._cond:
            return self._thread if self._stopping else None

    def start(self, target: Callable[[], None], name: str) -> bool:
        """Start a poll thread running ``target``; False when one is polling already.

        Raises ConductorError while the last run's poll thread is still alive.
        """
        with self._cond:
            alive = self._thread is not None and self._thread.is_alive()
            if self._running and not self._stopping and alive:
                return False
            if alive:
                raise ConductorError(f"runner {self._task_type!r} is still stopping; call stop() first")
            self._running, self._stopping = True, False
            self.abort.clear()
            self._default_worker_id = default_worker_id()  # this process's, should it have forked since
            # Started under the lock, so that a concurrent stop() always finds the thread it must join.
            self._thread = threading.Thread(target=target, name=name, daemon=False)
            self._thread.start()
        return True

    def begin_stop(self) -> Optional[threading.Thread]:
        """Stop taking tasks, without waiting; the poll thread to wait for, None when never started."""
        with self._cond:
            if not self._running:
                return None
            self._stopping = True
            self._poke()
            return self._thread

    def abandon(self) -> None:
        """Stop, and end update retries at once."""
        with self._cond:
            self._stopping = True
            self.abort.set()
            self._poke()

    def wait_poll_settled(self, thread: threading.Thread, timeout: Optional[float]) -> None:
        """Wait until ``thread`` ended or is idle in its last long poll (which is not waited out)."""
        with self._cond:
            self._cond.wait_for(lambda: not thread.is_alive() or self._long_polling is thread, timeout)

    def wait_drained(self, thread: threading.Thread, timeout: Optional[float]) -> Tuple[bool, int, int, bool]:
        """Wait until no task runs (but those waiting in a stop) and no early report is unsent.

        Returns whether it drained, the tasks still running, the early reports still unsent, and
        whether ``thread`` (the poll thread) ended or is idle in its last long poll.
        """
        with self._cond:
            drained = self._cond.wait_for(
                lambda: self._in_flight <= self._blocked_in_stop and not self._early_reports, timeout
            )
            left = self._in_flight - self._blocked_in_stop
            return drained, left, self._early_reports, not thread.is_alive() or self._long_polling is thread

    def give_up(self, thread: threading.Thread) -> None:
        """A stop of the run polling on ``thread`` timed out: end update retries (not a later run's)."""
        with self._cond:
            if self._thread is thread:
                self.abort.set()

    def finish_stop(self, thread: threading.Thread, poll_ended: bool) -> bool:
        """A stop of the run polling on ``thread`` is done waiting; False when a later start() owns
        the runner now (its state is left alone)."""
        with self._cond:
            current = self._thread is thread and self._stopping
            if current and poll_ended:
                self._running = False
        return current

    def poll_thread_ended(self) -> None:
        """Called by the poll thread as it ends: a stop() that did not wait for it is complete now."""
        with self._cond:
            if self._thread is threading.current_thread() and self._stopping:
                self._running = False
            self._cond.notify_all()

    def note_blocked(self, change: int) -> None:
        """One of this runner's pool threads entered (+1) or left (-1) some runner's stop()."""
        with self._cond:
            self._blocked_in_stop += change
            self._cond.notify_all()

    # -- the poll thread ----------------------------------------------------------------------------

    def _poke(self) -> None:
        """Wake the poll thread (caller holds ``_cond``)."""
        self._wake_gen += 1
        self._cond.notify_all()

    def sleep(self, seconds: float, *, until_stopped_only: bool = False) -> None:
        """Sleep until ``seconds`` pass or the runner is stopped (or options change or a slot frees)."""
        with self._cond:
            generation = self._wake_gen
            if until_stopped_only:
                self._cond.wait_for(lambda: self._stopping, seconds)
            else:
                self._cond.wait_for(lambda: self._stopping or self._wake_gen != generation, seconds)

    def wait_for_work(self, limit: Optional[SlotLimit]) -> Optional[Tuple[PollingOptions, int]]:
        """Block while paused or full; the options and free slots to poll with, None when stopping.

        With a ``limit``, "full" is that limit (at most ``concurrency``; 0 holds polling); it changes
        without a notification, so the wait then wakes every ``limit.wake_interval()`` to ask again.
        """
        while True:
            with self._cond:
                if self._stopping:
                    return None
                options = self._options
                if options.paused:
                    self._cond.wait()
                    continue
                if limit is None:
                    free = options.concurrency - self._in_flight
                    if free > 0:
                        return options, free
                    self._cond.wait()
                    continue
                in_flight = self._in_flight
            allowed = limit.limit(options, in_flight)  # outside the lock: it may read files, call hooks
            with self._cond:
                if self._stopping or self._options is not options:
                    continue  # look again with what changed
                free = allowed - self._in_flight
                if free > 0:
                    return options, free
                self._cond.wait(limit.wake_interval())

    def long_poll_started(self) -> bool:
        """The poll thread enters an idle long poll (a stop() does not wait it out); False when stopping."""
        with self._cond:
            if self._stopping:
                return False
            self._long_polling = threading.current_thread()
            return True

    def long_poll_ended(self) -> None:
        with self._cond:
            self._long_polling = None

    def take(self, count: int) -> Tuple[PollingOptions, int]:
        """Take up to ``count`` free slots for polled tasks; the options and how many were taken
        (none while stopping or paused)."""
        with self._cond:
            options = self._options
            free = 0 if (self._stopping or options.paused) else max(0, options.concurrency - self._in_flight)
            taken = min(count, free)
            self._in_flight += taken
            return options, taken

    def take_back(self, job: Job, unsent: int) -> bool:
        """A submit failed (``job``'s, after which ``unsent`` more tasks were not submitted): free their
        slots and stop. True when ``job``'s task is the caller's to hand back (no pool thread took it)."""
        with self._cond:
            mine = not job.started
            if mine:
                job.cancelled = True
            self._in_flight -= unsent + (1 if mine else 0)
            self._stopping = True
            self._poke()
            return mine

    # -- the pool threads ---------------------------------------------------------------------------

    def claim(self, job: Job) -> Optional[bool]:
        """A pool thread starts ``job``: None when the poll thread took it back, else whether the runner
        is stopping (the task is then handed back, not run)."""
        with self._cond:
            if job.cancelled:
                return None
            job.started = True
            return self._stopping

    def running_here(self, running: bool) -> None:
        """Mark the calling pool thread as running (or no longer running) a task of this runner."""
        _current.state = self if running else None

    def release(self) -> None:
        """A slot is free again (its task's thread returned)."""
        with self._cond:
            self._in_flight -= 1
            self._poke()

    def taking_tasks(self) -> Optional[Tuple[PollingOptions, int]]:
        """The options and slots taken while the runner takes tasks (not stopping, not paused, not
        over ``concurrency``); None when it does not."""
        with self._cond:
            options = self._options
            if self._stopping or options.paused or self._in_flight > options.concurrency:
                return None
            return options, self._in_flight

    def early_report_started(self) -> None:
        with self._cond:
            self._early_reports += 1

    def early_report_ended(self) -> None:
        with self._cond:
            self._early_reports -= 1
            self._cond.notify_all()


@attrs.frozen
class RunnerParts:
    """What every part of one runner (poller, execution, reporter) works with."""

    task_type: str
    client: "ConductorClient"
    state: RunnerState
    stats: RunnerStats
    #: the runner's hooks (its events and middleware combined), None without any
    events: Optional[TaskEvents]


__all__ = ["Job", "RunnerParts", "RunnerState", "SlotLimit", "state_of_current_task"]
