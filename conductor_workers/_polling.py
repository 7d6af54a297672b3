"""The poll thread of a runner: wait for free slots, poll, dispatch to the pool.

:class:`Poller` runs on the runner's poll thread and owns what only that thread touches: the thread
pool (created, grown, submitted to and shut down by it alone), the poll backoff and failure log, and
what the admission gate said last. Slots and the lifecycle are the runner's
:class:`~conductor_workers._runner_state.RunnerState`: the poller waits there for free slots, takes
them for the tasks a poll brought, and learns there that the runner is stopping. An idle long poll
is marked there too, so that ``stop()`` does not wait it out; its answer is handed back.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable, List, Optional, Tuple

from ._backoff import Backoff, retry_delay
from ._executing import Execution
from ._failure_log import FailureLog
from ._reporting import Reporter
from ._runner_state import Job, RunnerParts
from .errors import ConductorError
from .events import TaskEvents, call_hook
from .models import Task
from .options import PollingOptions

if TYPE_CHECKING:  # pragma: no cover
    from .admission import AdmissionGate

log = logging.getLogger("conductor_workers.runner")

PollGate = Callable[[str], bool]


class _AdmittedSlots:
    """The admission gate's limit for one runner (a :class:`~._runner_state.SlotLimit`); tells the
    ``admission_changed`` hook when the limit or its reason changes."""

    def __init__(self, gate: "AdmissionGate", task_type: str, events: Optional[TaskEvents]) -> None:
        self._gate = gate
        self._task_type = task_type
        self._events = events
        self._seen: Tuple[int, str] = (-1, "")  # the gate's (limit, reason) the hook last saw

    def limit(self, options: PollingOptions, in_flight: int) -> int:
        gate, task_type = self._gate, self._task_type
        # The gate may read its resource files (its first reading, or one its thread missed).
        limit = gate.limit(task_type, options.concurrency, in_flight) if gate.may_poll(task_type) else 0
        seen = (limit, gate.state(task_type).get("reason", ""))
        if seen != self._seen:
            self._seen = seen
            if self._events is not None:
                call_hook(self._events.admission_changed, task_type, seen[0], seen[1])
        return limit

    def wake_interval(self) -> float:
        return self._gate.wake_interval()


class Poller:
    """The poll loop of one runner; :meth:`run` is its poll thread's target."""

    def __init__(
        self,
        parts: RunnerParts,
        execution: Execution,
        reporter: Reporter,
        *,
        poll_gate: Optional[PollGate] = None,
        admission: Optional["AdmissionGate"] = None,
    ) -> None:
        self.task_type = task_type = parts.task_type
        self._client, self._state, self._stats = parts.client, parts.state, parts.stats
        self._events = parts.events
        self._execution = execution
        self._reporter = reporter
        self._poll_gate = poll_gate
        self._admission = admission
        self._slot_limit = None if admission is None else _AdmittedSlots(admission, task_type, parts.events)
        self._log = FailureLog(log, f"worker {task_type!r}: polling {parts.client.config.server_url}")
        # The pool belongs to the poll thread: only it creates, grows, submits to and shuts it down.
        self._executor: Optional[ThreadPoolExecutor] = None
        self._executor_size = 0

    def run(self) -> None:
        """Poll until the runner stops; the poll thread's target."""
        try:
            self._poll_until_stopped()
        except BaseException:  # noqa: BLE001 - logged once here; is_polling now says False
            log.exception("%s: the poll thread died; polling has stopped", self.task_type)
        finally:
            # Tasks already submitted still run: shutdown(wait=False) only refuses new ones.
            if self._executor is not None:
                self._executor.shutdown(wait=False)
            self._executor, self._executor_size = None, 0
            self._state.poll_thread_ended()

    def _poll_until_stopped(self) -> None:
        backoff = Backoff()
        had_tasks = False
        state = self._state
        while True:
            work = state.wait_for_work(self._slot_limit)
            if work is None:
                return
            options, free = work
            long_poll = not had_tasks
            try:
                if self._poll_gate is not None and not self._poll_gate(self.task_type):
                    state.sleep(max(options.poll_interval, 100) / 1000.0)
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
                self._log.succeeded()
                had_tasks = self._dispatch(tasks) > 0 if tasks else False
            except Exception as exc:  # noqa: BLE001 - the loop must survive anything; logged below
                if state.stopping:  # the last long poll of a stop() that did not wait for it
                    log.debug("%s: the last poll after stopping failed: %s", self.task_type, exc)
                    return
                delay = retry_delay(backoff, exc)
                self._stats.record_error(exc)
                if isinstance(exc, ConductorError):
                    self._log.failed(exc, delay)
                else:
                    log.exception("%s: unexpected error in the poll loop; retrying in %.2fs", self.task_type, delay)
                call_hook(self._events.poll_failed if self._events else None, self.task_type, exc)
                had_tasks = False
                state.sleep(delay, until_stopped_only=True)
                continue
            if long_poll and not had_tasks and options.poll_interval:
                state.sleep(options.poll_interval / 1000.0)

    def _long_poll(self, options: PollingOptions) -> Optional[List[Task]]:
        """Wait for one task; None when stopping. A stop() meanwhile does not wait for the answer."""
        if not self._state.long_poll_started():
            return None
        try:
            return self._poll(options, 1, options.batch_poll_timeout)
        finally:
            self._state.long_poll_ended()

    def _poll(self, options: PollingOptions, count: int, timeout_ms: int) -> List[Task]:
        started = time.monotonic()
        tasks = self._client.tasks.batch_poll(
            self.task_type,
            count=count,
            timeout_ms=timeout_ms,
            worker_id=self._state.worker_id(options),
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
        usable = [task for task in tasks if self._reporter.usable(task)]
        options, taken = self._state.take(len(usable))
        accepted, rejected = usable[:taken], usable[taken:]
        if accepted:
            # Submit first: the accepted tasks' response-timeout clocks are already running.
            executor = self._executor_for(options)
            for index, task in enumerate(accepted):
                job = Job()
                try:
                    executor.submit(self._execution.work, task, received, job)
                except RuntimeError as exc:  # interpreter shutdown, or no thread could be started
                    # submit() may have queued the job before it failed (3.12 does): whoever takes
                    # it first, the pool thread or this one, owns the slot.
                    unsent = accepted[index + 1:]
                    if self._state.take_back(job, len(unsent)):
                        unsent.insert(0, task)
                    log.warning("%s: %s; handing %d task(s) back and stopping", self.task_type, exc, len(unsent))
                    rejected = unsent + rejected
                    break
        for task in rejected:
            self._reporter.give_back(task, options)
        return len(usable)

    def _executor_for(self, options: PollingOptions) -> ThreadPoolExecutor:
        """The pool, grown when concurrency rose (only the poll thread calls this)."""
        if self._executor is None or self._executor_size < options.concurrency:
            if self._executor is not None:
                self._executor.shutdown(wait=False)  # its threads finish their current tasks
            self._executor = ThreadPoolExecutor(options.concurrency, thread_name_prefix=f"cw-{self.task_type}")
            self._executor_size = options.concurrency
        return self._executor


__all__ = ["PollGate", "Poller"]
