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

Options live in one frozen :class:`PollingOptions`, swapped under ``_cond``; the loop reads it once
per iteration. No I/O happens under a lock.

Here: the lifecycle, the poll loop, dispatch and execution (through the middleware chain). Reporting
is in :mod:`._reporting` (a mixin), lease extension in :mod:`._lease`, the main-thread exit hook in
:mod:`._exit`.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence, Tuple

from . import _validate
from ._backoff import Backoff, retry_delay
from ._exit import stop_at_exit
from ._failure_log import FailureLog
from ._stats import RunnerStats
from ._lease import LeaseKeeper
from ._executing import Executing, _current, _Job
from .client import ConductorClient
from .errors import ConductorError
from .events import TaskEvents, UpdateFailureHook, call_hook, combine
from .middleware import Middleware, chain
from .models import Task
from .options import MAX_BATCH_POLL_TIMEOUT_MS, PollingOptions, default_worker_id
from .status import RunnerStatus
from .time_limit import TimeLimitMiddleware, watchdog
from .worker import Worker

if TYPE_CHECKING:  # pragma: no cover
    from .admission import AdmissionGate

log = logging.getLogger(__name__)

PollGate = Callable[[str], bool]
_TIME_LIMIT = TimeLimitMiddleware()
DEFAULT_SHUTDOWN_TIMEOUT = 30.0

class TaskRunner(Executing):
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
        self.task_type = worker.task_def_name
        #: seconds in-flight tasks get to finish when the host's main thread ends while polling
        self.shutdown_timeout = _validate.seconds("shutdown_timeout", shutdown_timeout)
        self._client = client
        # A Middleware passed as ``events`` wraps executions too, outermost.
        layers = ([events] if isinstance(events, Middleware) else []) + list(middleware)
        self._events = combine([events, *middleware])
        self._handler = chain(worker, layers)
        self._limited_handler = chain(worker, [*layers, _TIME_LIMIT])  # time_limit set: innermost
        self._on_update_failure = on_update_failure
        self._poll_gate = poll_gate
        self._admission = admission
        self._admission_seen: Tuple[int, str] = (-1, "")  # the gate's (limit, reason) the hook last saw
        self._default_worker_id = default_worker_id()  # when options.worker_id is None; renewed at start()
        # _cond guards _options, _in_flight, _wake_gen, _stopping and _running; waiters are the poll
        # thread (free slot, option change, stop) and stop() (in-flight drained).
        self._cond = threading.Condition()
        self._options = options if options is not None else PollingOptions()
        self._in_flight = 0
        self._early_reports = 0  # time-limit failures still being reported on threads of their own
        self._long_polling: Optional[threading.Thread] = None  # the poll thread, while in an idle long poll
        self._blocked_in_stop = 0  # our pool threads now waiting inside some stop(): not waited for
        self._wake_gen = 0
        self._stopping = False
        self._running = False
        self._abort = threading.Event()  # set when stop() gives up waiting: update retries end
        self._thread: Optional[threading.Thread] = None
        # The pool belongs to the poll thread: only it creates, grows, submits to and shuts it down.
        self._executor: Optional[ThreadPoolExecutor] = None
        self._executor_size = 0
        self._use_v2: Optional[bool] = None  # None: not known yet; False after the server refused it
        self._lease = LeaseKeeper(self.task_type, self.send_lease_extension)
        self._poll_log = FailureLog(log, f"worker {self.task_type!r}: polling {client.config.server_url}")
        self._report_log = FailureLog(log, f"worker {self.task_type!r}: reporting results")
        self._stats = RunnerStats()

    # -- public API --------------------------------------------------------------------------------

    @property
    def options(self) -> PollingOptions:
        return self._options

    @property
    def is_polling(self) -> bool:
        """True while started, not stopping, and the poll thread is alive."""
        with self._cond:
            thread = self._thread
            return self._running and not self._stopping and thread is not None and thread.is_alive()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def update_options(self, options: PollingOptions) -> PollingOptions:
        """Swap in new options (already validated); returns the old ones. Takes effect at the next poll."""
        with self._cond:
            old, self._options = self._options, options
            self._poke()
        if old != options:
            log.info("%s: polling options %r -> %r", self.task_type, old, options)
        return old

    def start(self) -> None:
        """Start polling; harmless when already polling (and a restart when the poll thread died)."""
        with self._cond:
            previous = self._thread if self._stopping else None
        if previous is not None and previous is not threading.current_thread():
            # A stop() does not wait out an idle long poll: the last run's poll thread may still be
            # in it. Its answer is handed back; wait for that before polling again.
            previous.join(MAX_BATCH_POLL_TIMEOUT_MS / 1000.0 + 5.0)
        with self._cond:
            alive = self._thread is not None and self._thread.is_alive()
            if self._running and not self._stopping and alive:
                return
            if self._thread is not None and self._thread.is_alive():
                raise ConductorError(f"runner {self.task_type!r} is still stopping; call stop() first")
            self._running, self._stopping = True, False
            self._abort.clear()
            self._default_worker_id = default_worker_id()  # this process's, should it have forked since
            # Started under the lock, so that a concurrent stop() always finds the thread it must join.
            self._thread = threading.Thread(target=self._poll_loop, name=f"cw-poll-{self.task_type}", daemon=False)
            self._thread.start()
        stop_at_exit(self)
        log.info("%s: polling started with %r", self.task_type, self._options)

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
        thread = self._begin_stop()
        if thread is None:
            return True
        if thread is not threading.current_thread():
            with self._cond:  # ended, or idle in its last long poll (not waited out)
                self._cond.wait_for(lambda: not thread.is_alive() or self._long_polling is thread, _remaining(deadline))
        # A task's thread that waits here (in this or any runner's stop) is not waited for: neither
        # a worker stopping its own runner nor two workers stopping each other's can deadlock.
        caller: Optional[TaskRunner] = getattr(_current, "runner", None)
        if caller is not None:
            caller._note_blocked(+1)
        try:
            with self._cond:
                drained = self._cond.wait_for(
                    lambda: self._in_flight <= self._blocked_in_stop and not self._early_reports, _remaining(deadline)
                )
                left = self._in_flight - self._blocked_in_stop
                early = self._early_reports
                poll_done = not thread.is_alive() or self._long_polling is thread
        finally:
            if caller is not None:
                caller._note_blocked(-1)
        poll_ended = not thread.is_alive()
        if not drained:
            with self._cond:
                if self._thread is thread:  # not a later start()'s run
                    self._abort.set()
            log.error("%s: stop timed out with %d task(s) still running and %d time-limit report(s) unsent",
                      self.task_type, left, early)
        elif not poll_done:
            log.warning(
                "%s: stop timed out while the last poll waits for the server's answer; the poll thread "
                "ends when it arrives (tasks it brings are handed back)",
                self.task_type,
            )
        with self._cond:
            # A start() that raced this stop owns the runner now: leave its state alone.
            current = self._thread is thread and self._stopping
            if current and poll_ended:
                self._running = False
        if current and drained:  # tasks still running keep their lease
            self._lease.stop()
        if current:
            log.info("%s: polling stopped", self.task_type)
        return drained and poll_done

    def _note_blocked(self, change: int) -> None:
        with self._cond:
            self._blocked_in_stop += change
            self._cond.notify_all()

    def abandon(self) -> None:
        """Give up on in-flight tasks at once: their reports are no longer retried (see stop())."""
        with self._cond:
            self._stopping = True
            self._abort.set()
            self._poke()

    def _begin_stop(self) -> Optional[threading.Thread]:
        """Stop taking tasks, without waiting; the poll thread to wait for, None when never started."""
        with self._cond:
            if not self._running:
                return None
            self._stopping = True
            self._poke()
            return self._thread

    def status(self) -> RunnerStatus:
        """Options in force, polling/paused, in-flight, overrunning tasks and counters (a frozen value)."""
        with self._cond:
            options, in_flight = self._options, self._in_flight
        counters, overrunning, stuck_since = self._stats.snapshot(options.concurrency)
        problems = tuple(p for p in (self._lease.problem(), watchdog.problem() if options.time_limit else None) if p)
        return RunnerStatus(
            task_type=self.task_type,
            options=options,
            polling=self.is_polling,
            paused=options.paused,
            in_flight=in_flight,
            overrunning=overrunning,
            update_v2=self._use_v2,
            last_contact=self._stats.last_contact,
            admission=None if self._admission is None else self._admission.state(self.task_type),
            stuck_since=stuck_since,
            problems=problems,
            **counters,
        )

    # -- the poll thread ---------------------------------------------------------------------------

    def _poke(self) -> None:
        """Wake the poll thread (caller holds ``_cond``)."""
        self._wake_gen += 1
        self._cond.notify_all()

    def _sleep(self, seconds: float, *, until_stopped_only: bool = False) -> None:
        """Sleep until ``seconds`` pass or the runner is stopped (or options change or a slot frees)."""
        with self._cond:
            generation = self._wake_gen
            if until_stopped_only:
                self._cond.wait_for(lambda: self._stopping, seconds)
            else:
                self._cond.wait_for(lambda: self._stopping or self._wake_gen != generation, seconds)

    def _wait_for_work(self) -> Optional[Tuple[PollingOptions, int]]:
        """Block while paused or full; the options and free slots to poll with, None when stopping.

        With an admission gate, "full" is the gate's current limit (at most ``concurrency``), and
        the gate may hold polling altogether; both change without a notification, so the wait
        then wakes every ``gate.wake_interval()`` to ask again.
        """
        gate = self._admission
        while True:
            with self._cond:
                if self._stopping:
                    return None
                options = self._options
                if options.paused:
                    self._cond.wait()
                    continue
                if gate is None:
                    free = options.concurrency - self._in_flight
                    if free > 0:
                        return options, free
                    self._cond.wait()
                    continue
                in_flight = self._in_flight
            # The gate may read its resource files (its first reading, or one its thread missed):
            # asked outside the runner's lock, as the hook is called.
            limit = gate.limit(self.task_type, options.concurrency, in_flight) if gate.may_poll(self.task_type) else 0
            seen = (limit, gate.state(self.task_type).get("reason", ""))
            if seen != self._admission_seen:
                self._admission_seen = seen
                if self._events is not None:
                    call_hook(self._events.admission_changed, self.task_type, seen[0], seen[1])
            with self._cond:
                if self._stopping or self._options is not options:
                    continue  # look again with what changed
                free = limit - self._in_flight
                if free > 0:
                    return options, free
                self._cond.wait(gate.wake_interval())

    def _poll_loop(self) -> None:
        try:
            self._poll_until_stopped()
        except BaseException:  # noqa: BLE001 - logged once here; is_polling now says False
            log.exception("%s: the poll thread died; polling has stopped", self.task_type)
        finally:
            # Tasks already submitted still run: shutdown(wait=False) only refuses new ones.
            if self._executor is not None:
                self._executor.shutdown(wait=False)
            self._executor, self._executor_size = None, 0
            with self._cond:
                if self._thread is threading.current_thread() and self._stopping:
                    self._running = False  # a stop() that did not wait for this thread is complete now
                self._cond.notify_all()

    def _poll_until_stopped(self) -> None:
        backoff = Backoff()
        had_tasks = False
        while True:
            work = self._wait_for_work()
            if work is None:
                return
            options, free = work
            long_poll = not had_tasks
            try:
                if self._poll_gate is not None and not self._poll_gate(self.task_type):
                    self._sleep(max(options.poll_interval, 100) / 1000.0)
                    continue
                requested = 1 if long_poll else free
                if long_poll:
                    tasks = self._long_poll(options)
                    if tasks is None:
                        return
                else:
                    tasks = self._poll(options, free, 0)
                if self._admission is not None:
                    self._admission.poll_returned(self.task_type, requested, len(tasks))
                backoff.reset()
                self._poll_log.succeeded()
                had_tasks = self._dispatch(tasks) > 0 if tasks else False
            except Exception as exc:  # noqa: BLE001 - the loop must survive anything; logged below
                if self._stopping:  # the last long poll of a stop() that did not wait for it
                    log.debug("%s: the last poll after stopping failed: %s", self.task_type, exc)
                    return
                delay = retry_delay(backoff, exc)
                self._stats.record_error(exc)
                if isinstance(exc, ConductorError):
                    self._poll_log.failed(exc, delay)
                else:
                    log.exception("%s: unexpected error in the poll loop; retrying in %.2fs", self.task_type, delay)
                call_hook(self._events.poll_failed if self._events else None, self.task_type, exc)
                had_tasks = False
                self._sleep(delay, until_stopped_only=True)
                continue
            if long_poll and not had_tasks and options.poll_interval:
                self._sleep(options.poll_interval / 1000.0)

    def _long_poll(self, options: PollingOptions) -> Optional[List[Task]]:
        """Wait for one task; None when stopping. A stop() meanwhile does not wait for the answer."""
        with self._cond:
            if self._stopping:
                return None
            self._long_polling = threading.current_thread()
        try:
            return self._poll(options, 1, options.batch_poll_timeout)
        finally:
            with self._cond:
                self._long_polling = None

    def _poll(self, options: PollingOptions, count: int, timeout_ms: int) -> List[Task]:
        started = time.monotonic()
        tasks = self._client.tasks.batch_poll(
            self.task_type,
            count=count,
            timeout_ms=timeout_ms,
            worker_id=options.worker_id or self._default_worker_id,
            domain=options.domain,
        )
        self._stats.contact()
        if self._events is not None:
            call_hook(self._events.polled, self.task_type, len(tasks), time.monotonic() - started)
        return tasks

    def _dispatch(self, tasks: List[Task]) -> int:
        """Take as many tasks as there are free slots now; give the rest back. Returns the usable ones."""
        received = time.monotonic()
        self._stats.count("tasks_received", len(tasks))
        usable = [task for task in tasks if self._usable(task)]
        with self._cond:
            options = self._options
            take = 0 if (self._stopping or options.paused) else max(0, options.concurrency - self._in_flight)
            accepted, rejected = usable[:take], usable[take:]
            self._in_flight += len(accepted)
        if accepted:
            # Submit first: the accepted tasks' response-timeout clocks are already running.
            executor = self._executor_for(options)
            for index, task in enumerate(accepted):
                job = _Job()
                try:
                    executor.submit(self._work, task, received, job)
                except RuntimeError as exc:  # interpreter shutdown, or no thread could be started
                    # submit() may have queued the job before it failed (3.12 does): whoever takes
                    # it first, the pool thread or this one, owns the slot.
                    unsent = accepted[index + 1:]
                    with self._cond:
                        if not job.started:
                            job.cancelled = True
                            unsent.insert(0, task)
                        self._in_flight -= len(unsent)
                        self._stopping = True
                        self._poke()
                    log.warning("%s: %s; handing %d task(s) back and stopping", self.task_type, exc, len(unsent))
                    rejected = unsent + rejected
                    break
        for task in rejected:
            self._give_back(task, options)
        return len(usable)

    def _executor_for(self, options: PollingOptions) -> ThreadPoolExecutor:
        """The pool, grown when concurrency rose (only the poll thread calls this)."""
        if self._executor is None or self._executor_size < options.concurrency:
            if self._executor is not None:
                self._executor.shutdown(wait=False)  # its threads finish their current tasks
            self._executor = ThreadPoolExecutor(options.concurrency, thread_name_prefix=f"cw-{self.task_type}")
            self._executor_size = options.concurrency
        return self._executor

def _remaining(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


__all__ = ["PollGate", "TaskRunner"]
