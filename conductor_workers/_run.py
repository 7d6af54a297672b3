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
  rejects the credentials (or the task definitions) at start. An error is one line on stderr.
* ``--processes N`` runs N spawned worker processes under a supervisor (:mod:`._supervisor`).
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import inspect
import json
import logging
import os
import signal
import sys
import threading
from types import FrameType, ModuleType
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple

import attrs

from .errors import AuthenticationError, ConductorError, InvalidOptionError
from .worker import Worker

if TYPE_CHECKING:  # pragma: no cover
    from .client import ConductorClient
    from .health import HealthReport
    from .manager import TaskManager
    from .metrics import MetricsMiddleware, Snapshot

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_NOT_DRAINED = 1
EXIT_BAD_OPTION = 2
EXIT_BAD_MODULE = 3
EXIT_SERVER_REJECTED = 4

PROG = "conductor-workers run"


class CommandError(ConductorError):
    """Ends the command with ``exit_code`` and a one-line ``message`` on stderr."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _one_line(text: object) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return " | ".join(lines) if lines else ""


def _describe(exc: BaseException) -> str:
    message = _one_line(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


# -- settings ------------------------------------------------------------------------------------


@attrs.frozen
class RunSettings:
    """Everything a worker process needs (picklable: it travels to spawned processes)."""

    targets: Tuple[str, ...]
    server_url: Optional[str] = None
    options: Tuple[Tuple[str, Any], ...] = ()
    include: Tuple[str, ...] = ()
    exclude: Tuple[str, ...] = ()
    shutdown_timeout: float = 30.0
    log_level: str = "info"
    log_format: str = "text"
    processes: int = 1
    health_port: Optional[int] = None
    health_host: str = "127.0.0.1"
    health_max_silence: float = 30.0
    metrics_port: Optional[int] = None
    metrics_host: str = "127.0.0.1"
    tracing: bool = False
    sys_path: Tuple[str, ...] = ()


def _int_arg(minimum: int, maximum: Optional[int] = None) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
        if number < minimum or (maximum is not None and number > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value!r}")
        return number

    return parse


def _seconds_arg(positive: bool) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from None
        if number != number or number < 0 or (positive and number == 0):
            raise argparse.ArgumentTypeError(f"must be {'>' if positive else '>='} 0, got {value!r}")
        return number

    return parse


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _names(values: Iterable[str]) -> Tuple[str, ...]:
    """``--worker a,b --worker c`` -> ``("a", "b", "c")``."""
    return tuple(name.strip() for value in values for name in value.split(",") if name.strip())


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the ``run`` subcommand to ``conductor-workers``' subparsers."""
    run = commands.add_parser(
        "run",
        help="run the workers that Python modules define, as a service",
        description="Import MODULE[:ATTR] targets and run their workers until SIGTERM/SIGINT, then drain. "
                    "Server and auth come from CONDUCTOR_SERVER_URL, CONDUCTOR_AUTH_KEY and "
                    "CONDUCTOR_AUTH_SECRET; polling options also from CONDUCTOR_WORKER_* variables "
                    "(flags beat them). Exit codes: 0 drained, 1 not drained, 2 bad option, "
                    "3 bad module or no workers, 4 the server rejected the credentials.",
    )
    run.add_argument("targets", nargs="+", metavar="MODULE[:ATTR]",
                     help="a module whose workers to run, or module:attr naming a worker or a list of them")
    run.add_argument("--server-url", metavar="URL", default=None,
                     help="Conductor API URL (default: $CONDUCTOR_SERVER_URL or http://localhost:8080/api)")
    run.add_argument("--concurrency", type=_int_arg(1), default=None, help="tasks executed at once, per worker")
    run.add_argument("--poll-interval", type=_int_arg(0), default=None, metavar="MS",
                     help="milliseconds to wait after a poll that found nothing")
    run.add_argument("--domain", default=None, help="task domain to poll")
    run.add_argument("--time-limit", type=_seconds_arg(True), default=None, metavar="SECONDS",
                     help="fail a task that runs longer than this, at once (per worker option time_limit)")
    run.add_argument("--worker", action="append", default=[], metavar="TASK",
                     help="run only these task types (repeatable, or comma-separated)")
    run.add_argument("--exclude", action="append", default=[], metavar="TASK",
                     help="do not run these task types (repeatable, or comma-separated)")
    run.add_argument("--shutdown-timeout", type=_seconds_arg(False), default=30.0, metavar="SECONDS",
                     help="seconds in-flight tasks get to finish at SIGTERM/SIGINT; default 30")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                     help="logging level; default info")
    run.add_argument("--log-format", default="text", choices=["text", "json"],
                     help="log lines as text or as one JSON object each; default text")
    run.add_argument("--processes", type=_int_arg(1), default=1, metavar="N",
                     help="run N worker processes under a supervisor that restarts them; default 1")
    run.add_argument("--health-port", type=_int_arg(0, 65535), default=None, metavar="PORT",
                     help="serve GET /health on this port (200 healthy, 503 not)")
    run.add_argument("--health-host", default="127.0.0.1", metavar="HOST",
                     help="interface for /health; default 127.0.0.1")
    run.add_argument("--health-max-silence", type=_seconds_arg(True), default=30.0, metavar="SECONDS",
                     help="unhealthy when a polling worker has not reached the server for this long; default 30")
    run.add_argument("--metrics-port", type=_int_arg(0, 65535), default=None, metavar="PORT",
                     help="serve Prometheus metrics at /metrics on this port (needs the 'metrics' extra)")
    run.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                     help="interface for /metrics; default 127.0.0.1")
    run.add_argument("--tracing", action="store_true", default=None,
                     help="an OpenTelemetry span per execution (needs the 'otel' extra and an SDK, e.g. "
                          "opentelemetry-instrument); env CONDUCTOR_WORKERS_TRACING=true")

    def one_line_error(message: str) -> None:  # argparse's usage block is not one line
        sys.stderr.write(f"{PROG}: error: {_one_line(message)} (see --help)\n")
        sys.exit(EXIT_BAD_OPTION)

    setattr(run, "error", one_line_error)


def settings_from_args(args: argparse.Namespace) -> RunSettings:
    options = tuple(
        (name, value)
        for name, value in (("concurrency", args.concurrency), ("poll_interval", args.poll_interval),
                            ("domain", args.domain), ("time_limit", args.time_limit))
        if value is not None
    )
    path = os.getcwd()
    sys_path = (path,) if path not in sys.path else ()
    return RunSettings(
        targets=tuple(args.targets),
        server_url=args.server_url,
        options=options,
        include=_names(args.worker),
        exclude=_names(args.exclude),
        shutdown_timeout=float(args.shutdown_timeout),
        log_level=args.log_level,
        log_format=args.log_format,
        processes=int(args.processes),
        health_port=args.health_port,
        health_host=args.health_host,
        health_max_silence=float(args.health_max_silence),
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        tracing=bool(args.tracing) if args.tracing is not None else _env_flag("CONDUCTOR_WORKERS_TRACING"),
        sys_path=sys_path,
    )


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


# -- discovery -----------------------------------------------------------------------------------


def _import(module_name: str) -> ModuleType:
    if not module_name:
        raise CommandError(EXIT_BAD_MODULE, "empty module name")
    try:
        return importlib.import_module(module_name)
    except SystemExit as exc:
        raise CommandError(EXIT_BAD_MODULE, f"importing module {module_name!r} called sys.exit({exc.code!r})") from None
    except BaseException as exc:  # noqa: BLE001 - whatever a user module raises is reported in one line
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise CommandError(EXIT_BAD_MODULE, f"cannot import module {module_name!r}: {_describe(exc)}") from None


def _instantiate(cls: type, where: str) -> Worker:
    try:
        worker = cls()
    except Exception as exc:  # noqa: BLE001 - reported in one line
        raise CommandError(EXIT_BAD_MODULE, f"cannot create {where} with no arguments: {_describe(exc)}") from None
    if not isinstance(worker, Worker):  # pragma: no cover - cls is a Worker subclass
        raise CommandError(EXIT_BAD_MODULE, f"{where}() is not a Worker")
    return worker


def _is_worker_class(value: Any) -> bool:
    return inspect.isclass(value) and issubclass(value, Worker)


def _workers_from_value(value: Any, where: str, *, call: bool = True) -> List[Worker]:
    if isinstance(value, Worker):
        return [value]
    if _is_worker_class(value):
        return [_instantiate(value, where)]
    if isinstance(value, (list, tuple, set, frozenset)):
        found: List[Worker] = []
        for index, item in enumerate(value):
            found.extend(_workers_from_value(item, f"{where}[{index}]", call=False))
        return found
    if call and callable(value):
        try:
            produced = value()
        except Exception as exc:  # noqa: BLE001 - reported in one line
            raise CommandError(EXIT_BAD_MODULE, f"calling {where}() failed: {_describe(exc)}") from None
        return _workers_from_value(produced, f"{where}()", call=False)
    raise CommandError(
        EXIT_BAD_MODULE,
        f"{where} is a {type(value).__name__}, not a Worker, a Worker subclass, a list of them, or a function "
        "returning one of those",
    )


def _scan(module: ModuleType) -> List[Worker]:
    found: List[Worker] = []
    seen: set = set()
    instance_classes = set()
    for value in list(vars(module).values()):
        if isinstance(value, Worker) and id(value) not in seen:
            seen.add(id(value))
            found.append(value)
            instance_classes.add(type(value))
    for name, value in list(vars(module).items()):
        if (
            _is_worker_class(value)
            and value.__module__ == module.__name__
            and value not in instance_classes
            and isinstance(vars(value).get("task_def_name"), str)
            and vars(value)["task_def_name"]
        ):
            found.append(_instantiate(value, f"{module.__name__}:{name}"))
    return found


def load_target(target: str) -> List[Worker]:
    """The workers ``MODULE`` or ``MODULE:ATTR`` defines."""
    module_name, _, attr = target.partition(":")
    module = _import(module_name.strip())
    if not attr:
        return _scan(module)
    value: Any = module
    for part in attr.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise CommandError(EXIT_BAD_MODULE, f"module {module_name!r} has no attribute {attr!r}") from None
    return _workers_from_value(value, target)


def load_workers(settings: RunSettings) -> List[Worker]:
    """Import every target and apply ``--worker``/``--exclude``; CommandError when nothing is left."""
    for path in reversed(settings.sys_path):
        if path not in sys.path:
            sys.path.insert(0, path)
    workers: Dict[str, Worker] = {}
    for target in settings.targets:
        for worker in load_target(target):
            other = workers.get(worker.task_def_name)
            if other is not None and other is not worker:
                raise CommandError(
                    EXIT_BAD_MODULE,
                    f"two workers for task type {worker.task_def_name!r}: {other!r} and {worker!r}",
                )
            workers[worker.task_def_name] = worker
    if not workers:
        raise CommandError(EXIT_BAD_MODULE, f"no workers found in {', '.join(settings.targets)}")
    unknown = sorted(set(settings.include) - set(workers))
    if unknown:
        raise CommandError(
            EXIT_BAD_OPTION,
            f"--worker {', '.join(unknown)}: no such worker; found: {', '.join(sorted(workers))}",
        )
    for name in sorted(set(settings.exclude) - set(workers)):
        log.warning("--exclude %s: no such worker (found: %s)", name, ", ".join(sorted(workers)))
    selected = [
        worker for name, worker in workers.items()
        if (not settings.include or name in settings.include) and name not in settings.exclude
    ]
    if not selected:
        raise CommandError(EXIT_BAD_MODULE, "no workers left after --worker/--exclude")
    return selected


# -- one process's service -----------------------------------------------------------------------


class WorkerService:
    """The client, manager (and metrics events) of one process, built from :class:`RunSettings`."""

    def __init__(self, settings: RunSettings, workers: Optional[List[Worker]] = None) -> None:
        from .client import ConductorClient
        from .config import Configuration
        from .manager import TaskManager

        self.settings = settings
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

    def start(self) -> None:
        try:
            self.manager.start_polling()
        except AuthenticationError as exc:
            raise CommandError(EXIT_SERVER_REJECTED, f"the server rejected the credentials: {_one_line(exc)}") from None
        except ConductorError as exc:
            self.manager.stop_polling(0)
            raise CommandError(EXIT_SERVER_REJECTED, f"could not start polling: {_describe(exc)}") from None
        log.info("polling %s on %s", ", ".join(self.task_types), self.client.config.server_url)

    def serve(self, stop: threading.Event) -> int:
        """Poll until ``stop`` is set (or every poll thread ended), then drain; the exit code."""
        self.start()
        died = False
        while not stop.wait(0.5):
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

    def health(self) -> "HealthReport":
        from .health import health_report

        return health_report(self.manager, max_silence=self.settings.health_max_silence)

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
    health: Callable[[], "HealthReport"],
    metrics: Optional[Callable[[], "Snapshot"]],
) -> List[Any]:
    """The /health and /metrics servers the settings ask for (each has ``close()``)."""
    servers: List[Any] = []
    try:
        if settings.health_port is not None:
            from .health import HealthServer

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
        if settings.processes > 1:
            from ._supervisor import supervise

            return supervise(settings)
        return _run_single(settings)
    except CommandError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return exc.exit_code


__all__ = ["CommandError", "RunSettings", "WorkerService", "load_workers", "register", "run_command"]
