"""Run workers written with the OFFICIAL Conductor Python SDK (``conductor-python``).

This script is the "peer" we compare ourselves with. It must be run with the
python of the peer virtualenv (see :func:`benchmarks.peer.ensure_peer_venv`);
it cannot import anything from ``conductor_workers``.

It uses the SDK the way its README does: one ``Worker`` per task type handed to
``TaskHandler``, with the SDK's default process model (one ``spawn``-ed OS
process per worker, plus the SDK's logger process). Set
``CONDUCTOR_WORKER_ISOLATION=thread`` in the environment to try the SDK's
thread shim instead; this script does not do it for you.

Usage::

    <peer-venv>/bin/python benchmarks/peer_worker.py \\
        --server-url http://127.0.0.1:8080 --task t1,t2 --threads 10 \\
        [--poll-interval-ms 100] [--mode noop|sleep50|record] [--record-file F]

``--server-url`` may be given with or without the trailing ``/api``.

Modes:

* ``noop``    returns ``{}`` at once;
* ``sleep50`` sleeps 50 ms, then returns ``{}``;
* ``record``  appends ``"<time.time()> <taskId>\\n"`` to ``--record-file`` on
  entry, then returns ``{"seen": <task input>}``;
* ``blob``    the large-payload benchmark: ``{"size": n}`` in, ``{"blob": "x" * n}`` out; or
  ``{"blob": b}`` in, ``{"length": len(b)}`` out;
* ``cpu``     the CPU-bound benchmark: a pure-Python loop of ``$CPU_BENCH_LOOPS`` iterations
  (``benchmarks/cpu_processes.py``; the same loop as ``benchmarks/_cpu_workers.py``).

The process runs until SIGTERM or SIGINT, then stops the SDK's child processes
with ``TaskHandler.stop_processes()`` and exits 0. The SDK alone installs no
SIGTERM handler, so a plain SIGTERM to its parent would orphan the children;
``benchmarks.peer.stop`` also kills the whole process group to be safe.

Workers must be module-level functions: the SDK pickles them by reference into
``spawn``-ed children, which re-import this file as ``__mp_main__``. Settings
that the children need at run time (the record file) therefore travel through
the environment, which the children inherit.
"""

# The SDK lives only in the peer venv; mypy runs elsewhere.
# mypy: disable-error-code="import-not-found, import-untyped"

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

# Read by the spawned worker processes; set by main() before they start.
RECORD_FILE_ENV = "PEER_WORKER_RECORD_FILE"

# ``--mode cpu``: the loop count, set by ``benchmarks/cpu_processes.py`` (children inherit it).
CPU_LOOPS_ENV = "CPU_BENCH_LOOPS"

MODES = ("noop", "sleep50", "record", "blob", "cpu")


# --- execute functions ---------------------------------------------------------
#
# They take no parameters on purpose. The SDK passes the whole Task only to a
# function whose single parameter is un-annotated or annotated with the Task
# class itself; under ``from __future__ import annotations`` an annotation is a
# string and would not match, so the task is read from the SDK's documented
# ``get_task_context()`` instead.


def execute_noop() -> Dict[str, Any]:
    return {}


def execute_sleep50() -> Dict[str, Any]:
    time.sleep(0.05)
    return {}


_record_fd: Optional[int] = None
_record_lock = threading.Lock()


def _record(task_id: str) -> None:
    """Append one line with one ``write`` on an ``O_APPEND`` descriptor.

    Each worker type runs in its own process, all appending to the same file;
    a single small ``O_APPEND`` write keeps lines whole.
    """
    global _record_fd
    line = f"{time.time():.6f} {task_id}\n".encode()
    fd = _record_fd
    if fd is None:
        with _record_lock:
            if _record_fd is None:
                path = os.environ[RECORD_FILE_ENV]
                _record_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            fd = _record_fd
    os.write(fd, line)


def execute_record() -> Dict[str, Any]:
    from conductor.client.context.task_context import get_task_context

    ctx = get_task_context()
    _record(ctx.get_task_id())
    return {"seen": ctx.get_input()}


def execute_blob() -> Dict[str, Any]:
    """The large-payload benchmark's two tasks: ``{"size": n}`` makes a blob, ``{"blob": b}`` measures one."""
    from conductor.client.context.task_context import get_task_context

    data = get_task_context().get_input() or {}
    if "size" in data:
        return {"blob": "x" * int(data["size"])}
    return {"length": len(data.get("blob") or "")}


def execute_cpu() -> Dict[str, Any]:
    """The same pure-Python loop as ``benchmarks/_cpu_workers.py`` (~20 ms once calibrated)."""
    total = 0
    for i in range(int(os.environ.get(CPU_LOOPS_ENV, "200000"))):
        total += i * i % 7
    return {"spin": total}


EXECUTE_FUNCTIONS: Dict[str, Callable[[], Dict[str, Any]]] = {
    "noop": execute_noop,
    "sleep50": execute_sleep50,
    "record": execute_record,
    "blob": execute_blob,
    "cpu": execute_cpu,
}


# --- main -----------------------------------------------------------------------


def api_url(server_url: str) -> str:
    """The SDK wants the URL of the API root, ``.../api``."""
    url = server_url.rstrip("/")
    return url if url.endswith("/api") else url + "/api"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server-url", required=True, help="http://host:port or http://host:port/api")
    parser.add_argument("--task", required=True, help="task type, or several separated by commas")
    parser.add_argument("--threads", type=int, default=1, help="thread_count of each worker")
    parser.add_argument("--poll-interval-ms", type=int, default=None, help="SDK default: 100")
    parser.add_argument("--mode", choices=MODES, default="noop")
    parser.add_argument("--record-file", default=None, help="required with --mode record")
    parser.add_argument("--log-level", default=None, help="SDK log level (default: the SDK's, INFO)")
    args = parser.parse_args(argv)
    args.task_types = [t.strip() for t in args.task.split(",") if t.strip()]
    if not args.task_types:
        parser.error("--task names no task type")
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.mode == "record" and not args.record_file:
        parser.error("--mode record needs --record-file")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.record_file:
        path = os.path.abspath(args.record_file)
        open(path, "a").close()  # fail here, in the parent, if it cannot be written
        os.environ[RECORD_FILE_ENV] = path

    stop_requested = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop_requested.set()

    # Install the handlers before the (slow) SDK import so an early SIGTERM is
    # not lost, and before the children start so they never see them.
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    from conductor.client.automator.task_handler import TaskHandler
    from conductor.client.configuration.configuration import Configuration
    from conductor.client.worker.worker import Worker

    configuration = Configuration(server_api_url=api_url(args.server_url), log_level=args.log_level)
    workers = [
        Worker(
            task_definition_name=task_type,
            execute_function=EXECUTE_FUNCTIONS[args.mode],
            poll_interval=args.poll_interval_ms,
            thread_count=args.threads,
        )
        for task_type in args.task_types
    ]
    handler = TaskHandler(
        workers=workers,
        configuration=configuration,
        scan_for_annotated_workers=False,
    )
    try:
        handler.start_processes()
        print(
            f"peer_worker: started {len(workers)} worker(s) pid={os.getpid()} "
            f"tasks={','.join(args.task_types)} threads={args.threads} mode={args.mode}",
            file=sys.stderr,
            flush=True,
        )
        while not stop_requested.wait(0.5):
            pass
    finally:
        handler.stop_processes()
    print("peer_worker: stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
