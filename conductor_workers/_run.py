"""``conductor-workers run MODULE[:ATTR] ...``: run the workers that modules define, as a service.

* **Discovery.** ``MODULE`` alone: every :class:`Worker` instance in the module's namespace
  (``@worker_task`` functions are Workers) and every Worker subclass the module defines with a
  class-level ``task_def_name`` (instantiated with no arguments). ``MODULE:ATTR`` (``ATTR`` may be
  dotted): that Worker, Worker subclass, list/tuple of them, or a function returning one of those.
  The current directory is put first on ``sys.path``, as ``python -m`` does.
* **Configuration.** ``CONDUCTOR_SERVER_URL``, ``CONDUCTOR_AUTH_KEY``/``CONDUCTOR_AUTH_SECRET`` and the
  ``CONDUCTOR_WORKER_*`` polling variables, as the library reads them; flags beat the environment,
  which beats what the workers' code sets.
* **Exit codes.** 0 after a clean drain; 1 when the drain timed out or every poll thread died;
  2 for a bad option; 3 for a module that cannot be imported or no workers; 4 when the server
  rejects the credentials (or the task definitions) at start. An error is one line on stderr. A
  server that cannot be reached at start is waited for (:meth:`WorkerService.start`), never an exit.
* ``--processes N`` runs N spawned worker processes under a supervisor (:mod:`._supervisor`), and so
  does ``--max-tasks-per-child``/``--max-memory-per-child`` without it (one recycled process).

This module holds the service of one process (:class:`WorkerService`), the signal handling, the
/health and /metrics endpoints, logging setup and the command's entry (:func:`run_command`); the
command line and :class:`RunSettings` are in :mod:`._run_args`, worker discovery in :mod:`._loading`
(both re-exported here).
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from ._loading import load_workers
from ._run_args import (
    EXIT_BAD_OPTION,
    EXIT_NOT_DRAINED,
    EXIT_OK,
    EXIT_SERVER_REJECTED,
    PROG,
    CommandError,
    RunSettings,
    _describe,
    _one_line,
    register,
    settings_from_args,
)
from ._backoff import Backoff
from .errors import APIError, AuthenticationError, ConductorError, InvalidOptionError
from .health import HealthReport, HealthServer, health_report
from .worker import Worker

if TYPE_CHECKING:  # pragma: no cover
    from .client import ConductorClient
    from .manager import TaskManager
    from .metrics import MetricsMiddleware, Snapshot

log = logging.getLogger(__name__)

START_RETRY_MIN = 1.0  # seconds before the first retry of a start the server could not take
START_RETRY_MAX = 30.0


# -- logging -------------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, process, thread (+ exception)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: Dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "thread": record.threadName,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, log_format: str) -> None:
    """Replace the root logger's handlers with one stderr handler in ``log_format``."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # urllib3 logs every connection retry at WARNING; the runners already log failures by state change
    logging.getLogger("urllib3").setLevel(logging.DEBUG if level == "debug" else logging.ERROR)


# -- one process's service -----------------------------------------------------------------------


class WorkerService:
    """The client, manager (and metrics events) of one process, built from :class:`RunSettings`."""

    def __init__(self, settings: RunSettings, workers: Optional[List[Worker]] = None) -> None:
        from .client import ConductorClient
        from .config import Configuration
        from .manager import TaskManager

        self.settings = settings
        self.started = threading.Event()  # set once polling has started
        self.workers = load_workers(settings) if workers is None else workers
        self.events: Optional["MetricsMiddleware"] = None
        if settings.metrics_port is not None:
            from .metrics import MetricsMiddleware

            self.events = MetricsMiddleware()
        middleware: List[Any] = []
        if settings.tracing:
            try:
                from .tracing import TracingMiddleware

                middleware.append(TracingMiddleware())
            except InvalidOptionError as exc:
                raise CommandError(EXIT_BAD_OPTION, f"--tracing: {_one_line(exc)}") from None
        overrides: Dict[str, Any] = {}
        if settings.server_url:
            overrides["server_url"] = settings.server_url
        try:
            config = Configuration.from_env(**overrides)
        except InvalidOptionError as exc:
            raise CommandError(EXIT_BAD_OPTION, _one_line(exc)) from None
        self.client: "ConductorClient" = ConductorClient(config)
        try:
            self.manager: "TaskManager" = TaskManager(
                self.client, self.workers, events=self.events, middleware=middleware,
                shutdown_timeout=settings.shutdown_timeout,
            )
            if settings.options:
                self.manager.update_polling_options(**dict(settings.options))
        except InvalidOptionError as exc:
            self.client.close()
            raise CommandError(EXIT_BAD_OPTION, _one_line(exc)) from None

    @property
    def task_types(self) -> List[str]:
        return [worker.task_def_name for worker in self.workers]

    def check_server(self) -> None:
        """Fail fast on refused credentials; an unreachable server is only a warning (workers retry)."""
        url = self.client.config.server_url
        try:
            self.client.tasks.queue_sizes(self.task_types)
        except AuthenticationError as exc:
            raise CommandError(EXIT_SERVER_REJECTED, f"{url} rejected the credentials: {_one_line(exc)}") from None
        except ConductorError as exc:
            log.warning("could not check %s at start (%s); the workers keep trying", url, _describe(exc))

    def start(self, stop: threading.Event) -> bool:
        """Start polling; True once polling, False when ``stop`` was set first.

        A server that cannot be reached (no connection, 5xx, 429, a garbled answer) is waited for:
        the start is retried with a capped backoff, one warning per attempt, for as long as it takes.
        A server that refuses (credentials, or a task definition it will not take) ends the command.
        """
        backoff = Backoff(base=START_RETRY_MIN, cap=START_RETRY_MAX)
        while not stop.is_set():
            try:
                self.manager.start_polling()
            except AuthenticationError as exc:
                raise CommandError(EXIT_SERVER_REJECTED,
                                   f"the server rejected the credentials: {_one_line(exc)}") from None
            except ConductorError as exc:
                if isinstance(exc, APIError) and not exc.retryable:  # the server answered, and refuses
                    self.manager.stop_polling(0)
                    message = f"could not start polling: {_describe(exc)}"
                    raise CommandError(EXIT_SERVER_REJECTED, message) from None
                delay = backoff.next()  # unreachable, 5xx/429, or an answer that is not the server's
                log.warning("could not start polling (%s); will retry in %.1fs", _describe(exc), delay)
                stop.wait(delay)
            else:
                log.info("polling %s on %s", ", ".join(self.task_types), self.client.config.server_url)
                self.started.set()
                return True
        return False

    def serve(self, stop: threading.Event) -> int:
        """Poll until ``stop`` is set (or every poll thread ended), then drain; the exit code."""
        options_file = None
        if self.settings.options_file:
            from ._options_file import OptionsFile

            options_file = OptionsFile(self.settings.options_file, self.manager)
            options_file.check()  # before the first poll
        died = False
        polling = self.start(stop)  # waits for the server
        while polling and not stop.wait(0.5):
            if options_file is not None:
                options_file.check()
            if not self.manager.is_polling:
                log.error("every poll thread has ended; stopping")
                died = True
                break
        timeout = self.settings.shutdown_timeout
        log.info("draining in-flight tasks (up to %.0fs)", timeout)
        drained = self.manager.stop_polling(timeout)
        if drained:
            log.info("drained; exiting")
        else:
            log.error("not drained within %.0fs", timeout)
        return EXIT_OK if drained and not died else EXIT_NOT_DRAINED

    def health(self) -> HealthReport:
        return health_report(self.manager, max_silence=self.settings.health_max_silence,
                             max_stuck=self.settings.health_max_stuck)

    def metrics_snapshot(self) -> Optional["Snapshot"]:
        return None if self.events is None else self.events.snapshot()

    def close(self) -> None:
        self.client.close()


class StopOnSignals:
    """SIGTERM/SIGINT set ``stop``; with ``force_on_second`` a second one exits at once (status 1).

    Restores the previous handlers on exit. Supervised children pass ``force_on_second=False``: a
    terminal's Ctrl-C reaches them and then the supervisor's SIGTERM, and they must still drain.
    """

    def __init__(self, stop: threading.Event, on_first: Optional[Callable[[int], None]] = None,
                 *, force_on_second: bool = True) -> None:
        self.stop = stop
        self._on_first = on_first
        self._force_on_second = force_on_second
        self._previous: Dict[int, Any] = {}
        self.received: List[int] = []

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        self.received.append(signum)
        if len(self.received) > 1 and not self._force_on_second:
            log.info("%s received: already stopping", signal.Signals(signum).name)
            return
        if len(self.received) > 1:
            sys.stderr.write(f"{PROG}: second {signal.Signals(signum).name}: exiting without draining\n")
            sys.stderr.flush()
            os._exit(EXIT_NOT_DRAINED)
        log.warning("%s received: stopping", signal.Signals(signum).name)
        self.stop.set()
        if self._on_first is not None:
            self._on_first(signum)

    def __enter__(self) -> "StopOnSignals":
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _start_endpoints(
    settings: RunSettings,
    health: Callable[[], HealthReport],
    metrics: Optional[Callable[[], "Snapshot"]],
) -> List[Any]:
    """The /health and /metrics servers the settings ask for (each has ``close()``)."""
    servers: List[Any] = []
    try:
        if settings.health_port is not None:
            servers.append(HealthServer(health, settings.health_port, settings.health_host))
        if settings.metrics_port is not None and metrics is not None:
            from .metrics import start_metrics_server

            server = start_metrics_server(metrics, settings.metrics_port, settings.metrics_host)
            log.info("metrics endpoint on %s", server.url)
            servers.append(server)
    except InvalidOptionError as exc:
        for server in servers:
            server.close()
        raise CommandError(EXIT_BAD_OPTION, _one_line(exc)) from None
    return servers


def _check_metrics_extra(settings: RunSettings) -> None:
    if settings.metrics_port is not None:
        from .metrics import metrics_available

        missing = metrics_available()
        if missing:
            raise CommandError(EXIT_BAD_OPTION, f"--metrics-port: {missing}")


def _run_single(settings: RunSettings) -> int:
    stop = threading.Event()
    with StopOnSignals(stop):
        service = WorkerService(settings)
        try:
            service.check_server()
            metrics = service.events.snapshot if service.events is not None else None
            servers = _start_endpoints(settings, service.health, metrics)
            try:
                return service.serve(stop)
            finally:
                for server in servers:
                    server.close()
        finally:
            service.close()


def run_command(args: argparse.Namespace) -> int:
    """``conductor-workers run``: the exit code (errors are one line on stderr)."""
    try:
        settings = settings_from_args(args)
        configure_logging(settings.log_level, settings.log_format)
        _check_metrics_extra(settings)
        if settings.supervised:  # several processes, or one that is recycled
            from ._supervisor import supervise

            return supervise(settings)
        return _run_single(settings)
    except CommandError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return exc.exit_code


__all__ = ["CommandError", "RunSettings", "WorkerService", "load_workers", "register", "run_command"]
