"""Benchmarks: conductor_workers (ours) against the official Python SDK (the peer), side by side.

    python benchmarks/run.py [--server local|real|URL] [--quick] [--rounds N] [--json out.json]

Each scenario runs ours and the peer alternately (ours, peer, ours, peer, ... for ``--rounds``
rounds) and reports the median and the spread (min–max) of the rounds, as a Markdown table (ours,
peer, ratio ours/peer, target) on stdout and as JSON (``--json``; default
``benchmarks/results/<server>-<time>.json``).

How things are measured (the same way for both sides):

* Both clients run in their OWN process group: ours is ``benchmarks/our_worker.py`` (TaskManager +
  ``@worker_task``), the peer is ``benchmarks/peer_worker.py`` in the peer venv (conductor-python
  2.0.0). Client CPU = utime+stime of every process of the group, from ``/proc`` (sampled every
  50 ms and right at the edges of a measurement window; a process that appears later is added, one
  that exits keeps its last value); RSS = the sum of VmRSS over the group, peak = the highest sum
  sampled.
* The server runs in its own process too: ``python -m conductor_workers server`` (``local``), the
  real conductor-oss server from ``tests/real_server.py`` (``real``), or a given URL.
* Every client talks to the server through ``benchmarks/_proxy.py``, a counting HTTP proxy on
  loopback; the benchmark itself registers definitions and starts workflows directly, so only the
  client's requests are counted.
* Task and workflow names are fresh per run (uuid).
* Throughput (scenarios 1 and 3) QUEUES FIRST: the client is started and idles while the proxy's
  gate answers its polls with "nothing" (not counted); the N workflows are started; then the gate
  opens. Time = from the first poll forwarded after that to the N-th task update the proxy sees;
  requests/task = requests forwarded in that window / N; CPU/1000 tasks = client CPU in that window.
  Completion is then confirmed on the server (no running workflow of that name left).
* The ceiling (scenario 2) is ``benchmarks/ceiling_loop.py`` (requests, 10 threads, one Session
  each, trust_env=False, batch-poll + update-v2 chaining) on the same queued-first work, run both
  through the proxy and directly, which shows what the proxy costs.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(HERE))

import peer  # noqa: E402
from _proxy import CountingProxy  # noqa: E402

from conductor_workers import (  # noqa: E402
    ConductorClient,
    Configuration,
    StartWorkflowRequest,
    TaskDef,
    WorkflowDef,
    WorkflowTask,
)

SCENARIOS = ("throughput", "ceiling", "io_bound", "pickup_latency", "idle", "memory", "import_time")
SIDES = ("ours", "peer")
OUR_WORKER_SCRIPT = HERE / "our_worker.py"
CEILING_SCRIPT = HERE / "ceiling_loop.py"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

OUR_IMPORT = "import conductor_workers; from conductor_workers import TaskManager, ConductorClient, worker_task"
PEER_IMPORT = "import conductor.client; from conductor.client.automator.task_handler import TaskHandler"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- /proc sampling


class GroupSampler:
    """CPU seconds and RSS of every process in one process group, from ``/proc``."""

    def __init__(self, pgid: int, interval: float = 0.05) -> None:
        self.pgid = pgid
        self.interval = interval
        self._cpu_by_pid: Dict[int, float] = {}
        self._lock = threading.Lock()
        self.rss = 0
        self.peak_rss = 0
        self.processes = 0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> float:
        """Read /proc now; the group's CPU seconds so far."""
        rss = 0
        count = 0
        seen: Dict[int, float] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as fh:
                    stat = fh.read()
            except OSError:
                continue
            fields = stat[stat.rindex(b")") + 2:].split()
            if int(fields[2]) != self.pgid or fields[0] == b"Z":
                continue
            seen[int(entry.name)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
            rss += int(fields[21]) * PAGE
            count += 1
        with self._lock:
            self._cpu_by_pid.update(seen)
            self.rss = rss
            self.processes = count
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_processes = max(self.peak_processes, count)
            return sum(self._cpu_by_pid.values())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------- statistics


def summary(values: Sequence[Optional[float]]) -> Optional[Dict[str, Any]]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "values": list(values)}


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear interpolation between closest ranks."""
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    k = (len(data) - 1) * pct / 100.0
    lo = int(k)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


# --------------------------------------------------------------------------- servers


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(base_url + "/health", timeout=2) as response:
            return response.status == 200
    except Exception:  # noqa: BLE001
        return False


class Server:
    """The server under the benchmark: ``url`` ends in /api, ``base_url`` does not."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self.version = ""
        self._proc: Optional[subprocess.Popen] = None
        self._real: Any = None
        self._log = None
        if kind == "local":
            port = _free_port()
            self.base_url = f"http://127.0.0.1:{port}"
            self._log = open(tmp / "local-server.log", "wb")
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "conductor_workers", "server", "--port", str(port), "--log-level", "warning"],
                stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )
            deadline = time.monotonic() + 30
            while not _healthy(self.base_url):
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"LocalConductor did not start; see {tmp / 'local-server.log'}")
                time.sleep(0.1)
            from conductor_workers import __version__

            self.version = f"LocalConductor (conductor_workers {__version__})"
        elif kind == "real":
            sys.path.insert(0, str(REPO_ROOT / "tests"))
            from real_server import RealConductorServer  # type: ignore[import-not-found]

            self._real = RealConductorServer()
            self._real.start()
            self.base_url = self._real.base_url
            self.version = f"conductor-oss {self._real.version}"
        else:
            url = kind.rstrip("/")
            self.base_url = url[: -len("/api")] if url.endswith("/api") else url
            self.version = f"external {self.base_url}"
        self.url = self.base_url + "/api"
        parsed = urllib.parse.urlsplit(self.base_url)
        if parsed.scheme != "http":
            raise SystemExit("the counting proxy only speaks plain http; give an http:// URL")
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 80

    def stop(self) -> None:
        if self._proc is not None:
            try:
                os.killpg(self._proc.pid, signal.SIGTERM)
                self._proc.wait(15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self._proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self._proc.wait(5)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._real is not None:
            self._real.stop()
            self._real = None


def start_our_workers(server_url: str, task_types: List[str], *, threads: int, mode: str,
                      record_file: Optional[Path], log_path: Path, env: Dict[str, str]) -> peer.PeerHandle:
    """``our_worker.py`` in its own session, like :func:`peer.start_peer_workers` does the peer's.

    Returns a :class:`peer.PeerHandle`, so :func:`peer.stop` stops both sides the same way.
    """
    cmd = [sys.executable, str(OUR_WORKER_SCRIPT), "--server-url", server_url, "--task", ",".join(task_types),
           "--threads", str(threads), "--mode", mode]
    if record_file is not None:
        cmd += ["--record-file", str(record_file)]
    log_file = open(log_path, "ab")
    try:
        process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                   env=dict(os.environ, PYTHONUNBUFFERED="1", **env), start_new_session=True)
    except BaseException:
        log_file.close()
        raise
    return peer.PeerHandle(process=process, pgid=process.pid, command=cmd, log_path=log_path, _log_file=log_file)


# --------------------------------------------------------------------------- the bench


class Bench:
    def __init__(self, server: Server, proxy: CountingProxy, tmp: Path, peer_python: Optional[Path]) -> None:
        self.server = server
        self.proxy = proxy
        self.proxy_url = f"http://127.0.0.1:{proxy.port}/api"
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


# --------------------------------------------------------------------------- report


def _fmt(stat: Optional[Dict[str, Any]], digits: int = 2, scale: float = 1.0) -> str:
    if stat is None:
        return "–"
    med, lo, hi = stat["median"] * scale, stat["min"] * scale, stat["max"] * scale
    if lo == hi:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} [{lo:.{digits}f}–{hi:.{digits}f}]"


def _metric(results: Dict[str, Any], scenario: str, side: str, key: str) -> Optional[Dict[str, Any]]:
    runs = results["scenarios"].get(scenario, {}).get(side)
    if not isinstance(runs, list):
        return None
    return summary([r.get(key) if isinstance(r, dict) else None for r in runs])


def _peer_cell(results: Dict[str, Any], scenario: str, stat: Optional[Dict[str, Any]], digits: int, scale: float = 1.0) -> str:
    if stat is not None:
        return _fmt(stat, digits, scale)
    sc = results["scenarios"].get(scenario, {})
    why = sc.get("peer_unavailable") or results["meta"].get("peer_unavailable")
    if why:
        return f"unavailable: {why}"
    errors = [str(r["error"]) for r in sc.get("peer", []) if isinstance(r, dict) and r.get("error")]
    return f"failed: {errors[0][:80]}" if errors else "–"


def build_rows(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    rows: List[Dict[str, Any]] = []
    local = results["meta"]["server_kind"] == "local"

    def row(label: str, scenario: str, key: str, digits: int, target: str,
            check: Optional[Callable[[float, Optional[float]], bool]] = None, scale: float = 1.0,
            peer_key: Optional[str] = None, ours_side: str = "ours", ratio: bool = True) -> None:
        ours = _metric(results, scenario, ours_side, key)
        theirs = _metric(results, scenario, "peer", peer_key or key)
        r = None
        if ratio and ours and theirs and theirs["median"]:
            r = ours["median"] / theirs["median"]
        met = None
        if check is not None and ours is not None:
            met = check(ours["median"] * scale, theirs["median"] * scale if theirs else None)
        rows.append({
            "metric": label, "scenario": scenario, "key": key,
            "ours": _fmt(ours, digits, scale), "peer": _peer_cell(results, scenario, theirs, digits, scale),
            "ratio": f"{r:.2f}" if r is not None else "–", "target": target,
            "met": "–" if met is None else ("yes" if met else "**no**"),
            "ours_median": ours["median"] * scale if ours else None,
            "peer_median": theirs["median"] * scale if theirs else None,
        })

    ceiling = _metric(results, "ceiling", "via_proxy", "tasks_per_s")
    ceil_med = ceiling["median"] if ceiling else None
    row("1. Throughput (tasks/s)", "throughput", "tasks_per_s", 1, "≥ peer and ≥ 90 % of ceiling",
        lambda o, p: (p is None or o >= p) and (ceil_med is None or o >= 0.9 * ceil_med))
    row("1. HTTP requests per task", "throughput", "requests_per_task", 3, "≤ 1.05 × peer",
        lambda o, p: p is None or o <= 1.05 * p)
    row("1. Client CPU s per 1000 tasks", "throughput", "cpu_s_per_1000", 2, "≤ 0.5 × peer",
        lambda o, p: p is None or o <= 0.5 * p)
    row("1. Peak client RSS while draining (MB)", "throughput", "peak_rss_mb", 1, "(info)")
    # 2. ceiling
    thr = results["scenarios"].get("throughput", {})
    pct = {}
    for side in SIDES:
        runs = thr.get(side)
        ceils = results["scenarios"].get("ceiling", {}).get("via_proxy")
        if isinstance(runs, list) and isinstance(ceils, list):
            pct[side] = summary([
                (r["tasks_per_s"] / c["tasks_per_s"] * 100.0) if ("tasks_per_s" in r and "tasks_per_s" in c) else None
                for r, c in zip(runs, ceils)
            ])
    direct = _metric(results, "ceiling", "direct", "tasks_per_s")
    via_req = _metric(results, "ceiling", "via_proxy", "requests_per_task")
    rows.append({"metric": "2. Ceiling: requests loop via proxy (tasks/s)", "scenario": "ceiling", "key": "tasks_per_s",
                 "ours": _fmt(ceiling, 1), "peer": "(same loop)", "ratio": "–",
                 "target": f"direct, no proxy: {_fmt(direct, 1)}; loop's req/task {_fmt(via_req, 3)}", "met": "–"})
    ours_pct = pct.get("ours")
    rows.append({"metric": "2. Throughput as % of ceiling (same round)", "scenario": "ceiling", "key": "pct_of_ceiling",
                 "ours": _fmt(ours_pct, 1), "peer": _peer_cell(results, "throughput", pct.get("peer"), 1),
                 "ratio": "–", "target": "≥ 90 %",
                 "met": "–" if ours_pct is None else ("yes" if ours_pct["median"] >= 90 else "**no**")})
    # 3. I/O bound
    io = results["scenarios"].get("io_bound", {})
    bound = io.get("bound_s")
    row("3. I/O-bound wall time (s)", "io_bound", "elapsed_s", 2,
        f"≤ 1.2 × max(ideal {io.get('ideal_s', 0):.2f} s, N/ceiling) = {1.2 * bound:.2f} s" if bound else "≤ 1.2 × ideal",
        (lambda o, p: o <= 1.2 * bound) if bound else None)
    row("3. I/O-bound client CPU s per 1000 tasks", "io_bound", "cpu_s_per_1000", 2, "(info)")
    # 4. pickup latency
    row("4. Pickup latency p50 (ms)", "pickup_latency", "p50_ms", 1,
        "≤ 5 ms (local)" if local else "beside peer (real server: ~100 ms queue check)",
        (lambda o, p: o <= 5.0) if local else None)
    row("4. Pickup latency p99 (ms)", "pickup_latency", "p99_ms", 1, "(info)")
    # 5. idle
    row("5. Idle requests/s per worker", "idle", "idle_requests_per_s_per_worker", 2, "≤ 1 req/s",
        lambda o, p: o <= 1.0)
    row("5. Idle CPU % of a core per worker", "idle", "idle_cpu_pct_per_worker", 3, "≤ 0.1 %",
        lambda o, p: o <= 0.1)
    # 6. memory
    row("6. Peak RSS, 10 types × 10 threads (MB)", "memory", "peak_rss_mb", 1, "≤ 40 MB", lambda o, p: o <= 40.0)
    row("6. Processes in the client", "memory", "processes", 0, "(info)")
    # 7. import
    imp = results["scenarios"].get("import_time", {})
    o, p = imp.get("ours"), imp.get("peer")
    rows.append({"metric": "7. Import time (s, minus bare interpreter)", "scenario": "import_time", "key": "import_s",
                 "ours": f"{o:.3f}" if o is not None else "–",
                 "peer": f"{p:.3f}" if p is not None else _peer_cell(results, "import_time", None, 3),
                 "ratio": f"{o / p:.2f}" if (o is not None and p) else "–", "target": "≤ 0.2 s",
                 "met": "–" if o is None else ("yes" if o <= 0.2 else "**no**")})
    return rows


def markdown(results: Dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        f"Server: {meta['server']} · rounds: {meta['rounds']} · quick: {meta['quick']} · nproc {meta['nproc']} · "
        f"load before/after {meta['load_before']} / {meta.get('load_after')} · peer: {meta['peer']}",
        "",
        "| metric | ours (median [min–max]) | peer (median [min–max]) | ours/peer | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for r in build_rows(results):
        lines.append(f"| {r['metric']} | {r['ours']} | {r['peer']} | {r['ratio']} | {r['target']} | {r['met']} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def _attempt(fn: Callable[[], Dict[str, Any]], what: str) -> Dict[str, Any]:
    started = time.monotonic()
    try:
        result = fn()
        log(f"{what}: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in result.items() if not isinstance(v, (list, dict))))
        return result
    except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others
        log(f"{what}: FAILED {type(exc).__name__}: {exc}")
        traceback.print_exc(file=sys.stderr)
        return {"error": f"{type(exc).__name__}: {exc}", "seconds": time.monotonic() - started}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="local", help="local (default), real, or a server URL")
    parser.add_argument("--quick", action="store_true", help="1 round, tiny N, 3 s idle (a smoke run)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per scenario (default 3; quick 1)")
    parser.add_argument("--json", default=None, help="write results here (default benchmarks/results/...)")
    parser.add_argument("--n", type=int, default=None, help="tasks for throughput/ceiling (default 3000; quick 200)")
    parser.add_argument("--io-n", type=int, default=None, help="tasks for the I/O-bound run (default 2000; quick 200)")
    parser.add_argument("--idle-seconds", type=float, default=None, help="idle window (default 30; quick 3)")
    parser.add_argument("--pickups", type=int, default=None, help="workflows for pickup latency (default 20; quick 5)")
    parser.add_argument("--no-peer", action="store_true", help="run our side only")
    parser.add_argument("--only", default=None, help="comma-separated scenarios to run (others are left empty)")
    args = parser.parse_args(argv)
    quick = args.quick
    rounds = args.rounds or (1 if quick else 3)
    n = args.n or (200 if quick else 3000)
    io_n = args.io_n or (200 if quick else 2000)
    idle_s = args.idle_seconds if args.idle_seconds is not None else (3.0 if quick else 30.0)
    pickups = args.pickups or (5 if quick else 20)
    per_type = 3 if quick else 10
    only = set(args.only.split(",")) if args.only else set(SCENARIOS)

    results: Dict[str, Any] = {
        "meta": {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "server_kind": args.server if args.server in ("local", "real") else "url",
            "rounds": rounds, "quick": quick, "nproc": os.cpu_count(),
            "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "python": platform.python_version(), "platform": platform.platform(),
            "params": {"n": n, "io_n": io_n, "idle_s": idle_s, "pickups": pickups, "memory_tasks_per_type": per_type},
            "method": {
                "throughput": "queued first behind the proxy's gate; from the first poll forwarded after the gate "
                              "opens to the N-th update at the proxy",
                "cpu": "utime+stime of every process in the client's process group (/proc)",
                "rss": "sum of RSS over the client's process group, sampled every 50-100 ms; peak of the sums",
                "requests": "counted at benchmarks/_proxy.py (client requests only)",
            },
        },
        "scenarios": {s: {} for s in SCENARIOS},
    }

    # peer venv
    peer_python: Optional[Path] = None
    if args.no_peer:
        results["meta"]["peer_unavailable"] = "--no-peer"
    else:
        try:
            # A machine without PyPI makes pip fail; do not let it eat a quick run's time budget.
            peer_python = peer.ensure_peer_venv(pip_timeout=120.0 if quick else 600.0)
        except Exception as exc:  # noqa: BLE001
            results["meta"]["peer_unavailable"] = f"peer venv could not be built ({type(exc).__name__}: {str(exc).splitlines()[0]})"
            log(results["meta"]["peer_unavailable"])
    results["meta"]["peer"] = (f"{peer.PEER_DISTRIBUTION}=={peer.PEER_VERSION}" if peer_python
                               else results["meta"]["peer_unavailable"])
    sides = [s for s in SIDES if s == "ours" or peer_python is not None]

    tmp = Path(tempfile.mkdtemp(prefix="cw-bench-"))
    started = time.monotonic()
    log(f"starting server {args.server} (work dir {tmp})")
    server = Server(args.server, tmp)
    results["meta"]["server"] = server.version
    proxy = CountingProxy(server.host, server.port)
    bench = Bench(server, proxy, tmp, peer_python)
    sc = results["scenarios"]
    try:
        if "import_time" in only:
            log("7. import time")
            sc["import_time"] = import_times(peer_python, repeats=3 if quick else 7)
            log(f"import: ours {sc['import_time']['ours']:.3f} s, peer {sc['import_time']['peer']}")

        if "throughput" in only or "ceiling" in only:
            for side in sides:
                sc["throughput"][side] = []
            sc["ceiling"] = {"via_proxy": [], "direct": []}
            for r in range(rounds):
                if "throughput" in only:
                    for side in sides:
                        sc["throughput"][side].append(
                            _attempt(lambda: bench.run_drain(side, n, 10, "noop"), f"1. throughput {side} round {r + 1}"))
                sc["ceiling"]["via_proxy"].append(_attempt(lambda: bench.run_ceiling(n, True), f"2. ceiling via proxy round {r + 1}"))
                sc["ceiling"]["direct"].append(_attempt(lambda: bench.run_ceiling(n, False), f"2. ceiling direct round {r + 1}"))
            rates = [c["tasks_per_s"] for c in sc["ceiling"]["via_proxy"] if "tasks_per_s" in c]
            bench.ceiling_rate = statistics.median(rates) if rates else None

        if "io_bound" in only:
            ideal = io_n * 0.05 / 50
            sc["io_bound"] = {"n": io_n, "concurrency": 50, "ideal_s": ideal,
                              "ceiling_tasks_per_s": bench.ceiling_rate,
                              "bound_s": max(ideal, io_n / bench.ceiling_rate) if bench.ceiling_rate else ideal}
            for side in sides:
                sc["io_bound"][side] = []
            for r in range(rounds):
                for side in sides:
                    sc["io_bound"][side].append(
                        _attempt(lambda: bench.run_drain(side, io_n, 50, "sleep50"), f"3. io-bound {side} round {r + 1}"))

        if "pickup_latency" in only:
            for side in sides:
                sc["pickup_latency"][side] = []
            for r in range(rounds):
                for side in sides:
                    sc["pickup_latency"][side].append(
                        _attempt(lambda: bench.run_pickup(side, pickups), f"4. pickup {side} round {r + 1}"))

        if "idle" in only or "memory" in only:
            for side in sides:
                sc["idle"][side] = []
            for r in range(rounds):
                for side in sides:
                    sc["idle"][side].append(
                        _attempt(lambda: bench.run_idle_memory(side, idle_s, per_type), f"5+6. idle+memory {side} round {r + 1}"))
            # the memory figures come from the same runs (idle first, then a few tasks per type)
            sc["memory"] = {side: sc["idle"][side] for side in sides}
            sc["memory"]["note"] = "same client runs as 'idle': 10 types x 10 threads idle, then tasks per type"
    finally:
        proxy.close()
        bench.client.close()
        server.stop()

    if peer_python is None:
        for s in SCENARIOS:
            sc[s]["peer_unavailable"] = results["meta"]["peer_unavailable"]
    results["meta"]["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results["meta"]["seconds"] = time.monotonic() - started
    results["rows"] = build_rows(results)
    table = markdown(results)
    print(table)

    out = Path(args.json) if args.json else HERE / "results" / (
        f"{results['meta']['server_kind']}-{datetime.datetime.now():%Y%m%d-%H%M%S}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    log(f"wrote {out} ({results['meta']['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
