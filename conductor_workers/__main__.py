"""Command line: ``python -m conductor_workers server --port 8080`` (also ``conductor-workers``).

This is the application edge: it installs SIGINT/SIGTERM handlers (the library never does);
they only set an event, and the main thread then stops the server cleanly. When the reader of
stdout goes away (``conductor-workers ... | head``), every command ends quietly with exit code 141,
the status a shell shows for a process that SIGPIPE ended; Python ignores SIGPIPE (its sockets need
that), so the broken pipe arrives as BrokenPipeError and :func:`main` turns it into that status.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sqlite3
import ssl
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, TextIO, cast

from . import _shell, _validate
from ._version import __version__
from .errors import InvalidOptionError

if TYPE_CHECKING:
    from .server import ScriptLimits

log = logging.getLogger("conductor_workers")


def _build_parser() -> argparse.ArgumentParser:
    parser = _shell.OneLineParser(prog="conductor-workers", description="conductor_workers tools")
    parser.add_argument("--version", action=_shell.PrintVersion, version=__version__)
    # every subcommand's parser is a OneLineParser too (argparse makes them of the parent's class)
    commands = cast("argparse._SubParsersAction[argparse.ArgumentParser]",
                    parser.add_subparsers(dest="command", metavar="COMMAND"))
    commands.required = True
    server = commands.add_parser("server", help="run LocalConductor, an embedded Conductor server")
    server.add_argument("--port", type=int, default=8080, help="TCP port (0 picks a free one); default 8080")
    server.add_argument("--host", default="127.0.0.1", help="interface to bind; default 127.0.0.1")
    server.add_argument("--db", metavar="FILE", default=None,
                        help="SQLite file to keep state in (default: in memory)")
    server.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                        help="logging level; default info")
    server.add_argument("--http-allow-host", metavar="HOST", action="append", default=[],
                        help="a host HTTP tasks may call besides loopback ones (repeatable; '*' for any)")
    server.add_argument("--auth-file", metavar="PATH", default=None,
                        help="require Orkes-style tokens for the key in this file (one line KEY_ID:SECRET;"
                             " default: $LOCAL_CONDUCTOR_AUTH_FILE, else $LOCAL_CONDUCTOR_AUTH=KEY_ID:SECRET,"
                             " else no auth)")
    server.add_argument("--auth", default=None, help=argparse.SUPPRESS)  # refused: a secret shows in ps
    server.add_argument("--tls-cert", metavar="PEM", default=None,
                        help="serve HTTPS with this certificate (chain); its key too unless --tls-key")
    server.add_argument("--tls-key", metavar="PEM", default=None, help="the private key of --tls-cert")
    server.add_argument("--script-time-limit", metavar="SECONDS", default=None,
                        help="longest a JavaScript script or jq query may run (INLINE, SWITCH, DO_WHILE,"
                             " JSON_JQ_TRANSFORM); default $LOCAL_CONDUCTOR_SCRIPT_TIME_LIMIT, else 4")
    server.add_argument("--script-memory-limit", metavar="MB", default=None,
                        help="most memory one script or query may use, in MB;"
                             " default $LOCAL_CONDUCTOR_SCRIPT_MEMORY_LIMIT, else 256")
    _shell.add_commands(commands)
    from . import _run

    _run.register(commands)
    return parser


def _run_server(args: argparse.Namespace) -> int:
    from .server import LocalConductor

    if args.auth is not None:
        return _shell.fail(_shell.AUTH_ON_COMMAND_LINE, 2)
    try:
        auth = _shell.server_auth(args.auth_file, os.environ)
        tls = _shell.tls_context(args.tls_cert, args.tls_key)
        script_limits = _script_limits(args)
    except (_shell.UsageError, InvalidOptionError) as exc:
        return _shell.fail(exc, 2)
    except (OSError, ssl.SSLError) as exc:  # ssl.SSLError is an OSError; named for the reader
        files = args.tls_cert + (" / " + args.tls_key if args.tls_key else "")
        reason = _shell.describe_os_error(exc)
        return _shell.fail("cannot load the TLS certificate %s: %s" % (files, reason), 1)
    if not 0 <= args.port <= 65535:
        return _shell.fail("bad port %d: must be 0-65535" % args.port, 1)
    conductor = LocalConductor(port=args.port, host=args.host, db_path=args.db, auth=auth, tls=tls,
                               http_allowed_hosts=args.http_allow_host, script_limits=script_limits)
    try:
        conductor.start()
    except sqlite3.Error as exc:
        return _shell.fail("cannot open the database %s: %s" % (args.db, exc), 1)
    except (OSError, OverflowError) as exc:
        reason = _shell.describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
        return _shell.fail("cannot listen on %s:%d: %s" % (args.host, args.port, reason), 1)

    stop = threading.Event()

    def request_stop(signum: int, frame: Optional[FrameType]) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        print("LocalConductor listening on %s" % conductor.url, flush=True)
        while not stop.wait(1.0):
            pass  # wake up now and then so that signals are handled promptly on every platform
        log.info("stopping")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        conductor.stop()
    return 0


def _script_limits(args: argparse.Namespace) -> "ScriptLimits":
    """``--script-time-limit`` and ``--script-memory-limit`` (or their environment variables), checked."""
    from .server import ScriptLimits  # the server package only for the server command (start-up time)

    def read(flag: str, given: Optional[str], variable: str, build: Callable[[str], Any]) -> Any:
        text = given or os.environ.get(variable)
        if not text:
            return None
        try:
            return build(text)
        except InvalidOptionError as exc:
            raise InvalidOptionError("%s: %s" % (flag, exc)) from None

    defaults = ScriptLimits()
    time_limit = read("--script-time-limit", args.script_time_limit, "LOCAL_CONDUCTOR_SCRIPT_TIME_LIMIT",
                      lambda text: ScriptLimits(time_limit=_validate.parse_number(text)).time_limit)
    memory_mb = read("--script-memory-limit", args.script_memory_limit, "LOCAL_CONDUCTOR_SCRIPT_MEMORY_LIMIT",
                     lambda text: ScriptLimits(memory_mb=_validate.parse_int(text)).memory_mb)
    return ScriptLimits(defaults.time_limit if time_limit is None else time_limit,
                        defaults.memory_mb if memory_mb is None else memory_mb)


def _run_workers(args: argparse.Namespace) -> int:
    from ._run import run_command

    return run_command(args)


_COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {"server": _run_server, **_shell.COMMANDS,
                                                             "run": _run_workers}


def _flushes(stream: TextIO) -> bool:
    try:
        stream.flush()
    except BrokenPipeError:
        return False
    return True


def _discard_closed_output() -> None:
    """Point stdout (and stderr) at the null device if their reader went away.

    What is left in their buffers would otherwise fail again when the interpreter flushes them at
    exit ("Exception ignored ... BrokenPipeError", exit status 120), as the Python docs on SIGPIPE note.
    """
    for stream in (sys.stdout, sys.stderr):
        if stream is None or _flushes(stream):
            continue
        try:
            descriptor = stream.fileno()
        except (OSError, ValueError):  # a stream without a descriptor (a host replaced it): nothing to point
            continue
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, descriptor)
        finally:
            os.close(devnull)


def _dispatch(argv: Optional[List[str]]) -> int:
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(args, "log_level", "info").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return _COMMANDS[args.command](args)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``python -m conductor_workers`` and the ``conductor-workers`` script."""
    try:
        try:
            return _dispatch(argv)
        finally:  # also after --help and --version, which argparse ends with SystemExit
            if sys.stdout is not None:
                sys.stdout.flush()
    except BrokenPipeError:  # output cut short: the reader has what it wanted
        _discard_closed_output()
        return _shell.EXIT_OUTPUT_CLOSED


if __name__ == "__main__":
    sys.exit(main())
