"""``conductor-workers run`` under its supervisor: a late server, crash loops, the final metrics report
and process recycling (``--max-tasks-per-child``, ``--max-memory-per-child``), as subprocesses
against LocalConductor. The helpers are ``test_run``'s."""
from __future__ import annotations

import collections
import os
import signal
import time
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from support.waiting import wait_until

from conductor_workers import WorkflowStatus
from conductor_workers.testing import LocalConductor

from test_run import _env, alive, free_port, health, run_cli, start_cli, wait_for_children, workflows
from test_run import procs, server, task, workdir  # noqa: F401 - fixtures

# A worker that writes "task_id pid" to a file for each execution it finishes: the executions per task
# id, as the workers saw them. ``grow`` megabytes are kept for good (a worker that leaks).
COUNTING = '''
import os, time
from conductor_workers import Task, worker_task

LEAK = []

@worker_task("{task}", concurrency=2, poll_interval=20, register_task_def=True)
def echo(task: Task) -> dict:
    time.sleep(float(task.input_data.get("sleep") or 0))
    LEAK.append(bytearray(int(os.environ.get("GROW_MB", "0")) * 1024 * 1024))
    with open({log!r}, "a") as out:
        out.write(f"{{task.task_id}} {{os.getpid()}}\\n")
    return {{"n": task.input_data["n"], "pid": os.getpid()}}
'''

# Children (but not the supervisor, which imports the module first) die while importing it.
CRASHING = '''
import multiprocessing, os
from conductor_workers import worker_task

if multiprocessing.parent_process() is not None:
    os._exit(7)

@worker_task("{task}")
def echo() -> None:
    return None
'''


@pytest.fixture
def executions(workdir: Path, task: str) -> Path:
    log = workdir / "executions.log"
    (workdir / "counting.py").write_text(COUNTING.format(task=task, log=str(log)))
    return log


def executed(log: Path) -> Dict[str, List[int]]:
    """Per task id, the pids of the processes that executed it."""
    seen: Dict[str, List[int]] = collections.defaultdict(list)
    if log.exists():
        for line in log.read_text().splitlines():
            task_id, pid = line.split()
            seen[task_id].append(int(pid))
    return seen


def scrape_completed(port: int, task: str) -> Optional[float]:
    parser = pytest.importorskip("prometheus_client.parser")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    return sum(sample.value for family in parser.text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "task_execute_total" and sample.labels.get("taskType") == task
               and sample.labels.get("status") == "COMPLETED")


def stop(proc) -> str:  # type: ignore[no-untyped-def]
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    return str(stderr)


# -- start-up that waits for the server ------------------------------------------------------------


def test_run_waits_for_a_server_that_comes_up_later(workdir, task, executions, procs) -> None:
    """register_task_def workers, the server unreachable for 10 s: neither ``run`` nor ``run --processes
    2`` exits, /health says 503 meanwhile, and once the server is up every workflow completes."""
    port, single_health, fleet_health = free_port(), free_port(), free_port()
    url = f"http://127.0.0.1:{port}/api"
    single = start_cli(procs, workdir, "counting", "--server-url", url, "--health-port", str(single_health))
    fleet = start_cli(procs, workdir, "counting", "--server-url", url, "--processes", "2",
                      "--health-port", str(fleet_health))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert single.poll() is None and fleet.poll() is None, (single.returncode, fleet.returncode)
        time.sleep(0.5)
    assert health(single_health)[0] == 503
    status, report = health(fleet_health)
    assert status == 503 and sum(entry["restarts"] for entry in report["processes"]) == 0, report
    with LocalConductor(port=port) as server:
        executor, ids = workflows(server, task, 12)
        results = [executor.wait_for_workflow(wf, timeout=60) for wf in ids]
        assert [wf.status for wf in results] == [WorkflowStatus.COMPLETED] * len(ids)
        wait_until(lambda: health(single_health)[0] == 200 and health(fleet_health)[0] == 200, timeout=20)
        for proc in (single, fleet):
            stderr = stop(proc)
            assert proc.returncode == 0, stderr
            assert "Traceback" not in stderr, stderr
            # the wait was logged: run's own retry, or (since start_polling tolerates an unreachable server)
            # the registration that waits for it
            assert "will retry" in stderr or "registered as soon as the server is reached" in stderr, stderr


# -- crash loops -----------------------------------------------------------------------------------


def test_a_crash_looping_supervisor_exits_1_on_sigterm(workdir, task, procs) -> None:
    (workdir / "crashing.py").write_text(CRASHING.format(task=task))
    port = free_port()
    proc = start_cli(procs, workdir, "crashing", "--server-url", "http://127.0.0.1:9/api", "--processes", "2",
                     "--health-port", str(port))
    report = wait_until(lambda: (lambda r: r[1] if r[0] == 503 and all(
        entry["restarts"] >= 3 for entry in r[1].get("processes", [])) and r[1].get("processes") else None)(
        health(port)), timeout=30, message="three crashes of each child")
    assert any("crash loop" in problem for entry in report["processes"] for problem in entry["problems"]), report
    stderr = stop(proc)
    assert proc.returncode == 1, stderr
    assert "crash loop" in stderr.strip().splitlines()[-1], stderr


# -- the final metrics report ----------------------------------------------------------------------


def test_a_child_that_drains_sends_its_final_counts(server, workdir, task, executions, procs) -> None:
    """A child stopped by SIGTERM drains its in-flight tasks and reports them before it exits: the
    fleet's /metrics counts every execution (the periodic reports stop when it is told to stop)."""
    pytest.importorskip("prometheus_client")
    port, health_port = free_port(), free_port()
    proc = start_cli(procs, workdir, "counting", "--server-url", server.url, "--processes", "2",
                     "--metrics-port", str(port), "--health-port", str(health_port))
    wait_for_children(proc, health_port)
    executor, ids = workflows(server, task, 8, sleep=1.0)

    def busy_child() -> Optional[int]:
        entries = health(health_port)[1].get("processes", [])
        return next((entry["pid"] for entry in entries
                     if entry["workers"] and entry["workers"][task]["in_flight"] == 2), None)

    pid = wait_until(busy_child, timeout=20, message="a child with two tasks in flight")
    os.kill(pid, signal.SIGTERM)  # it drains its two tasks (about a second) and exits 0
    results = [executor.wait_for_workflow(wf, timeout=60) for wf in ids]
    assert [wf.status for wf in results] == [WorkflowStatus.COMPLETED] * len(ids)
    assert pid in {wf.output["pid"] for wf in results}
    assert wait_until(lambda: (lambda n: n if n == len(ids) else None)(scrape_completed(port, task)),
                      timeout=10, message=f"metrics count {len(ids)}; last {scrape_completed(port, task)}") == len(ids)
    stderr = stop(proc)
    assert proc.returncode == 0, stderr


# -- recycling -------------------------------------------------------------------------------------


def test_max_tasks_per_child_recycles_without_losing_or_repeating_a_task(server, workdir, task, executions,
                                                                      procs) -> None:
    pytest.importorskip("prometheus_client")
    port, health_port = free_port(), free_port()
    proc = start_cli(procs, workdir, "counting", "--server-url", server.url, "--processes", "2",
                     "--max-tasks-per-child", "4", "--health-port", str(health_port), "--metrics-port", str(port))
    wait_for_children(proc, health_port)
    executor, ids = workflows(server, task, 40, sleep=0.25)  # 2.5 s of work: time for replacements
    results = [executor.wait_for_workflow(wf, timeout=90) for wf in ids]
    assert [wf.status for wf in results] == [WorkflowStatus.COMPLETED] * len(ids)
    # the server saw one attempt per workflow; the workers executed each task exactly once
    tasks = [executor.get_workflow(wf).tasks for wf in ids]
    assert [len(wf_tasks) for wf_tasks in tasks] == [1] * len(ids)
    seen = executed(executions)
    assert sorted(seen) == sorted(wf_tasks[0].task_id for wf_tasks in tasks)
    assert all(len(pids) == 1 for pids in seen.values()), {k: v for k, v in seen.items() if len(v) > 1}
    pids = {pid for pids in seen.values() for pid in pids}
    # A child takes tasks until its replacement polls: more than 5 each, but the children were replaced
    assert len(pids) >= 3, pids
    # the children that were recycled sent their final counts: none is missing from /metrics
    assert wait_until(lambda: (lambda n: n if n == len(ids) else None)(scrape_completed(port, task)),
                      timeout=10, message="metrics count every execution") == len(ids)
    report = health(health_port)[1]
    assert sum(entry["recycles"] for entry in report["processes"]) >= 1, report
    assert sum(entry["restarts"] for entry in report["processes"]) == 0, report  # no crash, no backoff
    stderr = stop(proc)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr


def test_max_memory_per_child_recycles_a_growing_child_also_without_processes(server, workdir, task, executions,
                                                                            procs) -> None:
    """Without --processes a recycling limit runs one supervised child; 30 MB leaked per task, 150 MB
    allowed: the child is replaced a few tasks in (it takes tasks until its replacement polls), and
    every workflow completes once."""
    health_port = free_port()
    proc = start_cli(procs, workdir, "counting", "--server-url", server.url, "--max-memory-per-child", "150",
                     "--health-port", str(health_port), env=_env(GROW_MB="30"))
    wait_until(lambda: health(health_port)[0] == 200, timeout=30)
    executor, ids = workflows(server, task, 24, sleep=0.2)
    results = [executor.wait_for_workflow(wf, timeout=90) for wf in ids]
    assert [wf.status for wf in results] == [WorkflowStatus.COMPLETED] * len(ids)
    seen = executed(executions)
    assert len(seen) == len(ids) and all(len(pids) == 1 for pids in seen.values()), seen
    assert len({pid for pids in seen.values() for pid in pids}) >= 2
    report = health(health_port)[1]
    assert len(report["processes"]) == 1 and report["processes"][0]["recycles"] >= 1, report
    stderr = stop(proc)
    assert proc.returncode == 0, stderr
    assert "max-memory-per-child" in stderr


def test_recycling_flags_are_validated(workdir, executions) -> None:
    for args, env in ((["--max-tasks-per-child", "0"], {}), (["--max-memory-per-child", "x"], {}),
                      ([], {"CONDUCTOR_WORKERS_MAX_TASKS_PER_CHILD": "-1"}),
                      ([], {"CONDUCTOR_WORKERS_MAX_MEMORY_PER_CHILD": "nan"})):
        code, stderr = run_cli(workdir, "counting", "--server-url", "http://127.0.0.1:9/api", *args, env=_env(**env))
        assert (code, len(stderr.strip().splitlines())) == (2, 1), (args, env, stderr)


def test_a_child_that_cannot_drain_exits_at_its_shutdown_timeout(server, workdir, task, procs) -> None:
    """A task that never returns: the child gives up at --shutdown-timeout and exits by itself (its
    stuck thread cannot hold the interpreter's exit), instead of being killed by the parent later."""
    (workdir / "stuck.py").write_text(
        "import threading\nfrom conductor_workers import worker_task\n\n"
        f"@worker_task({task!r}, poll_interval=20)\n"
        "def stuck(n: int, sleep: float = 0.0) -> None:\n    threading.Event().wait()\n")
    health_port = free_port()
    proc = start_cli(procs, workdir, "stuck", "--server-url", server.url, "--processes", "2",
                     "--shutdown-timeout", "1", "--health-port", str(health_port))
    wait_for_children(proc, health_port)
    workflows(server, task, 2)
    wait_until(lambda: sum(entry["workers"][task]["in_flight"] for entry in health(health_port)[1]["processes"]
                           if entry.get("workers")) == 2, timeout=20, message="both tasks in flight")
    stderr = stop(proc)
    assert proc.returncode == 1, stderr  # not drained
    assert "not drained" in stderr
    assert "killing it" not in stderr, stderr


def test_a_worker_wedged_by_a_task_that_never_returns_is_recycled(server, workdir, task, procs) -> None:
    """Task 0 never returns and never reaches a safe point: it is reported FAILED at its 0.3 s time
    limit, its slot stays held, and once every slot of the worker has been held past
    --health-max-stuck the process is replaced; the fleet goes on completing workflows."""
    stuck_log = workdir / "stuck.pid"
    (workdir / "wedging.py").write_text(
        "import os, threading\nfrom conductor_workers import TaskDef, worker_task\n\n"
        f"@worker_task({task!r}, time_limit=0.3, poll_interval=20, register_task_def=True,\n"
        f"             task_def=TaskDef(name={task!r}, retry_count=0))\n"
        "def wedge(n: int, sleep: float = 0.0) -> dict:\n"
        "    if n == 0:\n"
        f"        open({str(stuck_log)!r}, 'w').write(str(os.getpid()))\n"
        "        threading.Event().wait()  # blocked in C, no safe point: only a new process frees the slot\n"
        "    return {'n': n, 'pid': os.getpid()}\n")
    health_port = free_port()
    proc = start_cli(procs, workdir, "wedging", "--server-url", server.url, "--processes", "2",
                     "--health-max-stuck", "1", "--shutdown-timeout", "1", "--health-port", str(health_port))
    wait_for_children(proc, health_port)
    executor, (first,) = workflows(server, task, 1)
    failed = executor.wait_for_workflow(first, timeout=30)
    assert failed.status is WorkflowStatus.FAILED
    assert "time limit exceeded" in (failed.tasks[0].reason_for_incompletion or "")
    stuck_pid = int(wait_until(lambda: stuck_log.exists() and stuck_log.read_text(), timeout=10))
    wait_until(lambda: sum(entry["recycles"] for entry in health(health_port)[1]["processes"]) >= 1,
               timeout=30, message="the wedged process replaced")
    wait_until(lambda: not alive(stuck_pid), timeout=30, message="the wedged process gone")
    ids = [executor.start_workflow(f"{task}_wf", {"n": n}) for n in range(1, 11)]
    results = [executor.wait_for_workflow(wf, timeout=60) for wf in ids]
    assert [wf.status for wf in results] == [WorkflowStatus.COMPLETED] * len(ids)
    assert stuck_pid not in {wf.output["pid"] for wf in results}
    wait_until(lambda: health(health_port)[0] == 200, timeout=30, message="healthy again")
    stderr = stop(proc)
    assert proc.returncode == 0, stderr
    assert "wedged" in stderr and "Traceback" not in stderr, stderr
