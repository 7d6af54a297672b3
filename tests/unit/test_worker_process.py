"""The child's side of the supervisor's pipe (``conductor_workers._worker_process._ParentLink``),
with a stand-in service and a real pipe."""
from __future__ import annotations

import multiprocessing
import os
import threading
from typing import Any, Dict, Optional

from conductor_workers._recycling import RecycleLimits
from conductor_workers._worker_process import STOP, _ParentLink


class Service:
    """What the link reads of a WorkerService: health, metrics, started."""

    def __init__(self, executed: int = 0, fail: bool = False) -> None:
        self.executed = executed
        self.fail = fail
        self.started = threading.Event()
        self.started.set()

    def health(self) -> Dict[str, Any]:
        if self.fail:
            raise RuntimeError("boom")
        return {"healthy": True, "workers": {"a": {"executions_completed": self.executed}}}

    def metrics_snapshot(self) -> Optional[Dict[str, int]]:
        return {"count": self.executed}


def link(service: Service, limits: RecycleLimits = RecycleLimits()):  # type: ignore[no-untyped-def]
    parent, child = multiprocessing.Pipe(duplex=True)
    stop = threading.Event()
    return parent, stop, _ParentLink(child, service, stop, os.getpid(), limits)  # type: ignore[arg-type]


def test_a_failure_of_the_link_stops_the_service() -> None:
    _, stop, parent_link = link(Service(fail=True))
    thread = threading.Thread(target=parent_link.watch, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and stop.is_set()


def test_stop_from_the_parent_then_the_final_report_is_the_last() -> None:
    service = Service(executed=3)
    parent, stop, parent_link = link(service, RecycleLimits(max_tasks=3))
    thread = threading.Thread(target=parent_link.watch, daemon=True)
    thread.start()
    first = parent.recv()  # at once: the process is due (3 tasks executed, limit 3)
    assert first["serving"] and "--max-tasks-per-child 3" in first["recycle"]
    parent.send(STOP)
    assert stop.wait(10)
    service.executed = 7  # the drain finished more
    parent_link.close()
    thread.join(10)
    reports = []
    while parent.poll(0.5):
        reports.append(parent.recv())
    assert reports and reports[-1]["metrics"] == {"count": 7}
