"""``TaskManager``: runs one :class:`TaskRunner` per worker, with options changed at runtime.

The Python counterpart of the JavaScript SDK's ``TaskManager`` (``startPolling``, ``stopPolling``,
``isPolling``, ``updatePollingOptions``, ``updatePollingOptionForWorker``). It never forks and
installs signal handlers only inside :meth:`TaskManager.serve_forever`, so it embeds in any service.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from typing import TYPE_CHECKING, Any, Dict, Iterable, Mapping, Optional, Sequence, Union

from . import _validate
from ._registration import TaskDefRegistrar
from .client import ConductorClient
from .errors import InvalidOptionError
from .events import TaskEvents, UpdateFailureHook
from .health import HealthServer, start_health_server
from .middleware import Middleware
from .options import PollingOptions, check_option_names, options_from_env, resolve_options
from .runner import DEFAULT_SHUTDOWN_TIMEOUT, PollGate, TaskRunner
from .status import RunnerStatus
from .worker import Worker

if TYPE_CHECKING:  # pragma: no cover
    from .admission import AdmissionGate

log = logging.getLogger(__name__)

OptionsLike = Union[PollingOptions, Mapping[str, Any], None]


def _explicit(options: OptionsLike) -> Dict[str, Any]:
    if options is None:
        return {}
    if isinstance(options, PollingOptions):
        return options.explicit()
    check_option_names(options)
    return dict(options)


def _updated(current: PollingOptions, options: OptionsLike, changes: Mapping[str, Any]) -> PollingOptions:
    """A PollingOptions object replaces ``current`` in full; a dict and keywords change just their fields."""
    if isinstance(options, PollingOptions):
        base, fields = options, dict(changes)
    else:
        base, fields = current, {**_explicit(options), **changes}
    return base.evolve(**fields) if fields else base


class TaskManager:
    """Runs workers: ``start_polling()``, change options while they run, ``stop_polling()``.

    :param client: the :class:`ConductorClient` every runner shares (it is thread-safe).
    :param workers: :class:`Worker` instances (``@worker_task`` functions are Workers), one per task type.
    :param options: defaults for every worker (a :class:`PollingOptions` or a dict); a worker's own
        options beat them, environment variables beat both (see the README), runtime updates beat all.
    :param events: a :class:`TaskEvents` whose hooks every runner calls (a Middleware there is the outermost).
    :param middleware: :class:`~conductor_workers.middleware.Middleware` wrapping every execution of
        every worker, the first one outermost; their hooks are called too.
    :param on_update_failure: called with ``(task, result, error)`` when a result could not be reported.
    :param poll_gate: called with the task type before each poll; returning False skips that poll.
    :param environ: where to read environment options from (default ``os.environ``).
    :param admission: an :class:`~conductor_workers.admission.AdmissionGate` shared by every runner:
        ``concurrency`` becomes each worker's maximum, and the gate admits more tasks only while
        memory allows (opt-in; see the README).
    :param shutdown_timeout: seconds in-flight tasks get to finish and be reported when the host's
        main thread ends while polling, and the default drain time of :meth:`serve_forever`.
    """

    def __init__(
        self,
        client: ConductorClient,
        workers: Iterable[Worker],
        options: OptionsLike = None,
        *,
        events: Optional[TaskEvents] = None,
        middleware: Sequence[Middleware] = (),
        on_update_failure: Optional[UpdateFailureHook] = None,
        poll_gate: Optional[PollGate] = None,
        environ: Optional[Mapping[str, str]] = None,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        admission: Optional["AdmissionGate"] = None,
    ) -> None:
        self._client = client
        self.shutdown_timeout = _validate.seconds("shutdown_timeout", shutdown_timeout)
        self._stop_requested = threading.Event()  # set by stop_polling: ends serve_forever
        self._workers: Dict[str, Worker] = {}
        for worker in workers:
            if not isinstance(worker, Worker):
                raise InvalidOptionError(f"{worker!r} is not a Worker (subclass Worker or use @worker_task)")
            if worker.task_def_name in self._workers:
                raise InvalidOptionError(f"two workers for task type {worker.task_def_name!r}")
            self._workers[worker.task_def_name] = worker
        if not self._workers:
            raise InvalidOptionError("TaskManager needs at least one worker")
        manager_options = _explicit(options)
        middleware = list(middleware)
        for layer in middleware:
            if not isinstance(layer, Middleware):
                raise InvalidOptionError(f"{layer!r} is not a Middleware (subclass conductor_workers.Middleware)")
        self._lock = threading.Lock()  # serialises option updates and starts
        self._runners: Dict[str, TaskRunner] = {}
        for name, worker in self._workers.items():
            resolved = resolve_options(manager_options, worker.own_options(), options_from_env(name, environ))
            self._runners[name] = TaskRunner(
                worker,
                client,
                resolved,
                events=events,
                middleware=middleware,
                on_update_failure=on_update_failure,
                poll_gate=poll_gate,
                shutdown_timeout=self.shutdown_timeout,
                admission=admission,
            )
        self._registrar = TaskDefRegistrar.for_workers(client.metadata, self._workers.values())

    # -- lifecycle ---------------------------------------------------------------------------------

    def start_polling(self) -> None:
        """Start every runner (registering task definitions first where workers ask for it).

        A server that cannot be reached does not stop polling from starting: the definitions are
        registered once it is (see ``register_task_def``); one that refuses them (e.g. the
        credentials) raises here, before any runner starts.
        """
        self._registrar.start()  # HTTP: outside the lock
        with self._lock:
            self._stop_requested.clear()
            for runner in self._runners.values():
                runner.start()

    def stop_polling(self, timeout: Optional[float] = 30.0) -> bool:
        """Stop polling and wait until in-flight tasks have finished and been reported.

        Returns within ``timeout`` seconds, True when every poll thread ended and every in-flight
        task was reported by then. Idempotent; callable from any thread, also from a worker (which
        then does not wait for its own task). ``timeout`` None waits without a limit; a number must
        be finite and at most 30 days (InvalidOptionError otherwise).
        """
        timeout = _validate.optional_seconds("timeout", timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        self._stop_requested.set()
        self._registrar.stop(0)  # its retries end; it is waited for below, with the runners
        runners = list(self._runners.values())
        # Every runner stops taking tasks first; then they drain side by side under one deadline.
        for runner in runners:
            runner.begin_stop()
        results = [
            runner.stop(None if deadline is None else max(0.0, deadline - time.monotonic())) for runner in runners
        ]
        self._registrar.stop(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return all(results)

    def serve_forever(self, shutdown_timeout: Optional[float] = None) -> bool:
        """Poll until SIGINT or SIGTERM (or :meth:`stop_polling` from another thread), then drain.

        For scripts and services whose main job is running workers. Called from the main thread, it
        installs SIGINT and SIGTERM handlers for its own duration and restores the previous ones
        before draining, so that a second Ctrl-C interrupts the drain. Returns what
        :meth:`stop_polling` returns, with ``shutdown_timeout`` (default: the manager's).
        """
        timeout = self.shutdown_timeout if shutdown_timeout is None else _validate.seconds(
            "shutdown_timeout", shutdown_timeout)
        received = []

        def on_signal(signum: int, frame: Any) -> None:
            received.append(signum)
            self._stop_requested.set()

        previous: Dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):  # before polling starts: no window without them
                previous[sig] = signal.signal(sig, on_signal)
        try:
            self.start_polling()
            self._stop_requested.clear()
            if received:
                self._stop_requested.set()
            # A bounded wait keeps the main thread responsive to signals on every platform.
            while not self._stop_requested.wait(1.0):
                if not self.is_polling:
                    log.error("every poll thread has ended; serve_forever returns")
                    break
        finally:
            for signum, handler in previous.items():
                # None: the handler was not installed from Python; the default is the closest
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        if received:
            log.warning("%s received: draining in-flight tasks (up to %.0fs)", signal.Signals(received[0]).name, timeout)
        try:
            return self.stop_polling(timeout)
        except KeyboardInterrupt:  # a second Ctrl-C: stop waiting, and do not wait again at exit
            for runner in self._runners.values():
                runner.abandon()
            raise

    @property
    def is_polling(self) -> bool:
        """True while any runner is polling."""
        return any(runner.is_polling for runner in self._runners.values())

    def __enter__(self) -> "TaskManager":
        self.start_polling()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_polling()

    # -- runtime options ---------------------------------------------------------------------------

    def update_polling_options(self, options: OptionsLike = None, **changes: Any) -> None:
        """Change options of every worker (validated for all first: a bad value changes nothing).

        A :class:`PollingOptions` object replaces every worker's options in full; a dict or
        keywords change just the fields they name.
        """
        with self._lock:
            updated = {name: _updated(runner.options, options, changes) for name, runner in self._runners.items()}
            for name, new_options in updated.items():
                self._runners[name].update_options(new_options)

    def update_polling_option_for_worker(self, task_def_name: str, options: OptionsLike = None, **changes: Any) -> None:
        """Change options of one worker; beats the manager's and the worker's own settings.

        A :class:`PollingOptions` object replaces its options in full; a dict or keywords change
        just the fields they name.
        """
        with self._lock:
            runner = self._runner(task_def_name)
            runner.update_options(_updated(runner.options, options, changes))

    def options_for(self, task_def_name: str) -> PollingOptions:
        """The options in force for one worker."""
        return self._runner(task_def_name).options

    # -- inspection --------------------------------------------------------------------------------

    @property
    def runners(self) -> Dict[str, TaskRunner]:
        return dict(self._runners)

    def status(self) -> Dict[str, RunnerStatus]:
        """Per task type, a :class:`~conductor_workers.status.RunnerStatus`: options in force,
        polling/paused, in-flight and overrunning tasks, counters, last error and contact
        (``.to_dict()`` for JSON)."""
        return {name: runner.status() for name, runner in self._runners.items()}

    def serve_health(self, port: int = 0, host: str = "127.0.0.1", **kwargs: Any) -> HealthServer:
        """Serve ``/health`` for this manager on a daemon thread; see :mod:`conductor_workers.health`.

        Returns the :class:`~conductor_workers.health.HealthServer` (``.port``, ``.url``, ``.close()``).
        """
        return start_health_server(self, port, host, **kwargs)

    def _runner(self, task_def_name: str) -> TaskRunner:
        try:
            return self._runners[task_def_name]
        except KeyError:
            known = ", ".join(sorted(self._runners))
            raise InvalidOptionError(f"no worker for task type {task_def_name!r}; known: {known}") from None


__all__ = ["TaskManager"]
