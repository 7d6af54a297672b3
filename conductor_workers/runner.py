"""``TaskRunner``: one poll thread feeding a thread pool, for one worker.

The loop, per runner:

* poll only for free slots: ``count = concurrency - in_flight``; with no free slot, wait for one;
* after a poll that returned tasks, poll again at once with ``timeout=0`` (take what is queued now);
  after an empty one, long-poll for a single task (``count=1, timeout=batch_poll_timeout``), which
  the server answers as soon as one arrives; sleep ``poll_interval`` only after an empty long-poll;
* a pool thread executes a task and reports it with ``update-v2``, which hands back the next task
  of the same type: it runs that one too while the runner may take it, so a busy worker makes about
  one HTTP call per task. Servers without ``update-v2`` are detected once and get ``update`` + poll;
* a failed report is retried with capped exponential backoff until the task's response timeout
  would have expired anyway; then the result is logged at ERROR and handed to ``on_update_failure``;
* a task the runner will not run (paused, stopping, concurrency lowered) is handed straight back to
  the server (``IN_PROGRESS``, ``callbackAfterSeconds=0``), never held;
* a report is retried with the plain update once an attempt failed: an update-v2 whose answer was
  lost may have been applied already, and the plain update of a task the server already has is a
  harmless no-op;
* when the host's main thread ends, a ``threading`` exit hook stops every runner still polling
  before ``concurrent.futures`` stops taking work and before Python joins the threads: in-flight
  tasks get ``shutdown_timeout`` seconds to finish and be reported, polled ones are handed back.

Options live in one frozen :class:`PollingOptions`, swapped under the runner's lock; the loop reads
it once per iteration. No I/O happens under a lock, and no lock is held while another part is called.

:class:`TaskRunner` holds the lifecycle (start, stop, the drain) and wires the parts, each an object
that owns its state and gets its collaborators at construction:

* :class:`~._runner_state.RunnerState`: options, slots, the lifecycle flags and early reports, under
  the runner's one lock (the only lock the parts share);
* :class:`~._polling.Poller`: the poll thread (free slots, the long poll, dispatch) and the pool;
* :class:`~._executing.Execution`: a task on a pool thread, through the middleware chain;
* :class:`~._reporting.Reporter`: reports, retries, give-backs, early reports, lease extensions;
* :class:`~._lease.LeaseKeeper`: the lease-extension thread (its own lock);
* :class:`~._stats.RunnerStats`: counters and what is stuck, for :meth:`TaskRunner.status` (its own lock);
* :mod:`._exit`: the main-thread exit hook, which calls :meth:`TaskRunner.begin_stop` and
  :meth:`TaskRunner.stop`.

Locks and who owns them: the runner's lock (a ``Condition``) is ``RunnerState``'s; ``RunnerStats``,
``LeaseKeeper``, each task's :class:`~conductor_workers.worker.TaskContext` and the time-limit
watchdog have one each, for their own state only. ``Poller``, ``Execution`` and ``Reporter`` have
none: the pool is the poll thread's alone, and the reporter's one flag (update-v2) is written whole.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Optional, Sequence

from . import _validate
from ._executing import Execution
from ._exit import stop_at_exit
from ._lease import LeaseKeeper
from ._polling import PollGate, Poller
from ._reporting import Reporter
from ._runner_state import RunnerParts, RunnerState, state_of_current_task
from ._stats import RunnerStats
from .client import ConductorClient
from .events import TaskEvents, UpdateFailureHook, combine
from .middleware import Middleware
from .options import MAX_BATCH_POLL_TIMEOUT_MS, PollingOptions
from .status import RunnerStatus
from .time_limit import watchdog
from .worker import Worker

if TYPE_CHECKING:  # pragma: no cover
    from .admission import AdmissionGate

log = logging.getLogger(__name__)

DEFAULT_SHUTDOWN_TIMEOUT = 30.0


class TaskRunner:
    """Polls, executes and reports the tasks of one worker. Start with :meth:`start`, stop with :meth:`stop`."""

    def __init__(
        self,
        worker: Worker,
        client: ConductorClient,
        options: Optional[PollingOptions] = None,
        *,
        events: Optional[TaskEvents] = None,
        middleware: Sequence[Middleware] = (),
        on_update_failure: Optional[UpdateFailureHook] = None,
        poll_gate: Optional[PollGate] = None,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        admission: Optional["AdmissionGate"] = None,
    ) -> None:
        self.worker = worker
        self.task_type = task_type = worker.task_def_name
        #: seconds in-flight tasks get to finish when the host's main thread ends while polling
        self.shutdown_timeout = _validate.seconds("shutdown_timeout", shutdown_timeout)
        # A Middleware passed as ``events`` wraps executions too, outermost.
        layers = ([events] if isinstance(events, Middleware) else []) + list(middleware)
        self._admission = admission
        self._state = RunnerState(task_type, options if options is not None else PollingOptions())
        self._stats = RunnerStats()
        parts = RunnerParts(task_type, client, self._state, self._stats, combine([events, *middleware]))
        self._reporter = Reporter(parts, on_update_failure=on_update_failure, admission=admission)
        self._lease = LeaseKeeper(task_type, self._reporter.send_lease_extension)
        execution = Execution(parts, worker, self._reporter, self._lease, layers=layers)
        self._poller = Poller(parts, execution, self._reporter, poll_gate=poll_gate, admission=admission)

    # -- public API --------------------------------------------------------------------------------

    @property
    def options(self) -> PollingOptions:
        return self._state.options

    @property
    def is_polling(self) -> bool:
        """True while started, not stopping, and the poll thread is alive."""
        return self._state.is_polling

    @property
    def in_flight(self) -> int:
        return self._state.in_flight

    @property
    def abandoned(self) -> bool:
        """True once :meth:`abandon` was called or a :meth:`stop` gave up waiting (until the next start):
        reports of tasks still running are then no longer retried."""
        return self._state.abort.is_set()

    def update_options(self, options: PollingOptions) -> PollingOptions:
        """Swap in new options (already validated); returns the old ones. Takes effect at the next poll."""
        old = self._state.set_options(options)
        if old != options:
            log.info("%s: polling options %r -> %r", self.task_type, old, options)
        return old

    def start(self) -> None:
        """Start polling; harmless when already polling (and a restart when the poll thread died)."""
        previous = self._state.stopping_thread()
        if previous is not None and previous is not threading.current_thread():
            # A stop() does not wait out an idle long poll: the last run's poll thread may still be
            # in it. Its answer is handed back; wait for that before polling again.
            previous.join(MAX_BATCH_POLL_TIMEOUT_MS / 1000.0 + 5.0)
        if not self._state.start(self._poller.run, f"cw-poll-{self.task_type}"):
            return
        stop_at_exit(self)
        log.info("%s: polling started with %r", self.task_type, self._state.options)

    def begin_stop(self) -> None:
        """Stop taking tasks, without waiting for anything; :meth:`stop` then waits for the drain.

        Stopping several runners is quicker this way: every one stops taking tasks first, then they
        drain side by side (what :meth:`TaskManager.stop_polling` does).
        """
        self._state.begin_stop()

    def stop(self, timeout: Optional[float] = 30.0) -> bool:
        """Stop polling, let in-flight tasks finish and report; True when all did within ``timeout`` s.

        Returns within ``timeout``, and True only when no task is still running, every result
        (time-limit failures reported early included) was accepted by the server or handed to
        ``on_update_failure``, and the poll thread has ended or is idle in its last long poll. That
        long poll is not waited out, and never cut (the server may already have handed a task to
        it): the poll thread ends when it is answered, and hands back whatever it brings. Tasks still
        running at the deadline keep running, but their reports are no longer retried (a failed one
        is logged and passed to ``on_update_failure``).
        Idempotent, callable from any thread, also from a worker's ``execute`` (which does not wait
        for its own task). ``timeout`` None waits without a limit; a number must be finite and at
        most 30 days (InvalidOptionError otherwise).
        """
        timeout = _validate.optional_seconds("timeout", timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        state = self._state
        thread = state.begin_stop()
        if thread is None:
            return True
        if thread is not threading.current_thread():
            state.wait_poll_settled(thread, _remaining(deadline))  # ended, or idle in its last long poll
        # A task's thread that waits here (in this or any runner's stop) is not waited for: neither
        # a worker stopping its own runner nor two workers stopping each other's can deadlock.
        caller = state_of_current_task()
        if caller is not None:
            caller.note_blocked(+1)
        try:
            drained, left, early, poll_done = state.wait_drained(thread, _remaining(deadline))
        finally:
            if caller is not None:
                caller.note_blocked(-1)
        poll_ended = not thread.is_alive()
        if not drained:
            state.give_up(thread)
            log.error("%s: stop timed out with %d task(s) still running and %d time-limit report(s) unsent",
                      self.task_type, left, early)
        elif not poll_done:
            log.warning(
                "%s: stop timed out while the last poll waits for the server's answer; the poll thread "
                "ends when it arrives (tasks it brings are handed back)",
                self.task_type,
            )
        current = state.finish_stop(thread, poll_ended)  # False: a start() that raced this stop owns it
        if current and drained:  # tasks still running keep their lease
            self._lease.stop()
        if current:
            log.info("%s: polling stopped", self.task_type)
        return drained and poll_done

    def abandon(self) -> None:
        """Give up on in-flight tasks at once: their reports are no longer retried (see stop())."""
        self._state.abandon()

    def status(self) -> RunnerStatus:
        """Options in force, polling/paused, in-flight, overrunning tasks and counters (a frozen value)."""
        options, in_flight = self._state.snapshot()
        counters, overrunning, stuck_since = self._stats.snapshot(options.concurrency)
        problems = tuple(p for p in (self._lease.problem(), watchdog.problem() if options.time_limit else None) if p)
        return RunnerStatus(
            task_type=self.task_type,
            options=options,
            polling=self.is_polling,
            paused=options.paused,
            in_flight=in_flight,
            overrunning=overrunning,
            update_v2=self._reporter.update_v2,
            last_contact=self._stats.last_contact,
            admission=None if self._admission is None else self._admission.state(self.task_type),
            stuck_since=stuck_since,
            problems=problems,
            **counters,
        )


def _remaining(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


__all__ = ["PollGate", "TaskRunner"]
