"""Command line: ``python -m conductor_workers server --port 8080`` (also ``conductor-workers``).

This is the application edge: it installs SIGINT/SIGTERM handlers (the library never does);
they only set an event, and the main thread then stops the server cleanly.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType
from typing import Callable, Dict, List, Optional

log = logging.getLogger("conductor_workers")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="conductor-workers", description="conductor_workers tools")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
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
    return parser


def _run_server(args: argparse.Namespace) -> int:
    from .testing import LocalConductor

    stop = threading.Event()

    def request_stop(signum: int, frame: Optional[FrameType]) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with LocalConductor(port=args.port, host=args.host, db_path=args.db,
                            http_allowed_hosts=args.http_allow_host) as server:
            print("LocalConductor listening on %s" % server.url, flush=True)
            while not stop.wait(1.0):
                pass  # wake up now and then so that signals are handled promptly on every platform
            log.info("stopping")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


_COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {"server": _run_server}


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``python -m conductor_workers`` and the ``conductor-workers`` script."""
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(args, "log_level", "info").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return _COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
