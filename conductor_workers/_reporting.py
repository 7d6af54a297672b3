"""Reporting results: send (update-v2 or the plain update), retry with backoff, give back, and the
update-failure path; the early reports of tasks over their time limit, and lease extensions.

:class:`Reporter` owns what it learns of the server (whether it takes update-v2) and its failure
log; it reads the runner's options and slots, and counts its early reports, through the runner's
:class:`~conductor_workers._runner_state.RunnerState`, and counts in its
:class:`~conductor_workers._stats.RunnerStats`. It holds no lock of its own: ``update_v2`` is one
reference, written whole.

Whatever goes wrong while reporting, a result ends up either accepted by the server or in
``_update_failed`` (ERROR log, ``on_update_failure``, the ``update_failed`` hook): never dropped.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Optional

import attrs

from ._backoff import Backoff, retry_delay
from ._failure_log import FailureLog
from ._runner_state import RunnerParts
from .errors import APIError, ConductorError, EndpointNotSupportedError, InvalidRequestError, InvalidResponseError
from .events import UpdateFailureHook, call_hook
from .models import Task, TaskResult, TaskResultStatus
from .options import PollingOptions
from .payloads import TASK_OUTPUT, payload_size

if TYPE_CHECKING:  # pragma: no cover
    from .admission import AdmissionGate

log = logging.getLogger("conductor_workers.runner")

_MIN_UPDATE_ATTEMPTS = 3
_GIVE_BACK_ATTEMPTS = 3


class Reporter:
    """Sends one runner's results, hand-backs and lease extensions to the server.

    Retries end when the runner gives up on its tasks (its state's ``abort``).
    """

    def __init__(
        self,
        parts: RunnerParts,
        *,
        on_update_failure: Optional[UpdateFailureHook] = None,
        admission: Optional["AdmissionGate"] = None,
    ) -> None:
        self.task_type = parts.task_type
        self._client, self._state, self._stats = parts.client, parts.state, parts.stats
        self._events = parts.events
        self._abort = parts.state.abort
        self._on_update_failure = on_update_failure
        self._admission = admission
        self._use_v2: Optional[bool] = None  # None: not known yet; False after the server refused it
        self._log = FailureLog(log, f"worker {self.task_type!r}: reporting results")

    @property
    def update_v2(self) -> Optional[bool]:
        """Whether the server takes update-v2; None until the first report."""
        return self._use_v2

    def usable(self, task: Task) -> bool:
        """A task can be run and reported only with both ids; the server never sends one without."""
        if task.task_id and task.workflow_instance_id:
            return True
        error = InvalidResponseError(
            f"the server handed out a task without taskId or workflowInstanceId; not executed: "
            f"taskId={task.task_id!r} workflowInstanceId={task.workflow_instance_id!r}",
            status_code=200,
        )
        self._stats.record_error(error)
        log.warning("%s: %s", self.task_type, error)
        return False

    def report_early(self, task: Task, result: TaskResult, received: float) -> None:
        """Report a result settled while the task's thread still runs (over its time limit), at once.

        The report runs on a thread of its own: the caller is the time-limit watchdog (or the task's
        thread at a safe point), which must not wait for HTTP. The task's slot stays taken until its
        own thread returns; the report counts in the runner's early reports until it is accepted or
        handed to ``on_update_failure``, so that a drain waits for it.
        """
        self._state.early_report_started()
        thread = threading.Thread(
            target=self._report_early_now, args=(task, result, received),
            name=f"cw-report-{self.task_type}", daemon=False,
        )
        try:
            thread.start()
        except RuntimeError:  # interpreter shutdown: report from here rather than not at all
            self._report_early_now(task, result, received)

    def _report_early_now(self, task: Task, result: TaskResult, received: float) -> None:
        try:
            self.report(task, result, received, take_next=False)
        finally:
            self._state.early_report_ended()

    def fit_output(self, result: TaskResult) -> TaskResult:
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
        taking = self._state.taking_tasks()
        if taking is None:
            return False
        options, in_flight = taking
        gate = self._admission  # asked outside the lock: it may read its resource files
        if gate is None:
            return True
        # the finishing task still counts in in_flight: running the next one keeps the count
        return gate.may_poll(self.task_type) and in_flight <= gate.limit(self.task_type, options.concurrency, in_flight - 1)

    def report(self, task: Task, result: TaskResult, received: float, *, take_next: bool = True) -> Optional[Task]:
        """Send ``result``; the next task to run in this slot, if update-v2 handed one back.

        Whatever goes wrong, the result ends up either accepted by the server or in
        :meth:`_update_failed` (ERROR log, ``on_update_failure``, ``update_failed`` event).
        """
        backoff: Optional[Backoff] = None  # only a failed report needs one
        sanitised = False
        started = time.monotonic()
        while True:
            try:
                if backoff is None:
                    next_task = self._send(result, take_next)
                else:
                    # An earlier attempt may have been applied (its answer lost): the plain update
                    # is a no-op for a task the server already has, and hands out no task to lose.
                    self._client.tasks.update_task(result)
                    next_task = None
                self._stats.contact()
                self._log.succeeded()
                self._stats.count("reports_accepted")
                if self._events is not None:
                    call_hook(self._events.task_updated, task, result, time.monotonic() - started)
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
                delay = retry_delay(backoff, exc)
                self._stats.record_error(exc)  # recovered from if a retry succeeds, but status() shows it
                self._log.failed(exc, delay)
                log.debug("%s: task %s: report retry %d in %.2fs", self.task_type, task.task_id, backoff.attempts, delay)
                self._abort.wait(delay)
            except Exception as exc:  # noqa: BLE001 - a bug must still not make a result vanish
                log.exception("%s: unexpected error while reporting task %s", self.task_type, task.task_id)
                self._update_failed(task, result, exc)
                return None

    def _send(self, result: TaskResult, take_next: bool = True) -> Optional[Task]:
        if self._use_v2 is False or not take_next or not self._may_take_next():
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
        self._stats.count("tasks_received")
        if not self.usable(next_task):
            return None
        if self._may_take_next():
            return next_task
        self.give_back(next_task, self._state.options)
        return None

    def give_back(self, task: Task, options: PollingOptions) -> None:
        """Return a task this runner will not run, so that another poll gets it at once."""
        result = TaskResult.in_progress(
            0,
            output=task.output_data,
            task_id=task.task_id,
            workflow_instance_id=task.workflow_instance_id,
            worker_id=self._state.worker_id(options),
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
        self._stats.count("reports_failed")
        self._stats.record_error(error)
        log.error(
            "%s: could not report task %s of workflow %s (status %s): %s; result: %r",
            self.task_type, task.task_id, task.workflow_instance_id, result.status.value, error, result.output_data,
        )
        if self._events is not None:
            call_hook(self._events.update_failed, task, result, error)
        call_hook(self._on_update_failure, task, result, error)

    def send_lease_extension(self, task: Task) -> None:
        """Tell the server ``task`` is still being worked on (restarts its response-timeout clock)."""
        result = TaskResult(
            task_id=task.task_id,
            workflow_instance_id=task.workflow_instance_id,
            status=TaskResultStatus.IN_PROGRESS,
            extend_lease=True,
            worker_id=self._state.worker_id(self._state.options),
        )
        self._client.tasks.update_task(result)


__all__ = ["Reporter"]
