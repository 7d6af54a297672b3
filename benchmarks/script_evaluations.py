"""Script evaluations per second on LocalConductor: what running scripts in a runner process costs.

    python benchmarks/script_evaluations.py [--workflows 200] [--rounds 3]

Three workflows, each started ``--workflows`` times on an in-process LocalConductor; a start decides
at once, so every script of the workflow has run when the start call returns:

* ``inline``: ten ``INLINE`` tasks ``$.a + 1`` in a row (JavaScript);
* ``switch``: ten ``SWITCH`` tasks with the javascript evaluator ``$.a > 1 ? 'big' : 'small'``;
* ``jq``: ten ``JSON_JQ_TRANSFORM`` tasks ``.a + 1``.

The figure is scripts per second (ten per workflow) and the time a workflow start takes, the median
of the rounds. Compare it with the same run on an older checkout to see the cost of the change.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List

import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from conductor_workers.server import LocalConductor  # noqa: E402

SCRIPTS_PER_WORKFLOW = 10


def _tasks(kind: str) -> List[Dict[str, Any]]:
    tasks = []
    for i in range(SCRIPTS_PER_WORKFLOW):
        ref = "%s_%d" % (kind, i)
        if kind == "inline":
            tasks.append({"name": ref, "taskReferenceName": ref, "type": "INLINE", "inputParameters": {
                "evaluatorType": "javascript", "expression": "$.a + 1", "a": "${workflow.input.a}"}})
        elif kind == "switch":
            tasks.append({"name": ref, "taskReferenceName": ref, "type": "SWITCH", "evaluatorType": "javascript",
                          "expression": "$.a > 1 ? 'big' : 'small'", "inputParameters": {"a": "${workflow.input.a}"},
                          "decisionCases": {}, "defaultCase": []})
        else:
            tasks.append({"name": ref, "taskReferenceName": ref, "type": "JSON_JQ_TRANSFORM",
                          "inputParameters": {"queryExpression": ".a + 1", "a": "${workflow.input.a}"}})
    return tasks


def _round(session: requests.Session, url: str, kind: str, workflows: int) -> float:
    name = "bench_%s_%s" % (kind, uuid.uuid4().hex[:8])
    answer = session.put(url + "/metadata/workflow", json=[{"name": name, "version": 1, "tasks": _tasks(kind),
                                                            "schemaVersion": 2, "ownerEmail": "b@example.com"}])
    answer.raise_for_status()
    started = time.perf_counter()
    for i in range(workflows):
        answer = session.post(url + "/workflow/" + name, json={"a": i})
        answer.raise_for_status()
    elapsed = time.perf_counter() - started
    last = session.get(url + "/workflow/" + answer.text).json()
    assert last["status"] == "COMPLETED", last
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with LocalConductor() as server, requests.Session() as session:
        session.trust_env = False
        for kind in ("inline", "switch", "jq"):
            _round(session, server.url, kind, 5)  # warm up: engines loaded, runners started
            times = [_round(session, server.url, kind, args.workflows) for _ in range(args.rounds)]
            median = statistics.median(times)
            print("%-7s %7.0f scripts/s  %6.2f ms per workflow start (%d scripts)  rounds: %s" % (
                kind, args.workflows * SCRIPTS_PER_WORKFLOW / median, 1000 * median / args.workflows,
                SCRIPTS_PER_WORKFLOW, ", ".join("%.2fs" % t for t in times)))


if __name__ == "__main__":
    main()
