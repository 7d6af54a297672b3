"""The command line of ``conductor-workers run``: its options, exit codes and settings.

:func:`register` adds the ``run`` subcommand and its flags (argparse errors become one line on stderr
and exit code 2); :func:`settings_from_args` turns the parsed flags (and ``CONDUCTOR_WORKERS_TRACING``)
into a :class:`RunSettings`, the frozen, picklable value that travels to spawned worker processes.
Also here: the command's exit codes, :class:`CommandError` (an exit code with a one-line message)
and the one-line formatting of errors (``_one_line``, ``_describe``) the other ``run`` modules use.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Iterable, Optional, Tuple, TypeVar

import attrs

from . import _validate
from .errors import ConductorError, InvalidOptionError
from .options import parse_option

T = TypeVar("T")

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
    health_max_stuck: float = 30.0
    metrics_port: Optional[int] = None
    metrics_host: str = "127.0.0.1"
    tracing: bool = False
    options_file: Optional[str] = None
    sys_path: Tuple[str, ...] = ()
    max_tasks_per_child: Optional[int] = None
    max_memory_per_child: Optional[int] = None  # MB (2**20 bytes) of resident memory

    @property
    def supervised(self) -> bool:
        """Worker processes under a supervisor: several of them, or one that is recycled."""
        recycled = self.max_tasks_per_child is not None or self.max_memory_per_child is not None
        return self.processes > 1 or recycled


def _flag_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse ``type`` from a parser that raises InvalidOptionError (so that the flag, the
    environment and the options keep one rule: :mod:`._validate`); argparse turns the refusal into
    "argument --flag: reason", one line and exit 2."""
    def flag_type(text: str) -> T:
        try:
            return parse(text)
        except InvalidOptionError as exc:
            raise argparse.ArgumentTypeError(_one_line(exc)) from None

    return flag_type


def _option_flag(name: str) -> Callable[[str], Any]:
    """A flag that sets the polling option ``name``: exactly what :class:`PollingOptions` accepts."""
    return _flag_type(lambda text: parse_option(name, text))


MAX_TASKS_PER_CHILD = 10**9
MAX_MEMORY_PER_CHILD_MB = 2**20  # a terabyte


def _int_flag(minimum: int, maximum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        number = _validate.parse_int(text)
        problem = _validate.int_problem(number, minimum, maximum)
        if problem is not None:
            raise InvalidOptionError(problem)
        return number

    return _flag_type(parse)


def _seconds_flag(positive: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        number = _validate.parse_number(text)
        problem = _validate.seconds_problem(number, positive=positive)
        if problem is not None:
            raise InvalidOptionError(problem)
        return number

    return _flag_type(parse)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _env_arg(flag: str, value: Any, variable: str, parse: Callable[[str], Any]) -> Any:
    """``value`` (the flag's) or else the environment variable's, parsed as the flag is."""
    if value is not None or not os.environ.get(variable, "").strip():
        return value
    try:
        return parse(os.environ[variable].strip())
    except argparse.ArgumentTypeError as exc:
        raise CommandError(EXIT_BAD_OPTION, f"{variable} ({flag}): {exc}") from None


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
    run.add_argument("--concurrency", type=_option_flag("concurrency"), default=None, metavar="N",
                     help=f"tasks executed at once, per worker (1 to {_validate.MAX_CONCURRENCY})")
    run.add_argument("--poll-interval", type=_option_flag("poll_interval"), default=None, metavar="MS",
                     help="milliseconds to wait after a poll that found nothing")
    run.add_argument("--batch-poll-timeout", type=_option_flag("batch_poll_timeout"), default=None, metavar="MS",
                     help="milliseconds the server may hold an idle poll open (0 to 5000)")
    run.add_argument("--domain", default=None, help="task domain to poll")
    run.add_argument("--time-limit", type=_option_flag("time_limit"), default=None, metavar="SECONDS",
                     help="fail a task that runs longer than this, at once (per worker option time_limit)")
    run.add_argument("--worker", action="append", default=[], metavar="TASK",
                     help="run only these task types (repeatable, or comma-separated)")
    run.add_argument("--exclude", action="append", default=[], metavar="TASK",
                     help="do not run these task types (repeatable, or comma-separated)")
    run.add_argument("--shutdown-timeout", type=_seconds_flag(False), default=30.0, metavar="SECONDS",
                     help="seconds in-flight tasks get to finish at SIGTERM/SIGINT (at most 30 days); default 30")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                     help="logging level; default info")
    run.add_argument("--log-format", default="text", choices=["text", "json"],
                     help="log lines as text or as one JSON object each; default text")
    run.add_argument("--processes", type=_int_flag(1, _validate.MAX_PROCESSES), default=1, metavar="N",
                     help="run N worker processes under a supervisor that restarts them "
                          f"(at most {_validate.MAX_PROCESSES}); default 1")
    run.add_argument("--health-port", type=_int_flag(0, _validate.MAX_PORT), default=None, metavar="PORT",
                     help="serve GET /health on this port (200 healthy, 503 not)")
    run.add_argument("--health-host", default="127.0.0.1", metavar="HOST",
                     help="interface for /health; default 127.0.0.1")
    run.add_argument("--health-max-silence", type=_seconds_flag(True), default=30.0, metavar="SECONDS",
                     help="unhealthy when a polling worker has not reached the server for this long; default 30")
    run.add_argument("--health-max-stuck", type=_seconds_flag(True), default=30.0, metavar="SECONDS",
                     help="unhealthy (wedged) when every slot of a worker has been held this long by tasks over "
                          "their time limit or response timeout; a supervised process is then replaced; default 30")
    run.add_argument("--metrics-port", type=_int_flag(0, _validate.MAX_PORT), default=None, metavar="PORT",
                     help="serve Prometheus metrics at /metrics on this port (needs the 'metrics' extra)")
    run.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                     help="interface for /metrics; default 127.0.0.1")
    run.add_argument("--options-file", default=None, metavar="PATH",
                     help="JSON polling options applied whenever the file changes, e.g. "
                          '{"all": {"concurrency": 4}, "resize": {"paused": true}} (every process of a fleet '
                          "reads it); env CONDUCTOR_WORKERS_OPTIONS_FILE")
    run.add_argument("--max-tasks-per-child", type=_int_flag(1, MAX_TASKS_PER_CHILD), default=None, metavar="N",
                     help="replace a worker process after it has executed N tasks (it drains first; its "
                          "replacement polls before it stops); env CONDUCTOR_WORKERS_MAX_TASKS_PER_CHILD")
    run.add_argument("--max-memory-per-child", type=_int_flag(1, MAX_MEMORY_PER_CHILD_MB), default=None, metavar="MB",
                     help="replace a worker process whose resident memory passed MB megabytes (as "
                          "--max-tasks-per-child); env CONDUCTOR_WORKERS_MAX_MEMORY_PER_CHILD")
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
                            ("batch_poll_timeout", args.batch_poll_timeout), ("domain", args.domain),
                            ("time_limit", args.time_limit))
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
        health_max_stuck=float(args.health_max_stuck),
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        tracing=bool(args.tracing) if args.tracing is not None else _env_flag("CONDUCTOR_WORKERS_TRACING"),
        options_file=args.options_file or os.environ.get("CONDUCTOR_WORKERS_OPTIONS_FILE") or None,
        sys_path=sys_path,
        max_tasks_per_child=_env_arg("--max-tasks-per-child", args.max_tasks_per_child,
                                     "CONDUCTOR_WORKERS_MAX_TASKS_PER_CHILD", _int_flag(1, MAX_TASKS_PER_CHILD)),
        max_memory_per_child=_env_arg("--max-memory-per-child", args.max_memory_per_child,
                                      "CONDUCTOR_WORKERS_MAX_MEMORY_PER_CHILD", _int_flag(1, MAX_MEMORY_PER_CHILD_MB)),
    )
