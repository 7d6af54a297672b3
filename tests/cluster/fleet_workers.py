"""The workers of the cluster fleet: ``python -m conductor_workers run tests.cluster.fleet_workers:workers``.

Configured by the environment, which the run command's spawned processes inherit:

* ``CLUSTER_FLEET_TASKS``: the task types, comma-separated (default ``cluster_a,cluster_b``). The
  first one doubles ``n`` (``{"n": n, "a": 2n}``), every later one adds one to ``a`` (``{"n": n,
  "b": a + 1}``), so a two-task workflow ends with ``b == 2n + 1``.
* ``CLUSTER_FLEET_SLEEP_MS``: how long an execution works (default 20 ms).
* ``CLUSTER_FLEET_DIR``: every execution appends one JSON line to ``exec-<pid>.jsonl`` there (one
  ``write`` on an ``O_APPEND`` descriptor): task id, workflow id, reference name, task type, retry
  and poll counts, start and end times, pid. Executions per task id can be counted from those files.
* ``CLUSTER_FLEET_CONTROL``: a JSON file of runtime options, ``{"version": 3, "workers": {"cluster_b":
  {"paused": true, "concurrency": 2}}}``. The run command has no fleet-wide runtime control (flags and
  ``CONDUCTOR_WORKER_*`` are read once, at a process's start), so each worker process runs a thread
  that reads this file every 200 ms and applies a new ``version`` with the ``TaskManager`` API of its
  own process (``update_polling_option_for_worker``), then writes ``control-<pid>.json`` (the version
  and the options in force) into ``CLUSTER_FLEET_DIR``. A process restarted by the supervisor applies
  the file when it starts. The manager is not reachable from a worker module: it is found among the
  process's objects (``gc``) once polling has started.
"""
from __future__ import annotations

import gc
import json
import logging
import multiprocessing
import os
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from conductor_workers import Task, Worker, worker_task

log = logging.getLogger(__name__)

TASKS_ENV = "CLUSTER_FLEET_TASKS"
SLEEP_ENV = "CLUSTER_FLEET_SLEEP_MS"
DIR_ENV = "CLUSTER_FLEET_DIR"
CONTROL_ENV = "CLUSTER_FLEET_CONTROL"

_fd: Optional[int] = None
_fd_lock = threading.Lock()


def task_types() -> List[str]:
    return [name.strip() for name in os.environ.get(TASKS_ENV, "cluster_a,cluster_b").split(",") if name.strip()]


def _record(entry: Dict[str, Any]) -> None:
    global _fd
    directory = os.environ.get(DIR_ENV)
    if not directory:
        return
    with _fd_lock:
        if _fd is None:
            _fd = os.open(os.path.join(directory, f"exec-{os.getpid()}.jsonl"),
                          os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        fd = _fd
    os.write(fd, (json.dumps(entry, separators=(",", ":")) + "\n").encode())


def _make(task_type: str, first: bool) -> Worker:
    sleep = float(os.environ.get(SLEEP_ENV, "20")) / 1000.0

    @worker_task(task_type, concurrency=8, poll_interval=100)
    def execute(task: Task) -> Dict[str, Any]:
        started = time.time()
        if sleep > 0:
            time.sleep(sleep)
        data = task.input_data
        output = {"n": data["n"], "a": 2 * data["n"]} if first else {"n": data["n"], "b": data["a"] + 1}
        _record({"task": task.task_id, "wf": task.workflow_instance_id, "ref": task.reference_task_name,
                 "type": task_type, "retry": task.retry_count, "poll": task.poll_count,
                 "start": started, "end": time.time(), "pid": os.getpid()})
        return output

    return execute


def workers() -> List[Worker]:
    """One worker per task type of ``CLUSTER_FLEET_TASKS`` (the run command calls this in every process)."""
    names = task_types()
    found = [_make(name, index == 0) for index, name in enumerate(names)]
    _start_control_thread()
    return found


# --------------------------------------------------------------------------- runtime control


def _find_manager() -> Any:
    from conductor_workers import TaskManager

    managers = [obj for obj in gc.get_objects() if isinstance(obj, TaskManager)]
    polling = [manager for manager in managers if manager.is_polling]
    return polling[0] if len(polling) == 1 else None


def _control_loop(path: Path, out_dir: Optional[Path], stop: threading.Event) -> None:
    manager = None
    applied = None
    while not stop.wait(0.2):
        if manager is None:
            manager = _find_manager()
            if manager is None:
                continue
        try:
            wanted = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # no file yet, or caught half-written: read it again next time
        version = wanted.get("version")
        if version == applied:
            continue
        try:
            for name, changes in (wanted.get("workers") or {}).items():
                manager.update_polling_option_for_worker(name, **changes)
        except Exception as exc:  # noqa: BLE001 - a bad control file is logged, the workers carry on
            log.error("control file %s version %r not applied: %s", path, version, exc)
            applied = version
            continue
        applied = version
        log.info("control file version %r applied: %s", version, wanted.get("workers"))
        if out_dir is not None:
            report = {"version": version, "pid": os.getpid(), "time": time.time(),
                      "options": {name: {"paused": opts.paused, "concurrency": opts.concurrency}
                                  for name in manager.runners for opts in [manager.options_for(name)]}}
            target = out_dir / f"control-{os.getpid()}.json"
            partial = target.with_suffix(".tmp")
            partial.write_text(json.dumps(report))
            os.replace(partial, target)


_control_started = False


def _start_control_thread() -> None:
    global _control_started
    path = os.environ.get(CONTROL_ENV)
    # only in the worker processes: the supervisor imports this module too, but never polls
    if not path or _control_started or multiprocessing.parent_process() is None:
        return
    _control_started = True
    out_dir = os.environ.get(DIR_ENV)
    thread = threading.Thread(target=_control_loop, args=(Path(path), Path(out_dir) if out_dir else None,
                                                          threading.Event()),
                              name="cluster-fleet-control", daemon=True)
    thread.start()
