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
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Tuple

import attrs

from ._backoff import Backoff
from ._failure_log import FailureLog
from .client import ConductorClient
from .errors import (
    APIError,
    ConductorError,
    EndpointNotSupportedError,
    ExternalPayloadError,
    InvalidRequestError,
    InvalidResponseError,
    NonRetryableError,
)
from .events import TaskEvents, UpdateFailureHook, call_hook
from .models import Task, TaskResult, TaskResultStatus
from .options import PollingOptions
from .payloads import TASK_INPUT, TASK_OUTPUT, payload_size
from .worker import Worker, run_task

log = logging.getLogger(__name__)

PollGate = Callable[[str], bool]
_MIN_UPDATE_ATTEMPTS = 3
_GIVE_BACK_ATTEMPTS = 3
_LEASE_FRACTION = 0.8
DEFAULT_SHUTDOWN_TIMEOUT = 30.0

_current = threading.local()  # .runner: the TaskRunner whose task this pool thread is running


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
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    ) -> None:
        self.worker = worker
        self.task_type = worker.task_def_name
        #: seconds in-flight tasks get to finish when the host's main thread ends while polling
        self.shutdown_timeout = shutdown_timeout
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
        self._lease = _LeaseKeeper(self)
        self._poll_log = FailureLog(log, f"worker {self.task_type!r}: polling {client.config.server_url}")
        self._report_log = FailureLog(log, f"worker {self.task_type!r}: reporting results")
        self._stats_lock = threading.Lock()  # guards _stats
        self._stats: Dict[str, Any] = dict.fromkeys(("polled", "completed", "failed", "update_failures"), 0)
        self._stats.update(last_error=None, last_error_time=None)
        self._last_contact: Optional[float] = None  # time.time() the server last answered a poll or report

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
            alive = self._thread is not None and self._thread.is_alive()
            if self._running and not self._stopping and alive:
                return
            if self._thread is not None and self._thread.is_alive():
                raise ConductorError(f"runner {self.task_type!r} is still stopping; call stop() first")
            self._running, self._stopping = True, False
            self._abort.clear()
            # Started under the lock, so that a concurrent stop() always finds the thread it must join.
            self._thread = threading.Thread(target=self._poll_loop, name=f"cw-poll-{self.task_type}", daemon=False)
            self._thread.start()
        _stop_at_exit(self)
        log.info("%s: polling started with %r", self.task_type, self._options)

    def stop(self, timeout: Optional[float] = 30.0) -> bool:
        """Stop polling, let in-flight tasks finish and report; True when all did within ``timeout`` s.

        Returns within ``timeout``, and True only when the poll thread has ended and no task is
        still running. Otherwise the poll thread ends as soon as its last poll is answered (tasks
        that poll brings are handed back), and tasks still running keep running, but their reports
        are no longer retried (a failed one is logged and passed to ``on_update_failure``).
        Idempotent, callable from any thread, also from a worker's ``execute`` (which does not wait
        for its own task).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        thread = self._begin_stop()
        if thread is None:
            return True
        if thread is not threading.current_thread():
            thread.join(_remaining(deadline))
        # A task's thread that waits here (in this or any runner's stop) is not waited for: neither
        # a worker stopping its own runner nor two workers stopping each other's can deadlock.
        caller: Optional[TaskRunner] = getattr(_current, "runner", None)
        if caller is not None:
            caller._note_blocked(+1)
        try:
            with self._cond:
                drained = self._cond.wait_for(
                    lambda: self._in_flight <= self._blocked_in_stop, _remaining(deadline)
                )
                left = self._in_flight - self._blocked_in_stop
        finally:
            if caller is not None:
                caller._note_blocked(-1)
        poll_ended = not thread.is_alive()
        if not drained:
            with self._cond:
                if self._thread is thread:  # not a later start()'s run
                    self._abort.set()
            log.error("%s: stop timed out with %d task(s) still running", self.task_type, left)
        elif not poll_ended:
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
        return drained and poll_ended

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

    def status(self) -> Dict[str, Any]:
        """Options in force, polling/paused, in-flight and counters, for dashboards and health checks.

        ``last_contact`` is when the server last answered a poll or a report (``time.time()``), None
        before its first answer.
        """
        with self._stats_lock:
            stats = dict(self._stats)
        with self._cond:
            options, in_flight = self._options, self._in_flight
        stats.update(
            task_type=self.task_type,
            options=attrs.asdict(options),
            polling=self.is_polling,
            paused=options.paused,
            in_flight=in_flight,
            update_v2=self._use_v2,
            last_contact=self._last_contact,
        )
        return stats

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
        except BaseException:  # noqa: BLE001 - logged once here; is_polling now says False
            log.exception("%s: the poll thread died; polling has stopped", self.task_type)
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
                self._poll_log.succeeded()
                had_tasks = self._dispatch(tasks) > 0 if tasks else False
            except Exception as exc:  # noqa: BLE001 - the loop must survive anything; logged below
                delay = _retry_delay(backoff, exc)
                self._record_error(exc)
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

    def _poll(self, options: PollingOptions, count: int, timeout_ms: int) -> List[Task]:
        started = time.monotonic()
        tasks = self._client.tasks.batch_poll(
            self.task_type,
            count=count,
            timeout_ms=timeout_ms,
            worker_id=options.worker_id or self._hostname,
            domain=options.domain,
        )
        self._last_contact = time.time()
        if self._events is not None:
            call_hook(self._events.polled, self.task_type, len(tasks), time.monotonic() - started)
        return tasks

    def _dispatch(self, tasks: List[Task]) -> int:
        """Take as many tasks as there are free slots now; give the rest back. Returns the usable ones."""
        received = time.monotonic()
        self._count("polled", len(tasks))
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

    def _usable(self, task: Task) -> bool:
        """A task can be run and reported only with both ids; the server never sends one without."""
        if task.task_id and task.workflow_instance_id:
            return True
        error = InvalidResponseError(
            f"the server handed out a task without taskId or workflowInstanceId; not executed: "
            f"taskId={task.task_id!r} workflowInstanceId={task.workflow_instance_id!r}",
            status_code=200,
        )
        self._record_error(error)
        log.warning("%s: %s", self.task_type, error)
        return False

    def _executor_for(self, options: PollingOptions) -> ThreadPoolExecutor:
        """The pool, grown when concurrency rose (only the poll thread calls this)."""
        if self._executor is None or self._executor_size < options.concurrency:
            if self._executor is not None:
                self._executor.shutdown(wait=False)  # its threads finish their current tasks
            self._executor = ThreadPoolExecutor(options.concurrency, thread_name_prefix=f"cw-{self.task_type}")
            self._executor_size = options.concurrency
        return self._executor

    # -- pool threads ------------------------------------------------------------------------------

    def _work(self, task: Task, received: float, job: "_Job") -> None:
        """Execute ``task``, report it, and keep going with the next task update-v2 hands back."""
        with self._cond:
            if job.cancelled:  # the poll thread took it back (its submit failed)
                return
            job.started = True
            stopping = self._stopping
        next_task: Optional[Task] = task
        _current.runner = self
        try:
            if stopping:  # polled, but not started yet: someone else can run it now
                self._give_back(task, self._options)
                next_task = None
            while next_task is not None:
                current, next_task = next_task, None
                result = self._execute(current, received)
                next_task = self._report(current, result, received)
                received = time.monotonic()
        except Exception:  # noqa: BLE001 - a pool thread must never lose a slot
            log.exception("%s: unexpected error while handling a task", self.task_type)
        finally:
            _current.runner = None
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
        worker_id = options.worker_id or self._hostname
        try:
            if task.external_input_payload_storage_path and not task.input_data:
                task = attrs.evolve(
                    task, input_data=self._client.payloads.read(task.external_input_payload_storage_path, TASK_INPUT)
                )
                if events is not None:
                    call_hook(events.external_payload_used, self.task_type, "READ", TASK_INPUT)
            result, error = run_task(self.worker, task, worker_id=worker_id)
            result = self._fit_output(result)
        except ExternalPayloadError as exc:  # never run a worker on an input it does not have
            error = exc
            result = TaskResult.failed(
                f"not executed: {exc}",
                terminal=exc.permanent,
                task_id=task.task_id,
                workflow_instance_id=task.workflow_instance_id,
                worker_id=worker_id,
            )
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

    def _fit_output(self, result: TaskResult) -> TaskResult:
        """Fail an output over the server's maximum here; upload one over its threshold if asked to."""
        output = result.output_data
        if not output or result.external_output_payload_storage_path:
            return result
        try:
            size = payload_size(output)
        except (TypeError, ValueError, RecursionError):
            return result  # not JSON: the report fails the task with that reason
        config = self._client.config
        limit = config.max_payload_kb * 1024
        if size > limit:
            log.warning("%s: an output of %d bytes is over max_payload_kb=%d; the task fails",
                        self.task_type, size, config.max_payload_kb)
            return attrs.evolve(
                result,
                status=TaskResultStatus.FAILED_WITH_TERMINAL_ERROR,
                output_data={},
                reason_for_incompletion=(
                    f"the task's output is {size} bytes, more than the server's maximum of {limit} bytes "
                    f"(max_payload_kb={config.max_payload_kb}); it was not sent"
                ),
            )
        if config.upload_large_payloads and size > config.payload_threshold_kb * 1024:
            try:
                path = self._client.payloads.write(output, TASK_OUTPUT)
            except ConductorError as exc:
                log.warning("%s: could not upload a %d-byte output (%s); sending it inline", self.task_type, size, exc)
                return result
            if path is not None:
                if self._events is not None:
                    call_hook(self._events.external_payload_used, self.task_type, "WRITE", TASK_OUTPUT)
                return attrs.evolve(result, output_data={}, external_output_payload_storage_path=path)
        return result

    def _may_take_next(self) -> bool:
        """Whether a task handed back by update-v2 may run in the slot that is finishing."""
        with self._cond:
            options = self._options
            return not (self._stopping or options.paused) and self._in_flight <= options.concurrency

    def _report(self, task: Task, result: TaskResult, received: float) -> Optional[Task]:
        """Send ``result``; the next task to run in this slot, if update-v2 handed one back.

        Whatever goes wrong, the result ends up either accepted by the server or in
        :meth:`_update_failed` (ERROR log, ``on_update_failure``, ``update_failed`` event).
        """
        backoff: Optional[Backoff] = None  # only a failed report needs one
        sanitised = False
        while True:
            try:
                if backoff is None:
                    next_task = self._send(result)
                else:
                    # An earlier attempt may have been applied (its answer lost): the plain update
                    # is a no-op for a task the server already has, and hands out no task to lose.
                    self._client.tasks.update_task(result)
                    next_task = None
                self._last_contact = time.time()
                self._report_log.succeeded()
                return next_task
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
            except ConductorError as exc:
                # Transport errors, 5xx/429 and unreadable answers (InvalidResponseError) are retried.
                retryable = not isinstance(exc, APIError) or exc.retryable
                if backoff is None:
                    backoff = Backoff()
                deadline = received + max(task.response_timeout_seconds, 0)
                out_of_time = time.monotonic() >= deadline and backoff.attempts + 1 >= _MIN_UPDATE_ATTEMPTS
                if not retryable or out_of_time or self._abort.is_set():
                    self._update_failed(task, result, exc)
                    return None
                delay = _retry_delay(backoff, exc)
                self._record_error(exc)  # recovered from if a retry succeeds, but status() shows it
                self._report_log.failed(exc, delay)
                log.debug("%s: task %s: report retry %d in %.2fs", self.task_type, task.task_id, backoff.attempts, delay)
                self._abort.wait(delay)
            except Exception as exc:  # noqa: BLE001 - a bug must still not make a result vanish
                log.exception("%s: unexpected error while reporting task %s", self.task_type, task.task_id)
                self._update_failed(task, result, exc)
                return None

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
        if not self._usable(next_task):
            return None
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
        for attempt in range(1, _GIVE_BACK_ATTEMPTS + 1):
            try:
                self._client.tasks.update_task(result)
                log.debug("%s: gave task %s back to the server", self.task_type, task.task_id)
                return
            except ConductorError as exc:
                retryable = not isinstance(exc, APIError) or exc.retryable
                if attempt == _GIVE_BACK_ATTEMPTS or not retryable or self._abort.is_set():
                    log.warning(
                        "%s: could not give task %s back (%s); the server re-queues it after its response timeout",
                        self.task_type, task.task_id, exc,
                    )
                    return
                self._abort.wait(0.1 * attempt)

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
                thread = threading.Thread(target=self._run, name=f"cw-lease-{self._runner.task_type}", daemon=True)
                try:
                    thread.start()
                except RuntimeError as exc:  # e.g. at interpreter shutdown: run on without a lease
                    self._due.pop(task.task_id, None)
                    log.warning("%s: no lease extension for task %s: %s", task.task_type, task.task_id, exc)
                    return
                self._thread = thread
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
                except Exception:  # noqa: BLE001 - a bug must not end lease extension for every task
                    log.exception("%s: lease extension for task %s failed", task.task_type, task.task_id)


class _Job:
    """Who owns a submitted task's slot: the pool thread that starts it, or the poll thread taking it back."""

    __slots__ = ("started", "cancelled")

    def __init__(self) -> None:
        self.started = False
        self.cancelled = False


def _remaining(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _retry_delay(backoff: Backoff, error: BaseException) -> float:
    """The next backoff delay, or the server's ``Retry-After`` (already capped) when that is longer."""
    delay = backoff.next()
    retry_after = getattr(error, "retry_after", None)
    return max(delay, retry_after) if retry_after else delay


# -- the host's main thread ends -----------------------------------------------------------------

_exit_lock = threading.Lock()  # guards _started_runners and _exit_hook_installed
_started_runners: "weakref.WeakSet[TaskRunner]" = weakref.WeakSet()
_exit_hook_installed = False


def _stop_at_exit(runner: TaskRunner) -> None:
    """Have ``runner`` stopped when the main thread ends (installed once, at the first start)."""
    global _exit_hook_installed
    with _exit_lock:
        _started_runners.add(runner)
        if _exit_hook_installed:
            return
        _exit_hook_installed = True
    # CPython calls these hooks when the main thread has ended, before it joins the other threads,
    # newest first: registered after concurrent.futures' own (imported above), this one runs while
    # the pools still take work, so that in-flight tasks finish and are reported.
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
        runners = [runner for runner in _started_runners if runner._thread is not None]
    busy = [runner for runner in runners if runner.is_polling or runner.in_flight]
    if not busy:
        return
    log.warning(
        "the main thread ended while %d worker(s) were polling: stopping them (in-flight tasks get up to %.0fs)",
        len(busy), max(runner.shutdown_timeout for runner in busy),
    )
    started = time.monotonic()
    for runner in busy:
        runner._begin_stop()
    for runner in busy:
        # an abandoned runner (a second Ctrl-C during serve_forever's drain) is not waited for again
        budget = 0.0 if runner._abort.is_set() else runner.shutdown_timeout
        runner.stop(max(0.0, started + budget - time.monotonic()))


__all__ = ["PollGate", "TaskRunner"]
