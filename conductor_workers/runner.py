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
  the server (``IN_PROGRESS``, ``callbackAfterSeconds=0``), never held.

Options live in one frozen :class:`PollingOptions`, swapped under ``_cond``; the loop reads it once
per iteration. No I/O happens under a lock.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Tuple

import attrs

from ._backoff import Backoff
from .client import ConductorClient
from .errors import (
    APIError,
    ConductorError,
    EndpointNotSupportedError,
    InvalidRequestError,
    InvalidResponseError,
    NonRetryableError,
)
from .events import TaskEvents, UpdateFailureHook, call_hook
from .models import Task, TaskResult, TaskResultStatus
from .options import PollingOptions
from .worker import Worker, run_task

log = logging.getLogger(__name__)

PollGate = Callable[[str], bool]
_MIN_UPDATE_ATTEMPTS = 3
_LEASE_FRACTION = 0.8


class TaskRunner:
    """Polls, executes and reports the tasks of one worker. Start with :meth:`start`, stop with :meth:`stop`."""

    def __init__(
        self,
        worker: Worker,
        client: ConductorClient,
        options: Optional[PollingOptions] = None,
        *,
        events: Optional[TaskEvents] = None,
        on_update_failure: Optional[UpdateFailureHook] = None,
        poll_gate: Optional[PollGate] = None,
    ) -> None:
        self.worker = worker
        self.task_type = worker.task_def_name
        self._client = client
        self._events = events
        self._on_update_failure = on_update_failure
        self._poll_gate = poll_gate
        self._hostname = socket.gethostname()
        # _cond guards _options, _in_flight, _wake_gen, _stopping and _running; waiters are the poll
        # thread (free slot, option change, stop) and stop() (in-flight drained).
        self._cond = threading.Condition()
        self._options = options if options is not None else PollingOptions()
        self._in_flight = 0
        self._wake_gen = 0
        self._stopping = False
        self._running = False
        self._abort = threading.Event()  # set when stop() gives up waiting: update retries end
        self._thread: Optional[threading.Thread] = None
        # The pool belongs to the poll thread: only it creates, grows, submits to and shuts it down.
        self._executor: Optional[ThreadPoolExecutor] = None
        self._executor_size = 0
        self._use_v2: Optional[bool] = None  # None: not known yet; False after the server refused it
        self._lease = _LeaseKeeper(self)
        self._stats_lock = threading.Lock()  # guards _stats
        self._stats: Dict[str, Any] = dict.fromkeys(("polled", "completed", "failed", "update_failures"), 0)
        self._stats.update(last_error=None, last_error_time=None)

    # -- public API --------------------------------------------------------------------------------

    @property
    def options(self) -> PollingOptions:
        return self._options

    @property
    def is_polling(self) -> bool:
        with self._cond:
            return self._running and not self._stopping

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
        """Start polling; harmless when already polling."""
        with self._cond:
            if self._running and not self._stopping:
                return
            if self._thread is not None and self._thread.is_alive():
                raise ConductorError(f"runner {self.task_type!r} is still stopping; call stop() first")
            self._running, self._stopping = True, False
            self._abort.clear()
            # Started under the lock, so that a concurrent stop() always finds the thread it must join.
            self._thread = threading.Thread(target=self._poll_loop, name=f"cw-poll-{self.task_type}", daemon=False)
            self._thread.start()
        log.info("%s: polling started with %r", self.task_type, self._options)

    def stop(self, timeout: Optional[float] = 30.0) -> bool:
        """Stop polling, let in-flight tasks finish and report; True when all did within ``timeout`` s.

        Idempotent, callable from any thread. Tasks still running at the deadline keep running, but
        their reports are no longer retried (a failed one is logged and passed to
        ``on_update_failure``).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        thread = self._begin_stop()
        if thread is None:
            return True
        if thread is not threading.current_thread():
            thread.join(_remaining(deadline))
        with self._cond:
            drained = self._cond.wait_for(lambda: self._in_flight == 0, _remaining(deadline))
            left = self._in_flight
        if not drained:
            self._abort.set()
            log.error("%s: stop timed out with %d task(s) still running", self.task_type, left)
        with self._cond:
            # A start() that raced this stop owns the runner now: leave its state alone.
            current = self._thread is thread and self._stopping
            if current:
                self._running = False
        if current:
            self._lease.stop()
            log.info("%s: polling stopped", self.task_type)
        return drained

    def _begin_stop(self) -> Optional[threading.Thread]:
        """Stop taking tasks, without waiting; the poll thread to wait for, None when not running."""
        with self._cond:
            if not self._running:
                return None
            self._stopping = True
            self._poke()
            return self._thread

    def status(self) -> Dict[str, Any]:
        """Options in force, polling/paused, in-flight and counters, for dashboards and health checks."""
        with self._stats_lock:
            stats = dict(self._stats)
        with self._cond:
            options, in_flight, running, stopping = self._options, self._in_flight, self._running, self._stopping
        stats.update(
            task_type=self.task_type,
            options=attrs.asdict(options),
            polling=running and not stopping,
            paused=options.paused,
            in_flight=in_flight,
            update_v2=self._use_v2,
        )
        return stats

    # -- the poll thread ---------------------------------------------------------------------------

    def _poke(self) -> None:
        """Wake the poll thread (caller holds ``_cond``)."""
        self._wake_gen += 1
        self._cond.notify_all()

    def _sleep(self, seconds: float) -> None:
        """Sleep until ``seconds`` pass, the runner is stopped, options change or a slot frees."""
        with self._cond:
            generation = self._wake_gen
            self._cond.wait_for(lambda: self._stopping or self._wake_gen != generation, seconds)

    def _wait_for_work(self) -> Optional[Tuple[PollingOptions, int]]:
        """Block while paused or full; the options and free slots to poll with, None when stopping."""
        with self._cond:
            while True:
                if self._stopping:
                    return None
                options = self._options
                free = options.concurrency - self._in_flight
                if not options.paused and free > 0:
                    return options, free
                self._cond.wait()

    def _poll_loop(self) -> None:
        try:
            self._poll_until_stopped()
        finally:
            # Tasks already submitted still run: shutdown(wait=False) only refuses new ones.
            if self._executor is not None:
                self._executor.shutdown(wait=False)
            self._executor, self._executor_size = None, 0

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
                if long_poll:
                    tasks = self._poll(options, 1, options.batch_poll_timeout)
                else:
                    tasks = self._poll(options, free, 0)
                backoff.reset()
                had_tasks = bool(tasks)
                if tasks:
                    self._dispatch(tasks)
            except Exception as exc:  # noqa: BLE001 - the loop must survive anything; logged below
                delay = backoff.next()
                self._record_error(exc)
                if isinstance(exc, ConductorError):
                    log.warning("%s: poll failed (%s); retrying in %.2fs", self.task_type, exc, delay)
                else:
                    log.exception("%s: unexpected error in the poll loop; retrying in %.2fs", self.task_type, delay)
                call_hook(self._events.poll_failed if self._events else None, self.task_type, exc)
                had_tasks = False
                self._sleep(delay)
                continue
            if long_poll and not had_tasks and options.poll_interval:
                self._sleep(options.poll_interval / 1000.0)

    def _poll(self, options: PollingOptions, count: int, timeout_ms: int) -> List[Task]:
        started = time.monotonic()
        tasks = self._client.tasks.batch_poll(
            self.task_type,
            count=count,
            timeout_ms=timeout_ms,
            worker_id=options.worker_id or self._hostname,
            domain=options.domain,
        )
        if self._events is not None:
            call_hook(self._events.polled, self.task_type, len(tasks), time.monotonic() - started)
        return tasks

    def _dispatch(self, tasks: List[Task]) -> None:
        """Take as many tasks as there are free slots now; give the rest back."""
        received = time.monotonic()
        with self._cond:
            options = self._options
            take = 0 if (self._stopping or options.paused) else max(0, options.concurrency - self._in_flight)
            accepted, rejected = tasks[:take], tasks[take:]
            self._in_flight += len(accepted)
        self._count("polled", len(tasks))
        if accepted:
            # Submit first: the accepted tasks' response-timeout clocks are already running.
            executor = self._executor_for(options)
            for task in accepted:
                executor.submit(self._work, task, received)
        for task in rejected:
            self._give_back(task, options)

    def _executor_for(self, options: PollingOptions) -> ThreadPoolExecutor:
        """The pool, grown when concurrency rose (only the poll thread calls this)."""
        if self._executor is None or self._executor_size < options.concurrency:
            if self._executor is not None:
                self._executor.shutdown(wait=False)  # its threads finish their current tasks
            self._executor = ThreadPoolExecutor(options.concurrency, thread_name_prefix=f"cw-{self.task_type}")
            self._executor_size = options.concurrency
        return self._executor

    # -- pool threads ------------------------------------------------------------------------------

    def _work(self, task: Task, received: float) -> None:
        """Execute ``task``, report it, and keep going with the next task update-v2 hands back."""
        next_task: Optional[Task] = task
        try:
            while next_task is not None:
                current, next_task = next_task, None
                result = self._execute(current, received)
                next_task = self._report(current, result, received)
                received = time.monotonic()
        except Exception:  # noqa: BLE001 - a pool thread must never lose a slot
            log.exception("%s: unexpected error while handling a task", self.task_type)
        finally:
            with self._cond:
                self._in_flight -= 1
                self._poke()

    def _execute(self, task: Task, received: float) -> TaskResult:
        events = self._events
        options = self._options
        if events is not None:
            call_hook(events.task_started, task)
        lease = options.lease_extend
        if lease:
            self._lease.track(task, received)
        started = time.monotonic()
        try:
            result, error = run_task(self.worker, task, worker_id=options.worker_id or self._hostname)
        finally:
            if lease:
                self._lease.untrack(task.task_id)
        if error is not None and not isinstance(error, NonRetryableError):
            log.warning("%s: task %s raised %s: %s", self.task_type, task.task_id, type(error).__name__, error)
        self._count("completed" if result.status is TaskResultStatus.COMPLETED else "failed")
        if events is not None:
            if error is not None:
                call_hook(events.task_failed, task, error)
            call_hook(events.task_finished, task, result, time.monotonic() - started)
        return result

    def _may_take_next(self) -> bool:
        """Whether a task handed back by update-v2 may run in the slot that is finishing."""
        with self._cond:
            options = self._options
            return not (self._stopping or options.paused) and self._in_flight <= options.concurrency

    def _report(self, task: Task, result: TaskResult, received: float) -> Optional[Task]:
        """Send ``result``; the next task to run in this slot, if update-v2 handed one back."""
        backoff: Optional[Backoff] = None  # only a failed report needs one
        sanitised = False
        while True:
            try:
                return self._send(result)
            except InvalidRequestError as exc:
                if sanitised:  # not even the failure could be sent (e.g. unserialisable ``extra``)
                    self._update_failed(task, result, exc)
                    return None
                sanitised = True
                result = attrs.evolve(
                    result,
                    status=TaskResultStatus.FAILED,
                    output_data={},
                    reason_for_incompletion=f"the worker's output is not JSON-serialisable: {exc}",
                )
            except InvalidResponseError as exc:
                log.warning("%s: task %s reported, but the answer was unreadable: %s", self.task_type, task.task_id, exc)
                return None
            except ConductorError as exc:
                retryable = not isinstance(exc, APIError) or exc.retryable
                if backoff is None:
                    backoff = Backoff()
                deadline = received + max(task.response_timeout_seconds, 0)
                out_of_time = time.monotonic() >= deadline and backoff.attempts + 1 >= _MIN_UPDATE_ATTEMPTS
                if not retryable or out_of_time or self._abort.is_set():
                    self._update_failed(task, result, exc)
                    return None
                delay = backoff.next()
                self._record_error(exc)  # recovered from if a retry succeeds, but status() shows it
                log.warning(
                    "%s: reporting task %s failed (%s); retry %d in %.2fs",
                    self.task_type, task.task_id, exc, backoff.attempts, delay,
                )
                self._abort.wait(delay)

    def _send(self, result: TaskResult) -> Optional[Task]:
        if self._use_v2 is False or not self._may_take_next():
            self._client.tasks.update_task(result)
            return None
        try:
            next_task = self._client.tasks.update_task_v2(result)
        except EndpointNotSupportedError:
            if self._use_v2 is not False:
                log.info("%s: the server has no update-v2; using update + poll", self.task_type)
            self._use_v2 = False
            self._client.tasks.update_task(result)
            return None
        self._use_v2 = True
        if next_task is None:
            return None
        self._count("polled")
        if self._may_take_next():
            return next_task
        self._give_back(next_task, self._options)
        return None

    def _give_back(self, task: Task, options: PollingOptions) -> None:
        """Return a task this runner will not run, so that another poll gets it at once."""
        result = TaskResult.in_progress(
            0,
            output=task.output_data,
            task_id=task.task_id,
            workflow_instance_id=task.workflow_instance_id,
            worker_id=options.worker_id or self._hostname,
        )
        try:
            self._client.tasks.update_task(result)
            log.debug("%s: gave task %s back to the server", self.task_type, task.task_id)
        except ConductorError as exc:
            log.warning(
                "%s: could not give task %s back (%s); the server re-queues it after its response timeout",
                self.task_type, task.task_id, exc,
            )

    def _update_failed(self, task: Task, result: TaskResult, error: BaseException) -> None:
        self._count("update_failures")
        self._record_error(error)
        log.error(
            "%s: could not report task %s of workflow %s (status %s): %s; result: %r",
            self.task_type, task.task_id, task.workflow_instance_id, result.status.value, error, result.output_data,
        )
        if self._events is not None:
            call_hook(self._events.update_failed, task, result, error)
        call_hook(self._on_update_failure, task, result, error)

    # -- bookkeeping -------------------------------------------------------------------------------

    def _count(self, key: str, amount: int = 1) -> None:
        with self._stats_lock:
            self._stats[key] += amount

    def _record_error(self, error: BaseException) -> None:
        with self._stats_lock:
            self._stats["last_error"] = f"{type(error).__name__}: {error}"
            self._stats["last_error_time"] = time.time()

    def send_lease_extension(self, task: Task) -> None:
        """Tell the server ``task`` is still being worked on (restarts its response-timeout clock)."""
        result = TaskResult(
            task_id=task.task_id,
            workflow_instance_id=task.workflow_instance_id,
            status=TaskResultStatus.IN_PROGRESS,
            extend_lease=True,
            worker_id=self._options.worker_id or self._hostname,
        )
        self._client.tasks.update_task(result)


class _LeaseKeeper:
    """One thread per runner that sends ``extendLease`` for tasks running past ~80 % of their timeout."""

    def __init__(self, runner: TaskRunner) -> None:
        self._runner = runner
        self._cond = threading.Condition()  # guards _due, _thread and _stopped
        self._due: Dict[str, Tuple[float, Task]] = {}
        self._thread: Optional[threading.Thread] = None
        self._stopped = False

    def track(self, task: Task, received: float) -> None:
        if task.response_timeout_seconds <= 0:
            return
        with self._cond:
            self._stopped = False
            self._due[task.task_id] = (received + _LEASE_FRACTION * task.response_timeout_seconds, task)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name=f"cw-lease-{self._runner.task_type}", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def untrack(self, task_id: str) -> None:
        with self._cond:
            self._due.pop(task_id, None)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._due.clear()
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                now = time.monotonic()
                due = [(task_id, task) for task_id, (when, task) in self._due.items() if when <= now]
                for task_id, task in due:
                    self._due[task_id] = (now + _LEASE_FRACTION * task.response_timeout_seconds, task)
                if not due:
                    wait = min((when for when, _ in self._due.values()), default=now + 60.0) - now
                    self._cond.wait(max(wait, 0.01))
                    continue
            for _, task in due:
                try:
                    self._runner.send_lease_extension(task)
                    log.debug("%s: extended the lease of task %s", task.task_type, task.task_id)
                except ConductorError as exc:
                    log.warning("%s: lease extension for task %s failed: %s", task.task_type, task.task_id, exc)


def _remaining(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


__all__ = ["PollGate", "TaskRunner"]
