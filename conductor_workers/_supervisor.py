"""``conductor-workers run --processes N``: N spawned worker processes under a supervising parent.

* The parent imports the targets once (so that a bad module or option fails before anything
  starts), checks the credentials, then spawns N children (``spawn`` start method: no fork of
  threads or sockets). Each child builds its own client and manager, waits for the server if it
  cannot reach it yet, and polls.
* A child that dies is restarted after a capped exponential backoff (0.5 s doubling up to 30 s;
  back to 0.5 s once a child has run for a minute). The parent never gives up: three crashes in a
  row with no child running a minute in between make a *crash loop*, which ``/health`` reports (503,
  so that a liveness probe can act) and which makes the exit code 1 at the stop.
* Recycling (``--max-tasks-per-child``, ``--max-memory-per-child``, and a wedged worker: see
  :mod:`._recycling`): a child that is due says so in its reports and keeps polling; the parent
  spawns its replacement at once (no crash backoff), and once the replacement polls, tells the old
  child to stop. The old child drains (in-flight tasks finish and are reported), sends a final
  report and exits; after the shutdown timeout and a grace period it is killed. The slot never
  stops polling.
* SIGTERM/SIGINT to the parent: every child gets SIGTERM and drains within the shutdown timeout;
  the parent exits 0 when they all drained (and no slot is in a crash loop), 1 otherwise (children
  still alive after the timeout and a grace period are killed).
* Each child holds one end of a pipe whose other end only the parent has. A child sends its health
  report (and metrics) through it every second, and a final one after its drain; when the parent
  dies, even by SIGKILL, the child's end hits EOF, and the child drains and exits by itself
  (``os.getppid()`` changing is a backstop). The counts of a child killed by SIGKILL since its last
  report (up to a second) are lost: nothing is left to send them.
* ``--health-port`` and ``--metrics-port`` are served by the parent, from the children's reports.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.connection import Connection, wait
from typing import Any, Dict, List, Optional

from ._run import (
    EXIT_NOT_DRAINED,
    EXIT_OK,
    CommandError,
    RunSettings,
    StopOnSignals,
    WorkerService,
    _start_endpoints,
    load_workers,
)
from ._worker_process import REPORT_INTERVAL, STOP, child_main
from .errors import ConductorError

log = logging.getLogger(__name__)

RESTART_DELAY_MIN = 0.5
RESTART_DELAY_MAX = 30.0
STABLE_AFTER = 60.0  # a child that ran this long resets the restart backoff
CRASH_LOOP = 3  # crashes in a row (no child stable in between) that make a crash loop
STOP_GRACE = 5.0  # seconds past the shutdown timeout before children still alive are killed


# -- the parent ----------------------------------------------------------------------------------


class _Child:
    """One spawned worker process: its pipe, when it started, its last report."""

    def __init__(self, process: Any, conn: Connection) -> None:
        self.process = process  # multiprocessing's SpawnProcess
        self.pid: int = process.pid
        self.conn: Optional[Connection] = conn
        self.started = time.monotonic()
        self.report: Optional[Dict[str, Any]] = None
        self.report_time = 0.0
        self.stop_deadline: Optional[float] = None  # set when told to stop: killed if still alive then

    @property
    def alive(self) -> bool:
        return self.process.exitcode is None

    @property
    def serving(self) -> bool:
        return bool(self.report and self.report.get("serving"))

    @property
    def recycle(self) -> Optional[str]:
        return None if self.report is None else self.report.get("recycle")

    @property
    def metrics(self) -> Any:
        return None if self.report is None else self.report.get("metrics")

    def read(self) -> None:
        """Take the reports waiting in the pipe (the last one counts)."""
        conn = self.conn
        if conn is None:
            return
        try:
            while conn.poll():
                self.report, self.report_time = conn.recv(), time.monotonic()
        except (EOFError, OSError):
            conn.close()
            self.conn = None  # the child is exiting; its sentinel tells us when it is gone

    def tell_stop(self, deadline: float) -> None:
        self.stop_deadline = deadline
        try:
            if self.conn is not None:
                self.conn.send(STOP)
                return
        except OSError as exc:
            log.debug("worker process %d: %s", self.pid, exc)
        self.terminate()  # no pipe: a signal says the same

    def terminate(self) -> None:
        try:
            self.process.terminate()
        except OSError as exc:  # it just exited
            log.debug("worker process %d: %s", self.pid, exc)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.process.exitcode is not None:
            self.process.close()


class _Slot:
    """One of the N processes: its current child, a replacement being started, children being
    recycled, restart bookkeeping and the metrics of its children that have exited."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.current: Optional[_Child] = None
        self.successor: Optional[_Child] = None  # started for a recycle; current once it polls
        self.retiring: List[_Child] = []  # told to stop: draining
        self.restarts = 0
        self.recycles = 0
        self.failures = 0  # crashes in a row (back to 1 when a crashed child had run STABLE_AFTER)
        self.next_start = 0.0
        self.retired_metrics: List[Any] = []  # metrics of this slot's children that have exited

    def children(self) -> List[_Child]:
        return [child for child in (self.current, self.successor, *self.retiring) if child is not None]

    def crash_looping(self, now: float) -> bool:
        current = self.current
        return self.failures >= CRASH_LOOP and (current is None or now - current.started < STABLE_AFTER)


class Supervisor:
    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        self._context = multiprocessing.get_context("spawn")
        self._slots = [_Slot(index) for index in range(settings.processes)]
        self._lock = threading.Lock()  # guards the slots' children and reports (read by the endpoints)
        self.stop = threading.Event()

    # -- children ----------------------------------------------------------------------------------

    def _spawn(self, slot: _Slot) -> _Child:
        ours, theirs = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=child_main, args=(self.settings, theirs, slot.index, os.getpid()),
            name=f"conductor-workers-{slot.index}", daemon=False,
        )
        process.start()
        theirs.close()  # only the child holds its end now: the parent's death closes the pipe
        log.info("worker process %d started (pid %d)", slot.index, process.pid)
        return _Child(process, ours)

    def _step(self, slot: _Slot, now: float) -> None:
        """Start what the slot lacks: its child, or the replacement of a child that is due."""
        current = slot.current
        if current is None:
            if now >= slot.next_start:
                child = self._spawn(slot)
                with self._lock:
                    slot.current = child
            return
        if current.recycle and slot.successor is None and now >= slot.next_start:
            log.info("worker process %d (pid %d) is due for replacement (%s); starting its replacement",
                     slot.index, current.pid, current.recycle)
            child = self._spawn(slot)
            with self._lock:
                slot.successor = child
        successor = slot.successor
        if successor is not None and successor.serving:
            log.info("worker process %d: pid %d polls; pid %d stops polling and drains",
                     slot.index, successor.pid, current.pid)
            current.tell_stop(now + self.settings.shutdown_timeout + STOP_GRACE)
            with self._lock:
                slot.retiring.append(current)
                slot.current, slot.successor = successor, None
                slot.recycles += 1

    def _reap(self, slot: _Slot, now: float) -> None:
        """Account for the slot's children that have exited; kill the retiring ones past their time."""
        for child in slot.children():
            if child.alive:
                if child.stop_deadline is not None and now > child.stop_deadline:
                    log.error("worker process %d (pid %d) did not drain in time; killing it",
                              slot.index, child.pid)
                    child.process.kill()
                    child.stop_deadline = float("inf")  # killed once
                continue
            code, lived = child.process.exitcode, now - child.started
            replacement = child is slot.successor
            with self._lock:
                child.read()  # its last report: after a drain, the final one with every count
                if child.metrics:
                    slot.retired_metrics.append(child.metrics)
                if child in slot.retiring:
                    slot.retiring.remove(child)
                elif replacement:
                    slot.successor = None
                else:  # the current child: a replacement on its way takes over at once
                    slot.current, slot.successor = slot.successor, None
            child.close()
            if child.stop_deadline is not None or self.stop.is_set():
                log.log(logging.INFO if code == EXIT_OK else logging.WARNING,
                        "worker process %d (pid %d) stopped; exit code %s", slot.index, child.pid, code)
                continue
            slot.failures = 1 if lived >= STABLE_AFTER else slot.failures + 1
            delay = min(RESTART_DELAY_MAX, RESTART_DELAY_MIN * 2 ** (slot.failures - 1))
            slot.next_start = now + delay
            slot.restarts += 1
            if slot.current is None:
                then = f"restarting in {delay:.1f}s"
            elif replacement:
                then = f"starting another replacement in {delay:.1f}s"
            else:
                then = f"its replacement (pid {slot.current.pid}) takes over"
            log.error("worker process %d (pid %d) exited with %s after %.1fs; %s%s", slot.index, child.pid,
                      code, lived, then, " (crash loop)" if slot.crash_looping(now) else "")

    def _wait(self, timeout: float) -> None:
        handles: List[Any] = []
        for slot in self._slots:
            for child in slot.children():
                handles.append(child.process.sentinel)
                if child.conn is not None:
                    handles.append(child.conn)
        if handles:
            wait(handles, timeout)
        else:
            self.stop.wait(timeout)
        for slot in self._slots:
            for child in slot.children():
                with self._lock:
                    child.read()

    def run(self) -> int:
        try:
            return self._supervise()
        finally:
            self._kill_leftovers()

    def _kill_leftovers(self) -> None:
        """After an unexpected error: no child may outlive the supervisor's ``run``."""
        for slot in self._slots:
            for child in slot.children():
                if child.alive:
                    log.error("worker process %d (pid %d) still running; killing it", slot.index, child.pid)
                    child.process.kill()
                    child.process.join(5.0)

    def _supervise(self) -> int:
        while not self.stop.is_set():
            now = time.monotonic()
            for slot in self._slots:
                self._step(slot, now)
            pending = [slot.next_start - now for slot in self._slots if slot.current is None]
            self._wait(max(0.01, min([0.5] + pending)))
            now = time.monotonic()
            for slot in self._slots:
                self._reap(slot, now)
        return self._shutdown()

    def _shutdown(self) -> int:
        timeout = self.settings.shutdown_timeout
        now = time.monotonic()
        looping = [slot for slot in self._slots if slot.crash_looping(now)]
        live = [(slot, child) for slot in self._slots for child in slot.children() if child.alive]
        log.info("stopping %d worker process(es) (drain up to %.0fs)", len(live), timeout)
        unreported = set()  # not polling yet: SIGTERM may land before its handler
        for slot, child in live:
            if child.report is None:
                unreported.add(child.pid)
            child.terminate()
        deadline = now + timeout + STOP_GRACE
        while any(child.alive for _, child in live) and time.monotonic() < deadline:
            self._wait(min(0.5, max(0.01, deadline - time.monotonic())))
        result = EXIT_OK
        for slot, child in live:
            process = child.process
            if process.exitcode is None:
                log.error("worker process %d (pid %d) did not stop in time; killing it",
                          slot.index, child.pid)
                process.kill()
                process.join(5.0)
                result = EXIT_NOT_DRAINED
            elif process.exitcode != EXIT_OK and not (
                child.pid in unreported and process.exitcode == -signal.SIGTERM
            ):
                log.error("worker process %d exited with %s", slot.index, process.exitcode)
                result = EXIT_NOT_DRAINED
            child.close()
        with self._lock:
            for slot in self._slots:
                slot.current, slot.successor, slot.retiring = None, None, []
        for slot in looping:
            log.error("worker process %d was in a crash loop (%d crashes in a row)",
                      slot.index, slot.failures)
        if looping:
            log.error("stopped with worker processes in a crash loop; exiting with %d", EXIT_NOT_DRAINED)
            return EXIT_NOT_DRAINED
        if result == EXIT_OK:
            log.info("every worker process drained; exiting")
        return result

# -- endpoints ---------------------------------------------------------------------------------

    def health(self) -> Dict[str, Any]:
        now = time.monotonic()
        stale_after = max(5.0, 3 * REPORT_INTERVAL)
        processes = []
        with self._lock:
            for slot in self._slots:
                child = slot.current
                report = None if child is None else child.report
                age = None if child is None or report is None else now - child.report_time
                problems = []
                if child is None or not child.alive:
                    problems.append("not running (restarting)")
                elif report is None:
                    problems.append("has not reported yet")
                elif age is not None and age > stale_after:
                    problems.append(f"last reported {age:.1f}s ago")
                elif not report["health"].get("healthy"):
                    problems.append("unhealthy")
                if slot.crash_looping(now):
                    problems.append(f"crash loop: {slot.failures} crashes in a row")
                processes.append({
                    "index": slot.index,
                    "pid": None if child is None else child.pid,
                    "alive": child is not None and child.alive,
                    "restarts": slot.restarts,
                    "recycles": slot.recycles,
                    "replacing": None if child is None else child.recycle,
                    "retiring": [old.pid for old in slot.retiring],
                    "healthy": not problems,
                    "problems": problems,
                    "report_age": None if age is None else round(age, 3),
                    "workers": None if report is None else report["health"].get("workers"),
                })
        healthy = all(entry["healthy"] for entry in processes)
        return {"healthy": healthy, "status": "ok" if healthy else "unhealthy", "time": time.time(),
                "supervisor_pid": os.getpid(), "processes": processes}

    def metrics(self) -> Any:
        from .metrics import merge_snapshots

        with self._lock:
            snapshots = [snap for slot in self._slots for snap in slot.retired_metrics]
            snapshots += [child.metrics for slot in self._slots for child in slot.children() if child.metrics]
        return merge_snapshots(snapshots)


def supervise(settings: RunSettings) -> int:
    """Run ``settings.processes`` worker processes until SIGTERM/SIGINT; the exit code."""
    supervisor = Supervisor(settings)

    def forward(signum: int) -> None:
        log.info("%s: stopping %d worker process(es)", signal.Signals(signum).name, settings.processes)

    with StopOnSignals(supervisor.stop, forward):
        # Fail here, once, on a bad module, no workers, a bad option or refused credentials.
        service = WorkerService(settings, load_workers(settings))
        try:
            service.check_server()
        finally:
            service.close()
        servers = _start_endpoints(settings, supervisor.health,
                                   supervisor.metrics if settings.metrics_port is not None else None)
        try:
            return supervisor.run()
        except ConductorError as exc:
            raise CommandError(EXIT_NOT_DRAINED, str(exc)) from None
        finally:
            for server in servers:
                server.close()


__all__ = ["Supervisor", "child_main", "supervise"]
