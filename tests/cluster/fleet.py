"""Start and watch a worker fleet: ``python -m conductor_workers run --processes N
tests.cluster.fleet_workers:workers`` against a server URL, in its own process group.

* :class:`Fleet` starts the command (with ``--health-port``), waits until its ``/health`` says every
  process polls, gives the children's pids, SIGKILLs one, and stops it all with SIGTERM (checking the
  exit code and that nothing of the group is left).
* :func:`read_executions` reads what the workers recorded (``fleet_workers``' ``exec-<pid>.jsonl``).
* :func:`define` registers the task definitions and the two-task workflow the fleet's workers run.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any, Dict, List, Optional, Sequence, Tuple

from conductor_workers import ConductorClient, TaskDef, WorkflowDef, WorkflowExecutor, WorkflowTask

ROOT = Path(__file__).resolve().parents[2]
TARGET = "tests.cluster.fleet_workers:workers"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def group_pids(pgid: int) -> List[int]:
    """Live (non-zombie) processes of process group ``pgid``, from ``/proc``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return sorted(pids)


def define(client: ConductorClient, prefix: str, response_timeout: int = 10) -> Tuple[str, List[str]]:
    """Task definitions ``<prefix>_a`` and ``<prefix>_b`` (retried at once after ``response_timeout``
    seconds without an answer) and the workflow ``<prefix>_wf`` running them one after the other."""
    names = [f"{prefix}_a", f"{prefix}_b"]
    client.metadata.register_task_defs([
        TaskDef(name=name, retry_count=5, retry_logic="FIXED", retry_delay_seconds=0,
                response_timeout_seconds=response_timeout, timeout_seconds=0)
        for name in names
    ])
    WorkflowExecutor(client).register_workflow(WorkflowDef(
        name=f"{prefix}_wf",
        tasks=[
            WorkflowTask(name=names[0], task_reference_name="a", input_parameters={"n": "${workflow.input.n}"}),
            WorkflowTask(name=names[1], task_reference_name="b",
                         input_parameters={"n": "${a.output.n}", "a": "${a.output.a}"}),
        ],
        output_parameters={"n": "${b.output.n}", "b": "${b.output.b}"},
    ), overwrite=True)
    return f"{prefix}_wf", names


def read_executions(directory: Path) -> List[Dict[str, Any]]:
    """Every execution the fleet recorded (a killed process's last line may be cut: it is skipped)."""
    found: List[Dict[str, Any]] = []
    for path in sorted(directory.glob("exec-*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


class Fleet:
    """``conductor-workers run --processes N`` for the fleet's workers, in a new session."""

    def __init__(self, server_url: str, work_dir: Path, tasks: Sequence[str], *, processes: int = 2,
                 concurrency: Optional[int] = None, sleep_ms: int = 20, control: Optional[Path] = None,
                 extra_env: Optional[Dict[str, str]] = None, extra_args: Sequence[str] = ()) -> None:
        self.server_url = server_url
        self.work_dir = work_dir
        self.tasks = list(tasks)
        self.processes = processes
        self.health_port = free_port()
        self.control = control
        self.log_path = work_dir / "fleet.log"
        args = [sys.executable, "-m", "conductor_workers", "run", TARGET, "--server-url", server_url,
                "--processes", str(processes), "--health-port", str(self.health_port),
                "--shutdown-timeout", "20", "--log-level", "info", *extra_args]
        if concurrency is not None:
            args += ["--concurrency", str(concurrency)]
        self.command = args
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("CONDUCTOR_WORKER", "CONDUCTOR_AUTH"))}
        env.pop("CONDUCTOR_SERVER_URL", None)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env.update({"CLUSTER_FLEET_TASKS": ",".join(self.tasks), "CLUSTER_FLEET_DIR": str(work_dir),
                    "CLUSTER_FLEET_SLEEP_MS": str(sleep_ms), "PYTHONUNBUFFERED": "1"})
        if control is not None:
            env["CLUSTER_FLEET_CONTROL"] = str(control)
        env.update(extra_env or {})
        self.env = env
        self.proc: Optional["subprocess.Popen[bytes]"] = None
        self._log: Optional[IO[bytes]] = None

    # -- lifecycle

    def start(self, timeout: float = 60.0) -> "Fleet":
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_healthy(timeout)
        return self

    def health(self) -> Tuple[int, Dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/health", timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except (OSError, ValueError):
            return 0, {}

    def wait_healthy(self, timeout: float, exclude: Sequence[int] = ()) -> List[int]:
        """Wait until ``/health`` is 200 with every process healthy (none of them in ``exclude``);
        the children's pids."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"the fleet exited with {self.proc.returncode}:\n{self.log_tail()}")
            status, report = self.health()
            pids = [entry.get("pid") for entry in report.get("processes", []) if entry.get("healthy")]
            if status == 200 and len(pids) == self.processes and not set(pids) & set(exclude):
                return [int(pid) for pid in pids]
            if time.monotonic() > deadline:
                raise AssertionError(f"fleet not healthy after {timeout:.0f} s: {status} {report}\n{self.log_tail()}")
            time.sleep(0.2)

    def child_pids(self) -> List[int]:
        _, report = self.health()
        return [int(entry["pid"]) for entry in report.get("processes", []) if entry.get("pid")]

    def kill_child(self, index: int = 0) -> int:
        """SIGKILL worker process ``index`` (the supervisor restarts it); its pid."""
        _, report = self.health()
        entry = [e for e in report["processes"] if e["index"] == index][0]
        os.kill(int(entry["pid"]), signal.SIGKILL)
        return int(entry["pid"])

    def cpu_seconds(self) -> float:
        """utime + stime of the fleet's live processes (supervisor and workers), from ``/proc``."""
        assert self.proc is not None
        ticks = 0
        for pid in group_pids(self.proc.pid):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def restarts(self) -> int:
        _, report = self.health()
        return sum(int(entry.get("restarts") or 0) for entry in report.get("processes", []))

    def stop(self, timeout: float = 60.0) -> Optional[int]:
        """SIGTERM the supervisor (it drains its children); its exit code. Kills the group if it hangs."""
        proc, self.proc = self.proc, None
        code: Optional[int] = None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            deadline = time.monotonic() + 10
            while group_pids(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            left = group_pids(proc.pid)
            if left:
                os.killpg(proc.pid, signal.SIGKILL)
                raise AssertionError(f"fleet processes left after stop: {left}")
        log, self._log = self._log, None
        if log is not None:
            log.close()
        return code

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> "Fleet":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_workflows(client: ConductorClient, workflow: str, count: int, first: int = 0,
                    threads: int = 4) -> List[str]:
    """Start ``count`` workflows (input ``{"n": first..first+count-1}``) from ``threads`` threads; their ids."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda n: client.workflows.start_by_name(workflow, {"n": n}),
                             range(first, first + count)))


def wait_until_done(client: ConductorClient, workflow: str, timeout: float, poll: float = 0.5) -> float:
    """Wait until no workflow of ``workflow`` is running; ``time.time()`` when that was seen.
    AssertionError with the number still running at ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        running = client.workflows.running(workflow)
        if not running:
            return time.time()
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(running)} workflow(s) of {workflow} still running after {timeout:.0f} s: "
                                 f"{running[:5]}")
        time.sleep(poll)


def wait_for_executions(directory: Path, ref: str, count: int, timeout: float) -> None:
    """Wait until the fleet recorded ``count`` executions of reference ``ref``."""
    deadline = time.monotonic() + timeout
    while sum(1 for entry in read_executions(directory) if entry["ref"] == ref) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {count} executions of {ref!r} after {timeout:.0f} s")
        time.sleep(0.2)
