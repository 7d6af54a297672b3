"""Run the real conductor-oss server for tests, CI and benchmarks (the code: ``tests/support/conductor_oss``).

Runnable::

    python tests/real_server.py [--version V] [--port P]    # start, print the URL, run until Ctrl-C
    python tests/real_server.py --prepare                   # one-off: extract the jar + build an AOT cache

The server runs from the Spring Boot jar in the local Maven repository (fetched with
``mvn dependency:get`` when missing) on a throwaway SQLite database in a temporary directory.
Versions 3.22+ need Java 21+; without such a runtime the newest 3.21.x on Maven Central
(``FALLBACK_VERSION``, in-memory store, Java 17) is used instead (see DECISIONS.md).

Environment:
    CONDUCTOR_SERVER_VERSION     server version (default ``DEFAULT_VERSION``)
    CONDUCTOR_REAL_SERVER_URL    use this already-running server instead of starting one
    CONDUCTOR_KEEP_SERVER_LOGS   keep the temporary directory (log + database) after stop()
    CONDUCTOR_SERVER_CACHE_DIR   where the extracted jar and AOT cache live
                                 (default ``~/.cache/conductor-workers``)
    CONDUCTOR_SERVER_JAVA_OPTS   extra JVM flags, whitespace-separated
    MAVEN_REPO_LOCAL             local Maven repository (default ``~/.m2/repository``)
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: make ``support`` importable

from support.conductor_oss import DEFAULT_VERSION, RealConductorServer, RealServerError, prepare  # noqa: E402


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", default=DEFAULT_VERSION, help="server version (default %(default)s)")
    parser.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    parser.add_argument("--timeout", type=float, default=240.0, help="startup timeout in seconds")
    parser.add_argument("--prepare", action="store_true", help="extract the jar, build the AOT cache, exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        if args.prepare:
            cache = prepare(args.version)
            print(f"AOT cache: {cache}" if cache else "no AOT cache (needs Java 25+)")
            return 0
        server = RealConductorServer(args.version, args.port)
        with server:
            print(f"{server.url}  ({server.describe()}; started in {server.startup_seconds or 0:.1f} s; "
                  f"log {server.log_path})", flush=True)
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    except RealServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
