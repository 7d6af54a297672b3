"""A 4 MB payload through a two-task workflow: ours beside the official Python SDK, same server, same run.

    python benchmarks/large_payload.py [--server local|real-pg] [--rounds 3] [--size-mb 4]

Task ``make`` returns ``{"blob": "x" * size}``; task ``use`` gets ``${make.output.blob}`` as input and
returns ``{"length": len(blob)}``. Above the server's 3072 KB threshold both payloads live in external
storage: the ``use`` task is polled with an empty ``inputData`` and ``externalInputPayloadStoragePath``.
Our runner downloads the input and the worker sees the blob; conductor-python 2.0.0 does not download
(its worker runs on ``{}`` and reports ``length`` 0), so its time is for a workflow that computed on
nothing: the table says which side got the right ``length``.

``--server local``: LocalConductor with its default thresholds (its own storage). ``--server real-pg``:
conductor-oss 3.32.1 on PostgreSQL with the PostgreSQL payload storage (tests/support/postgres.py and
tests/support/conductor_oss start both). Rounds alternate ours and the peer; each round is one workflow
per side, timed from start to COMPLETED, after both sides' workers are polling.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from conductor_workers import (  # noqa: E402
    ConductorClient,
    Configuration,
    TaskDef,
    TaskManager,
    WorkflowDef,
    WorkflowExecutor,
    WorkflowTask,
    worker_task,
)


def _register(client: ConductorClient, prefix: str) -> Tuple[str, str, str]:
    make, use = f"{prefix}_make", f"{prefix}_use"
    client.metadata.register_task_defs([TaskDef(name=n, retry_count=0, owner_email="b@example.com") for n in (make, use)])
    workflow = f"{prefix}_wf"
    WorkflowExecutor(client).register_workflow(
        WorkflowDef(
            name=workflow,
            version=1,
            owner_email="b@example.com",
            tasks=[
                WorkflowTask(name=make, task_reference_name="make", input_parameters={"size": "${workflow.input.size}"}),
                WorkflowTask(name=use, task_reference_name="use", input_parameters={"blob": "${make.output.blob}"}),
            ],
            output_parameters={"length": "${use.output.length}"},
        ),
        overwrite=True,
    )
    return make, use, workflow


def _time_one(executor: WorkflowExecutor, workflow: str, size: int) -> Tuple[float, int]:
    started = time.monotonic()
    workflow_id = executor.start_workflow(workflow, {"size": size}, version=1)
    done = executor.wait_for_workflow(workflow_id, timeout=120, poll_interval=0.02)
    return time.monotonic() - started, int(done.output.get("length") or 0)


def run(url: str, rounds: int, size: int, peer: bool) -> Dict[str, List[Tuple[float, int]]]:
    client = ConductorClient(Configuration(server_url=url, read_timeout=60))
    executor = WorkflowExecutor(client)
    tag = uuid.uuid4().hex[:8]
    ours_make, ours_use, ours_wf = _register(client, f"bp_ours_{tag}")
    peer_make, peer_use, peer_wf = _register(client, f"bp_peer_{tag}")

    @worker_task(ours_make, batch_poll_timeout=500)
    def make(size: int) -> Dict[str, Any]:
        return {"blob": "x" * size}

    @worker_task(ours_use, batch_poll_timeout=500)
    def use(blob: str) -> Dict[str, Any]:
        return {"length": len(blob)}

    results: Dict[str, List[Tuple[float, int]]] = {"ours": [], "peer": []}
    manager = TaskManager(client, [make, use])
    manager.start_polling()
    handle = None
    try:
        if peer:
            import peer as peer_tools

            python = peer_tools.ensure_peer_venv()
            handle = peer_tools.start_peer_workers(python, url, [peer_make, peer_use], mode="blob")
            time.sleep(4.0)  # the SDK's processes need a moment before their first poll
        for _ in range(rounds):
            results["ours"].append(_time_one(executor, ours_wf, size))
            if peer:
                results["peer"].append(_time_one(executor, peer_wf, size))
    finally:
        manager.stop_polling(timeout=10)
        if handle is not None:
            import peer as peer_tools

            peer_tools.stop(handle)
        client.close()
    return results


def _server(kind: str) -> Tuple[str, Callable[[], None]]:
    if kind == "local":
        from conductor_workers.testing import LocalConductor

        local = LocalConductor().start()
        return local.url, local.stop
    if kind == "real-pg":
        from support.conductor_oss import RealConductorServer
        from support.postgres import PostgresServer

        postgres = PostgresServer().start()
        server = RealConductorServer(postgres_jdbc_url=postgres.jdbc_url).start()

        def stop() -> None:
            server.stop()
            postgres.stop()

        return server.url, stop
    return kind, lambda: None  # a URL


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="local", help="local (default), real-pg, or a server URL")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size-mb", type=float, default=4.0)
    parser.add_argument("--no-peer", action="store_true")
    args = parser.parse_args(argv)
    size = int(args.size_mb * 1024 * 1024)
    url, stop = _server(args.server)
    try:
        results = run(url, args.rounds, size, peer=not args.no_peer)
    finally:
        stop()
    print(f"\n{args.size_mb:g} MB through make -> use on {args.server}, {args.rounds} round(s), median [min-max]\n")
    print("| client | seconds per workflow | `use` saw the blob (length right) |")
    print("|---|---|---|")
    for side, rows in results.items():
        if not rows:
            continue
        times = [t for t, _ in rows]
        right = sum(1 for _, length in rows if length == size)
        print(f"| {side} | {statistics.median(times):.2f} [{min(times):.2f}-{max(times):.2f}] | {right}/{len(rows)} |")
    if results["ours"] and results["peer"]:
        ratio = statistics.median(t for t, _ in results["ours"]) / statistics.median(t for t, _ in results["peer"])
        print(f"\nours/peer time: {ratio:.2f} (the peer's `use` ran on an empty input: it does not download)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
