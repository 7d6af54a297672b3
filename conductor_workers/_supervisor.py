"""``conductor-workers run --processes N``: N spawned worker processes under a supervising parent.

* The parent imports the targets once (so that a bad module or option fails before anything
  starts), checks the credentials, then spawns N children (``spawn`` start method: no fork of
  threads or sockets). Each child builds its own client and manager and polls.
* A child that dies is restarted after a capped exponential backoff (0.5 s doubling up to 30 s;
  back to 0.5 s once a child has run for a minute).
* SIGTERM/SIGINT to the parent: every child gets SIGTERM and drains within the shutdown timeout;
  the parent exits 0 when they all drained, 1 otherwise (children still alive after the timeout
  and a grace period are killed).
* Each child holds one end of a pipe whose other end only the parent has. A child sends its health
  report (and metrics) through it every second; when the parent dies, even by SIGKILL, the child's
  end hits EOF, and the child drains and exits by itself (``os.getppid()`` changing is a backstop).
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
    configure_logging,
    load_workers,
)
from .errors import ConductorError

log = logging.getLogger(__name__)

REPORT_INTERVAL = 1.0  # seconds between a child's reports
RESTART_DELAY_MIN = 0.5
RESTART_DELAY_MAX = 30.0
STABLE_AFTER = 60.0  # a child that ran this long resets the restart backoff
STOP_GRACE = 5.0  # seconds past the shutdown timeout before children still alive are killed


# -- the child -----------------------------------------------------------------------------------


def _watch_parent(conn: Connection, service: WorkerService, stop: threading.Event, parent_pid: int) -> None:
    """Report to the parent every second; set ``stop`` when it is gone or asks to stop."""
    while not stop.is_set():
        try:
            if conn.poll(REPORT_INTERVAL):
                message = conn.recv()
                if message == "stop":
                    log.info("the supervisor asked to stop")
                    stop.set()
                    return
            conn.send({"health": service.health(), "metrics": service.metrics_snapshot()})
        except (EOFError, OSError):
            log.warning("the supervisor (pid %d) is gone: stopping", parent_pid)
            stop.set()
            return
        if os.getppid() != parent_pid:
            log.warning("the supervisor (pid %d) is gone (now a child of %d): stopping", parent_pid, os.getppid())
            stop.set()
            return


def child_main(settings: RunSettings, conn: Connection, index: int, parent_pid: int) -> None:
    """Entry point of a spawned worker process; exits with the drain's exit code."""
    stop = threading.Event()
    with StopOnSignals(stop, force_on_second=False):
        configure_logging(settings.log_level, settings.log_format)
        code = EXIT_NOT_DRAINED
        try:
            service = WorkerService(settings)
        except CommandError as exc:
            log.error("worker process %d: %s", index, exc)
            raise SystemExit(exc.exit_code) from None
        watcher = threading.Thread(target=_watch_parent, args=(conn, service, stop, parent_pid),
                                   name="cw-supervisor-pipe", daemon=True)
        try:
            watcher.start()
            code = service.serve(stop)
        except CommandError as exc:
            log.error("worker process %d: %s", index, exc)
            code = exc.exit_code
        finally:
            stop.set()
            service.close()
    raise SystemExit(code)


# -- the parent ----------------------------------------------------------------------------------


class _Slot:
    """One of the N processes: the current child, its pipe, restart bookkeeping, its last report."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: Optional[Any] = None  # multiprocessing's SpawnProcess
        self.conn: Optional[Connection] = None
        self.started = 0.0
        self.restarts = 0
        self.failures = 0
        self.next_start = 0.0
        self.report: Optional[Dict[str, Any]] = None
        self.report_time = 0.0
        self.retired_metrics: List[Any] = []  # metrics of this slot's earlier children

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.exitcode is None


class Supervisor:
    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        self._context = multiprocessing.get_context("spawn")
        self._slots = [_Slot(index) for index in range(settings.processes)]
        self._lock = threading.Lock()  # guards the slots' reports (read by the endpoint threads)
        self.stop = threading.Event()

    # -- children ----------------------------------------------------------------------------------

    def _start(self, slot: _Slot) -> None:
        ours, theirs = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=child_main, args=(self.settings, theirs, slot.index, os.getpid()),
            name=f"conductor-workers-{slot.index}", daemon=False,
        )
        process.start()
        theirs.close()  # only the child holds its end now: the parent's death closes the pipe
        with self._lock:
            slot.process, slot.conn = process, ours
            slot.started = time.monotonic()
            slot.report, slot.report_time = None, 0.0
        log.info("worker process %d started (pid %d)", slot.index, process.pid)

    def _reap(self, slot: _Slot) -> None:
        """A child has exited: log it and schedule its restart."""
        process = slot.process
        assert process is not None
        code, pid = process.exitcode, process.pid
        lived = time.monotonic() - slot.started
        self._read(slot)  # its last report; on EOF this closes the pipe and clears slot.conn
        if slot.conn is not None:
            slot.conn.close()
        with self._lock:
            if slot.report and slot.report.get("metrics"):
                slot.retired_metrics.append(slot.report["metrics"])
            slot.process, slot.conn, slot.report = None, None, None
        process.close()
        if self.stop.is_set():
            return
        slot.failures = 1 if lived >= STABLE_AFTER else slot.failures + 1
        delay = min(RESTART_DELAY_MAX, RESTART_DELAY_MIN * 2 ** (slot.failures - 1))
        slot.next_start = time.monotonic() + delay
        slot.restarts += 1
        log.error("worker process %d (pid %s) exited with %s after %.1fs; restarting in %.1fs",
                  slot.index, pid, code, lived, delay)

    def _read(self, slot: _Slot) -> None:
        conn = slot.conn
        if conn is None:
            return
        try:
            while conn.poll():
                message = conn.recv()
                with self._lock:
                    slot.report, slot.report_time = message, time.monotonic()
        except (EOFError, OSError):
            conn.close()
            slot.conn = None  # the child is exiting; its sentinel tells us when it is gone

    def _wait(self, timeout: float) -> None:
        handles: List[Any] = []
        for slot in self._slots:
            if slot.process is not None:
                handles.append(slot.process.sentinel)
            if slot.conn is not None:
                handles.append(slot.conn)
        if handles:
            wait(handles, timeout)
        else:
            self.stop.wait(timeout)
        for slot in self._slots:
            self._read(slot)

    def run(self) -> int:
        try:
            return self._supervise()
        finally:
            self._kill_leftovers()

    def _kill_leftovers(self) -> None:
        """After an unexpected error: no child may outlive the supervisor's ``run``."""
        for slot in self._slots:
            process = slot.process
            if process is not None and process.exitcode is None:
                log.error("worker process %d (pid %d) still running; killing it", slot.index, process.pid)
                process.kill()
                process.join(5.0)

    def _supervise(self) -> int:
        for slot in self._slots:
            self._start(slot)
        while not self.stop.is_set():
            now = time.monotonic()
            for slot in self._slots:
                if slot.process is None and now >= slot.next_start:
                    self._start(slot)
            pending = [slot.next_start - now for slot in self._slots if slot.process is None]
            self._wait(max(0.01, min([0.5] + pending)))
            for slot in self._slots:
                if slot.process is not None and slot.process.exitcode is not None:
                    self._reap(slot)
        return self._shutdown()

    def _shutdown(self) -> int:
        timeout = self.settings.shutdown_timeout
        live = [slot for slot in self._slots if slot.alive]
        log.info("stopping %d worker process(es) (drain up to %.0fs)", len(live), timeout)
        codes: Dict[int, Optional[int]] = {}
        for slot in live:
            assert slot.process is not None
            if slot.report is None:  # not polling yet: SIGTERM may land before its handler
                codes[slot.index] = None
            try:
                slot.process.terminate()
            except OSError as exc:  # it just exited
                log.debug("worker process %d: %s", slot.index, exc)
        deadline = time.monotonic() + timeout + STOP_GRACE
        while any(slot.alive for slot in live) and time.monotonic() < deadline:
            self._wait(min(0.5, max(0.01, deadline - time.monotonic())))
        result = EXIT_OK
        for slot in live:
            process = slot.process
            assert process is not None
            if process.exitcode is None:
                log.error("worker process %d (pid %d) did not stop in time; killing it", slot.index, process.pid)
                process.kill()
                process.join(5.0)
                result = EXIT_NOT_DRAINED
            elif process.exitcode != EXIT_OK and not (
                slot.index in codes and process.exitcode == -signal.SIGTERM
            ):
                log.error("worker process %d exited with %s", slot.index, process.exitcode)
                result = EXIT_NOT_DRAINED
            if slot.conn is not None:
                slot.conn.close()
            if process.exitcode is not None:
                process.close()
            slot.process, slot.conn = None, None
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
                process = slot.process
                alive = slot.alive
                report = slot.report
                age = None if report is None else now - slot.report_time
                problems = []
                if not alive:
                    problems.append("not running (restarting)")
                elif report is None:
                    problems.append("has not reported yet")
                elif age is not None and age > stale_after:
                    problems.append(f"last reported {age:.1f}s ago")
                elif not report["health"].get("healthy"):
                    problems.append("unhealthy")
                processes.append({
                    "index": slot.index,
                    "pid": process.pid if process is not None else None,
                    "alive": alive,
                    "restarts": slot.restarts,
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
            snapshots += [slot.report["metrics"] for slot in self._slots if slot.report and slot.report.get("metrics")]
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
