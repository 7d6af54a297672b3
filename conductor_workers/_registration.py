"""Registering the task definitions that workers ask for (``register_task_def=True``) when polling starts.

* Each such worker wants its ``task_def``, or a default ``TaskDef(name=<its task type>)``.
* A definition the server does not have is registered. One it has is replaced only when the worker
  says so: ``overwrite_task_def=True``, or a ``task_def`` given in code while ``overwrite_task_def``
  is left unset (the code is then the definition's source). Otherwise the server's definition is
  kept: a bare ``register_task_def=True`` never resets what someone tuned there. Each outcome
  (registered, overwrote, kept) is logged at INFO.
* The first attempt runs inside ``TaskManager.start_polling``. A server that refuses (credentials, a
  definition it rejects) makes ``start_polling`` raise as before.
* A server that cannot be reached, or answers 5xx/429, does not keep polling from starting: a
  background thread tries again with capped backoff (1 s doubling up to 60 s), waiting on an Event,
  until every definition is done or polling stops. The first failure and the success are logged.
"""
from __future__ import annotations

import logging
import threading
from typing import Dict, Iterable, Optional, Tuple

from ._backoff import Backoff
from ._metadata_client import MetadataClient
from .errors import APIError, ConductorError, InvalidResponseError, NotFoundError, TransportError
from .models import TaskDef
from .worker import Worker

log = logging.getLogger(__name__)

RETRY_FIRST = 1.0  # seconds before the first retry after the server could not be reached
RETRY_CAP = 60.0  # longest wait between retries


def _transient(error: ConductorError) -> bool:
    """True for a server that is not there yet (or not well yet); False for one that said no."""
    if isinstance(error, (TransportError, InvalidResponseError)):
        return True
    return isinstance(error, APIError) and error.retryable


class TaskDefRegistrar:
    """The task definitions some workers want on the server; :meth:`start` registers them."""

    def __init__(self, metadata: MetadataClient, wanted: Iterable[Tuple[TaskDef, bool]]) -> None:
        self._metadata = metadata
        self._lock = threading.Lock()  # guards _pending and _thread
        #: task type -> (definition, replace an existing one); entries leave once done
        self._pending: Dict[str, Tuple[TaskDef, bool]] = {
            task_def.name: (task_def, overwrite) for task_def, overwrite in wanted
        }
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()  # set by stop(): the retrying thread ends

    @classmethod
    def for_workers(cls, metadata: MetadataClient, workers: Iterable[Worker]) -> "TaskDefRegistrar":
        wanted = []
        for worker in workers:
            if not worker.register_task_def:
                continue
            task_def = worker.task_def if worker.task_def is not None else TaskDef(name=worker.task_def_name)
            overwrite = worker.overwrite_task_def
            wanted.append((task_def, worker.task_def is not None if overwrite is None else overwrite))
        return cls(metadata, wanted)

    @property
    def pending(self) -> Tuple[str, ...]:
        """The task types whose definitions are not done yet."""
        with self._lock:
            return tuple(sorted(self._pending))

    def start(self) -> None:
        """Register what is pending now; if the server cannot be reached, go on trying in the background.

        Raises what the server answered when it refused (e.g. :class:`AuthenticationError`).
        """
        with self._lock:
            if not self._pending or (self._thread is not None and self._thread.is_alive()):
                return
            self._stop.clear()
        try:
            self._register_pending()
        except ConductorError as exc:
            if not _transient(exc):
                raise
            log.warning(
                "could not register task definitions %s now (%s); polling starts anyway, and they are "
                "registered as soon as the server is reached",
                ", ".join(self.pending),
                exc,
            )
            thread = threading.Thread(target=self._retry, name="cw-register-task-defs", daemon=True)
            with self._lock:
                self._thread = thread
            thread.start()

    def stop(self, timeout: Optional[float] = None) -> None:
        """End the retries (the thread ends after the attempt under way, if any, within ``timeout``)."""
        self._stop.set()
        with self._lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _retry(self) -> None:
        backoff = Backoff(base=RETRY_FIRST, cap=RETRY_CAP)
        while not self._stop.wait(backoff.next()):
            try:
                self._register_pending()
            except ConductorError as exc:
                if not _transient(exc):
                    log.error("task definitions %s were not registered: %s", ", ".join(self.pending), exc)
                    return
                log.debug("task definitions %s: attempt %d failed (%s)", ", ".join(self.pending), backoff.attempts, exc)
                continue
            log.info("the server is reached: task definitions done after %d attempt(s)", backoff.attempts + 1)
            return

    def _register_pending(self) -> None:
        with self._lock:
            pending = sorted(self._pending.items())
        for name, (task_def, overwrite) in pending:
            self._register(task_def, overwrite)
            with self._lock:
                self._pending.pop(name, None)

    def _register(self, task_def: TaskDef, overwrite: bool) -> None:
        try:
            self._metadata.get_task_def(task_def.name)
        except NotFoundError:
            # Two processes may both find it missing and both register it: the same definition twice.
            self._metadata.register_task_defs([task_def])
            log.info("registered task definition %r", task_def.name)
            return
        if overwrite:
            self._metadata.update_task_def(task_def)
            log.info("overwrote the existing task definition %r with the worker's", task_def.name)
        else:
            log.info(
                "kept the existing task definition %r as the server has it (overwrite_task_def=True replaces it)",
                task_def.name,
            )


__all__ = ["TaskDefRegistrar"]
