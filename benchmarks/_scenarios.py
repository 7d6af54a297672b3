"""The scenarios of ``benchmarks/run.py``, one run of one side each: throughput (queued first, behind
the proxy's gate), the ceiling loop, pickup latency, idle cost, memory and import time.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent

sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(HERE))
sys.path.append(str(REPO_ROOT / "tests"))  # the test support package: support.proxy

import peer  # noqa: E402
from _measure import GroupSampler, percentile  # noqa: E402
from _servers import Server, start_our_workers  # noqa: E402
from support.proxy import LoopbackProxy  # noqa: E402

from conductor_workers import ConductorClient, Configuration, StartWorkflowRequest, TaskDef, WorkflowDef, WorkflowTask  # noqa: E402

CEILING_SCRIPT = HERE / "ceiling_loop.py"
OUR_IMPORT = "import conductor_workers; from conductor_workers import TaskManager, ConductorClient, worker_task"
PEER_IMPORT = "import conductor.client; from conductor.client.automator.task_handler import TaskHandler"


# --------------------------------------------------------------------------- the bench


class Bench:
    def __init__(self, server: Server, proxy: LoopbackProxy, tmp: Path, peer_python: Optional[Path]) -> None:
        self.server = server
        self.proxy = proxy
        self.proxy_url = proxy.url
        self.tmp = tmp
        self.peer_python = peer_python
        self.client = ConductorClient(Configuration(server_url=server.url, trust_env=False, read_timeout=60))
        self.ceiling_rate: Optional[float] = None  # tasks/s of the ceiling loop through the proxy

    # -- definitions and workflows

    def fresh(self, prefix: str, count: int = 1) -> List[str]:
        """Register ``count`` fresh task types, each with a one-task workflow named ``<type>_wf``."""
        tag = uuid.uuid4().hex[:10]
        types = [f"bench_{prefix}_{tag}_{i}" for i in range(count)]
        self.client.metadata.register_task_defs([
            TaskDef(name=t, retry_count=0, response_timeout_seconds=600, timeout_seconds=0,
                    owner_email="bench@example.com")
            for t in types
        ])
        for t in types:
            self.client.metadata.register_workflow_def(
                WorkflowDef(name=f"{t}_wf", version=1, owner_email="bench@example.com", timeout_seconds=0,
                            tasks=[WorkflowTask(name=t, task_reference_name="t", input_parameters={"i": "${workflow.input.i}"})]),
                overwrite=True,
            )
        return types

    def start_workflows(self, task_type: str, count: int, threads: int = 4) -> List[str]:
        name = f"{task_type}_wf"
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(
                lambda i: self.client.workflows.start(StartWorkflowRequest(name=name, version=1, input={"i": i})),
                range(count)))

    def all_done(self, task_type: str, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if not self.client.workflows.running(f"{task_type}_wf", 1):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)

    # -- clients

    def start_client(self, side: str, task_types: List[str], threads: int, mode: str,
                     record_file: Optional[Path] = None) -> peer.PeerHandle:
        log_path = self.tmp / f"{side}-{task_types[0]}.log"
        if side == "ours":
            env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
            return start_our_workers(self.proxy_url, task_types, threads=threads, mode=mode,
                                     record_file=record_file, log_path=log_path, env=env)
        if self.peer_python is None:
            raise RuntimeError("peer unavailable")
        return peer.start_peer_workers(self.peer_python, self.proxy_url, task_types, threads=threads, mode=mode,
                                       record_file=record_file, log_path=log_path, env={"PYTHONPATH": ""})

    def wait_ready(self, handle: peer.PeerHandle, task_types: List[str], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.proxy.wait_for_polls(task_types, 0.5):
            if handle.process.poll() is not None:
                raise RuntimeError(f"client exited with {handle.process.returncode}:\n{handle.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"client did not poll every task type within {timeout:.0f} s:\n{handle.log_text()[-3000:]}")

    # -- scenario bodies (one run of one side)

    def run_drain(self, side: str, n: int, threads: int, mode: str) -> Dict[str, Any]:
        """Queue n tasks behind the closed gate, open it, time the client draining them."""
        (task_type,) = self.fresh(f"{mode}_{side}")
        self.proxy.reset()
        self.proxy.gate(True)
        handle = self.start_client(side, [task_type], threads, mode)
        sampler = GroupSampler(handle.pgid)
        try:
            self.wait_ready(handle, [task_type])
            self.start_workflows(task_type, n)
            time.sleep(1.0)  # let the client settle into idle polling
            self.proxy.reset()
            cpu0 = sampler.sample()
            t_open = time.monotonic()
            self.proxy.gate(False)
            t_end = self.proxy.wait_for_updates(n, timeout=max(120.0, n / 5.0))
            cpu1 = sampler.sample()
            if t_end is None:
                raise RuntimeError(f"only {self.proxy.updates}/{n} tasks were updated in time")
            t0 = self.proxy.first_forwarded_poll or t_open
            with self.proxy._lock:
                requests = self.proxy.forwarded_at_update[n - 1]
            verified = self.all_done(task_type)
            elapsed = t_end - t0
            return {
                "n": n, "threads": threads, "elapsed_s": elapsed, "tasks_per_s": n / elapsed,
                "requests_per_task": requests / n, "cpu_s_per_1000": (cpu1 - cpu0) / n * 1000.0,
                "cpu_s": cpu1 - cpu0, "peak_rss_mb": sampler.peak_rss / 2**20,
                "processes": sampler.peak_processes, "verified_complete": verified,
            }
        finally:
            self.proxy.gate(False)
            sampler.stop()
            peer.stop(handle)

    def run_ceiling(self, n: int, via_proxy: bool) -> Dict[str, Any]:
        (task_type,) = self.fresh("ceiling")
        self.start_workflows(task_type, n)
        self.proxy.reset()
        url = self.proxy_url if via_proxy else self.server.url
        proc = subprocess.run(
            [sys.executable, str(CEILING_SCRIPT), "--server-url", url, "--task", task_type, "--count", str(n),
             "--threads", "10", "--timeout", str(max(120.0, n / 5.0))],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=max(180.0, n / 4.0),
        )
        if proc.returncode != 0:
            raise RuntimeError(f"ceiling loop failed ({proc.returncode}): {proc.stdout[-500:]} {proc.stderr[-2000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        out = {"n": n, "tasks_per_s": result["tasks_per_s"], "elapsed_s": result["elapsed"],
               "cpu_s_per_1000": result["cpu_s"] / n * 1000.0, "verified_complete": self.all_done(task_type)}
        if via_proxy:
            out["requests_per_task"] = self.proxy.forwarded / n
        return out

    def run_pickup(self, side: str, count: int) -> Dict[str, Any]:
        (task_type,) = self.fresh(f"pickup_{side}")
        record = self.tmp / f"record-{task_type}.txt"
        record.write_text("")
        self.proxy.reset()
        handle = self.start_client(side, [task_type], 10, "record", record_file=record)
        try:
            self.wait_ready(handle, [task_type])
            time.sleep(2.0)
            started: List[Tuple[str, float, float]] = []
            for i in range(count):
                t_call = time.time()
                wid = self.client.workflows.start(StartWorkflowRequest(name=f"{task_type}_wf", version=1, input={"i": i}))
                started.append((wid, t_call, time.time()))
                time.sleep(0.3)
            deadline = time.monotonic() + 20
            while len(record.read_text().splitlines()) < count and time.monotonic() < deadline:
                time.sleep(0.1)
            seen: Dict[str, float] = {}
            for line in record.read_text().splitlines():
                stamp, task_id = line.split()
                seen.setdefault(task_id, float(stamp))
            latencies, from_call = [], []
            for wid, t_call, t_ret in started:
                task_id = self.client.workflows.get(wid).tasks[0].task_id
                if task_id in seen:
                    latencies.append((seen[task_id] - t_ret) * 1000.0)
                    from_call.append((seen[task_id] - t_call) * 1000.0)
            if len(latencies) < count:
                raise RuntimeError(f"only {len(latencies)}/{count} tasks were picked up")
            return {"count": count, "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
                    "p50_from_call_ms": percentile(from_call, 50), "latencies_ms": latencies}
        finally:
            peer.stop(handle)

    def run_idle_memory(self, side: str, idle_s: float, per_type: int) -> Dict[str, Any]:
        types = self.fresh(f"idle_{side}", 10)
        self.proxy.reset()
        handle = self.start_client(side, types, 10, "noop")
        sampler = GroupSampler(handle.pgid, interval=0.1)
        try:
            self.wait_ready(handle, types)
            time.sleep(3.0)  # every worker process/thread up and idle
            self.proxy.reset()
            cpu0 = sampler.sample()
            t0 = time.monotonic()
            time.sleep(idle_s)
            cpu1 = sampler.sample()
            window = time.monotonic() - t0
            requests = self.proxy.forwarded
            idle_rss = sampler.rss
            # memory: let every type process a few tasks
            self.proxy.reset()
            for t in types:
                self.start_workflows(t, per_type, threads=2)
            if self.proxy.wait_for_updates(10 * per_type, timeout=120) is None:
                raise RuntimeError(f"only {self.proxy.updates}/{10 * per_type} tasks were updated in time")
            time.sleep(0.5)
            sampler.sample()
            return {
                "idle_window_s": window,
                "idle_requests_per_s": requests / window,
                "idle_requests_per_s_per_worker": requests / window / 10,
                "idle_cpu_pct": (cpu1 - cpu0) / window * 100.0,
                "idle_cpu_pct_per_worker": (cpu1 - cpu0) / window * 100.0 / 10,
                "idle_rss_mb": idle_rss / 2**20,
                "peak_rss_mb": sampler.peak_rss / 2**20,
                "processes": sampler.peak_processes,
                "tasks_processed": 10 * per_type,
            }
        finally:
            sampler.stop()
            peer.stop(handle)


# --------------------------------------------------------------------------- import time


def _time_python(python: str, code: str) -> float:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if code != "pass" and python == sys.executable:
        env["PYTHONPATH"] = str(REPO_ROOT)
    started = time.perf_counter()
    subprocess.run([python, "-c", code], check=True, env=env, cwd=str(REPO_ROOT),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def import_times(peer_python: Optional[Path], repeats: int = 7) -> Dict[str, Any]:
    samples: Dict[str, List[float]] = {"ours": [], "ours_base": [], "peer": [], "peer_base": []}
    for _ in range(repeats):
        samples["ours_base"].append(_time_python(sys.executable, "pass"))
        samples["ours"].append(_time_python(sys.executable, OUR_IMPORT))
        if peer_python is not None:
            samples["peer_base"].append(_time_python(str(peer_python), "pass"))
            samples["peer"].append(_time_python(str(peer_python), PEER_IMPORT))
    out: Dict[str, Any] = {"raw": samples, "repeats": repeats}
    out["ours"] = statistics.median(samples["ours"]) - statistics.median(samples["ours_base"])
    out["peer"] = (statistics.median(samples["peer"]) - statistics.median(samples["peer_base"])) if peer_python else None
    return out
