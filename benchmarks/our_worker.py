"""Run workers written with ``conductor_workers`` (ours), mirroring ``peer_worker.py``'s command line.

Usage::

    python benchmarks/our_worker.py --server-url http://127.0.0.1:8080 --task t1,t2 --threads 10 \\
        [--poll-interval-ms 100] [--mode noop|sleep50|record] [--record-file F]

``--server-url`` may be given with or without the trailing ``/api``. One ``@worker_task`` function
per task type, all run by one ``TaskManager`` with ``PollingOptions(concurrency=threads)`` in this
one process. Modes are those of ``peer_worker.py``:

* ``noop``    returns ``{}`` at once;
* ``sleep50`` sleeps 50 ms, then returns ``{}``;
* ``record``  appends ``"<time.time()> <taskId>\\n"`` to ``--record-file`` on entry, then returns
  ``{"seen": <task input>}``.

Runs until SIGTERM or SIGINT, then stops polling, lets in-flight tasks finish and exits 0.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

MODES = ("noop", "sleep50", "record")

_record_fd: Optional[int] = None


def execute_noop() -> Dict[str, Any]:
    return {}


def execute_sleep50() -> Dict[str, Any]:
    time.sleep(0.05)
    return {}


def execute_record(task: Any) -> Dict[str, Any]:
    os.write(_record_fd, f"{time.time():.6f} {task.task_id}\n".encode())  # type: ignore[arg-type]
    return {"seen": task.input_data}


def _middleware(variant: str) -> "tuple[List[Any], Dict[str, Any]]":
    """``BENCH_MIDDLEWARE`` (set by middleware_cost.py): none, metrics, tracing, time_limit or all."""
    layers: List[Any] = []
    options: Dict[str, Any] = {}
    variants = {"none": (), "all": ("metrics", "tracing", "time_limit")}.get(variant, (variant,))
    for name in variants:
        if name == "metrics":
            from conductor_workers.metrics import MetricsMiddleware

            layers.append(MetricsMiddleware())
        elif name == "tracing":  # the SDK's real pipeline (batching processor), spans dropped at export
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

            from conductor_workers.tracing import TracingMiddleware

            class Drop(SpanExporter):
                def export(self, spans: Any) -> Any:
                    return SpanExportResult.SUCCESS

            provider = TracerProvider()
            provider.add_span_processor(BatchSpanProcessor(Drop()))
            layers.append(TracingMiddleware(provider))
        elif name == "time_limit":
            options["time_limit"] = 600.0
        else:
            raise SystemExit(f"unknown BENCH_MIDDLEWARE {name!r}")
    return layers, options


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server-url", required=True, help="http://host:port or http://host:port/api")
    parser.add_argument("--task", required=True, help="task type, or several separated by commas")
    parser.add_argument("--threads", type=int, default=1, help="concurrency of each worker")
    parser.add_argument("--poll-interval-ms", type=int, default=None, help="default: ours, 100")
    parser.add_argument("--mode", choices=MODES, default="noop")
    parser.add_argument("--record-file", default=None, help="required with --mode record")
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
    global _record_fd
    args = parse_args(argv)
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    if args.record_file:
        _record_fd = os.open(os.path.abspath(args.record_file), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    from conductor_workers import ConductorClient, Configuration, PollingOptions, TaskManager, worker_task

    functions: Dict[str, Callable[..., Any]] = {"noop": execute_noop, "sleep50": execute_sleep50, "record": execute_record}
    function = functions[args.mode]
    workers = [worker_task(task_type)(function) for task_type in args.task_types]
    options: Dict[str, Any] = {"concurrency": args.threads}
    if args.poll_interval_ms is not None:
        options["poll_interval"] = args.poll_interval_ms
    middleware, extra_options = _middleware(os.environ.get("BENCH_MIDDLEWARE", "none"))
    options.update(extra_options)
    client = ConductorClient(Configuration(server_url=args.server_url))  # defaults, as a user would
    manager = TaskManager(client, workers, options=PollingOptions(**options), middleware=middleware)
    manager.start_polling()
    print(
        f"our_worker: started {len(workers)} worker(s) pid={os.getpid()} "
        f"tasks={','.join(args.task_types)} threads={args.threads} mode={args.mode}",
        file=sys.stderr,
        flush=True,
    )
    try:
        while not stop_requested.wait(0.5):
            pass
    finally:
        drained = manager.stop_polling(timeout=10)
        client.close()
    print(f"our_worker: stopped (drained={drained})", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
