"""How the cost of a decide grows with the workflow: FORK_JOIN_DYNAMIC and DO_WHILE at N tasks.

    python benchmarks/decide_scaling.py [--sizes 1000,10000,50000] [--cap 120] [--code PATH]

Each case runs in a fresh child process (an in-process LocalConductor, no database file) so that its
peak memory is its own; a case still running after ``--cap`` seconds is stopped and shown as such.

* ``fork-start``: start a workflow whose FORK_JOIN_DYNAMIC forks N SIMPLE tasks (``forkTaskInputs``);
  the time the start call takes (it schedules the N tasks and the JOIN).
* ``fork-complete``: then poll (batches of 100) and complete all N; the time until the workflow is
  COMPLETED (every update decides the workflow, which loads its tasks: conductor-oss does the same).
* ``loop-true``: a DO_WHILE of one SET_VARIABLE that never ends (issue 22, case 3); the
  time until it reaches iteration N (read from the workflow's variables), then it is terminated.
* ``loop-js``: the same loop ending at N by ``$.loop['iteration'] < N`` (a JavaScript
  condition: every evaluation receives the loop's whole output, which grows with each iteration).

Figures: total seconds, milliseconds per scheduled task, and the peak resident memory the case
added (MB). ``--code`` imports ``conductor_workers`` from another checkout (to get "before" figures).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

HERE = Path(__file__).resolve().parent


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        return int(status.read().split("VmRSS:")[1].split()[0]) / 1024


def _run_case(kind: str, size: int) -> Dict[str, Any]:
    """In the child: run one case on an in-process LocalConductor and return its figures."""
    import requests

    from conductor_workers.server import LocalConductor

    session = requests.Session()
    session.trust_env = False
    with LocalConductor() as server:
        url = server.url
        base_mb = _rss_mb()
        scheduled = size
        if kind.startswith("fork-"):
            session.post(url + "/metadata/taskdefs", json=[{"name": "branch", "retryCount": 0}]).raise_for_status()
            session.put(url + "/metadata/workflow", json=[{"name": "fork", "tasks": [
                {"name": "fork", "taskReferenceName": "fork", "type": "FORK_JOIN_DYNAMIC",
                 "inputParameters": {"forkTaskName": "branch", "forkTaskInputs": "${workflow.input.items}"}},
                {"name": "join", "taskReferenceName": "join", "type": "JOIN"}]}]).raise_for_status()
            began = time.monotonic()
            response = session.post(url + "/workflow/fork", json={"items": [{"i": i} for i in range(size)]},
                                    timeout=3600)
            response.raise_for_status()
            workflow_id = response.text
            if kind == "fork-complete":
                done = 0
                while done < size:
                    polled = session.get(url + "/tasks/poll/batch/branch", params={"count": 100, "timeout": 100},
                                         timeout=3600).json()
                    for task in polled:
                        session.post(url + "/tasks", json={"workflowInstanceId": workflow_id, "taskId": task["taskId"],
                                                           "status": "COMPLETED", "outputData": {"ok": True}},
                                     timeout=3600).raise_for_status()
                    done += len(polled)
                while session.get(url + "/workflow/%s?includeTasks=false" % workflow_id).json()["status"] != "COMPLETED":
                    time.sleep(0.01)
        else:
            condition = "true" if kind == "loop-true" else "$.loop['iteration'] < %d" % size
            session.put(url + "/metadata/workflow", json=[{"name": "loop", "tasks": [
                {"name": "loop", "taskReferenceName": "loop", "type": "DO_WHILE", "loopCondition": condition,
                 "loopOver": [{"name": "count", "taskReferenceName": "count", "type": "SET_VARIABLE",
                               "inputParameters": {"i": "${loop.output.iteration}"}}]}]}]).raise_for_status()
            began = time.monotonic()
            response = session.post(url + "/workflow/loop", json={}, timeout=3600)
            response.raise_for_status()
            workflow_id = response.text
            while True:
                workflow = session.get(url + "/workflow/%s?includeTasks=false" % workflow_id, timeout=3600).json()
                reached = (workflow.get("variables") or {}).get("i", 0)
                if reached >= size:
                    break
                if workflow["status"] != "RUNNING":
                    return {"failed": "%s at iteration %d: %s" % (workflow["status"], reached,
                                                                  workflow.get("reasonForIncompletion"))}
                time.sleep(0.02)
        took = time.monotonic() - began
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        session.delete(url + "/workflow/%s?reason=done" % workflow_id, timeout=3600)
    return {"seconds": took, "ms_per_task": took / scheduled * 1000, "peak_added_mb": peak_mb - base_mb}


def _case_in_child(kind: str, size: int, cap: float, code: Optional[str]) -> Optional[Dict[str, Any]]:
    env = dict(os.environ, PYTHONPATH=code or str(HERE.parent))
    try:
        result = subprocess.run([sys.executable, __file__, "--child", kind, str(size)], env=env, capture_output=True,
                                text=True, timeout=cap)
    except subprocess.TimeoutExpired:
        return None
    if result.returncode != 0:
        raise RuntimeError("case %s/%d failed:\n%s" % (kind, size, result.stderr[-2000:]))
    return json.loads(result.stdout.strip().splitlines()[-1])


CASES = ["fork-start", "fork-complete", "loop-true", "loop-js"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated, from: " + "; ".join(CASES))
    parser.add_argument("--cap", type=float, default=120.0, help="seconds a case may take before it is stopped")
    parser.add_argument("--code", help="a checkout whose conductor_workers to measure (default: this one)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_run_case(args.child[0], int(args.child[1]))))
        return
    sizes = [int(size) for size in args.sizes.split(",")]
    print("| case | N | seconds | ms per scheduled task | peak memory added (MB) |")
    print("|---|---:|---:|---:|---:|")
    for kind in [case.strip() for case in args.cases.split(",")]:
        stopped = False
        for size in sizes:
            if stopped:  # a smaller size already ran past the cap
                print("| %s | %d | not run | | |" % (kind, size))
                continue
            figures = _case_in_child(kind, size, args.cap, args.code)
            if figures is not None and "failed" in figures:
                stopped = True
                print("| %s | %d | %s | | |" % (kind, size, figures["failed"]))
            elif figures is None:
                stopped = True
                print("| %s | %d | > %.0f (stopped) | > %.2f | |" % (kind, size, args.cap, args.cap / size * 1000))
            else:
                print("| %s | %d | %.2f | %.3f | %.0f |" % (kind, size, figures["seconds"], figures["ms_per_task"],
                                                             figures["peak_added_mb"]), flush=True)


if __name__ == "__main__":
    main()
