"""One worker process of ``conductor-workers run`` under its supervisor (:mod:`._supervisor`): the
child's side of the pipe between them.

* :func:`child_main` is the spawned process's entry: it builds its :class:`WorkerService` and serves
  until SIGTERM/SIGINT, the parent's ``stop`` message, or the parent's death; then it drains.
* A :class:`_ParentLink` thread sends the parent a report every second: the health report, the
  metrics snapshot, ``serving`` (polling has started) and ``recycle`` (why the process is due for
  replacement, see :mod:`._recycling`, or None). After the drain, the main thread sends a final
  report, so that the parent has every count of a child that exits normally.
* The pipe's other end is the parent's alone: EOF means the parent is gone (even by SIGKILL), and
  the child drains and exits by itself; ``os.getppid()`` changing is a backstop.
* A child that could not drain within the shutdown timeout (a task that never returns) leaves with
  ``os._exit``: its stuck thread would otherwise hold the interpreter's exit until the parent kills it.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any, Dict, Optional

from ._recycling import RecycleLimits, resident_memory
from ._run import (
    EXIT_NOT_DRAINED,
    EXIT_OK,
    CommandError,
    RunSettings,
    StopOnSignals,
    WorkerService,
    configure_logging,
)

log = logging.getLogger(__name__)

REPORT_INTERVAL = 1.0  # seconds between a child's reports
LIMIT_CHECK_INTERVAL = 0.1  # seconds between checks of --max-tasks/memory-per-child
STOP = "stop"  # the parent's one message: stop polling, drain and exit


class _ParentLink:
    """The child's end of its pipe: reports every second (and a final one), hears ``stop``, and
    notices the parent's death. ``stop`` is the child's own event: set, the service drains."""

    def __init__(self, conn: Connection, service: WorkerService, stop: threading.Event, parent_pid: int,
                 limits: RecycleLimits) -> None:
        self._conn = conn
        self._service = service
        self._stop = stop
        self._parent_pid = parent_pid
        self._limits = limits
        self._send_lock = threading.Lock()  # guards the pipe's write side: reports and the final one
        self._closed = threading.Event()  # the final report is sent: no more reports
        self._recycle: Optional[str] = None  # why this process is due for replacement, once it is

    def watch(self) -> None:
        """Thread body (see :meth:`_watch`): a failure of its own stops the service, so that a child
        never goes on without the link that would tell it its parent is gone."""
        try:
            self._watch()
        except Exception:  # noqa: BLE001 - logged; the child drains and exits
            log.exception("the link to the supervisor failed: stopping")
            self._stop.set()

    def _watch(self) -> None:
        """Report until the final report, and stop the service when told or orphaned.

        With a task or memory limit the limits are checked every ``LIMIT_CHECK_INTERVAL``, and a
        report goes out at once when the process becomes due; otherwise every report checks them.
        """
        active = self._limits.max_tasks is not None or self._limits.max_memory_mb is not None
        interval = LIMIT_CHECK_INTERVAL if active else REPORT_INTERVAL
        last_report = 0.0
        while not self._closed.is_set():
            try:
                if self._conn.poll(interval) and self._conn.recv() == STOP and not self._stop.is_set():
                    log.info("the supervisor asked to stop")
                    self._stop.set()
                health = self._service.health()
                due = self._check(health)
                if due or time.monotonic() - last_report >= REPORT_INTERVAL - interval / 2:
                    self._send(health)
                    last_report = time.monotonic()
            except (EOFError, OSError):
                if not self._closed.is_set():
                    log.warning("the supervisor (pid %d) is gone: stopping", self._parent_pid)
                self._stop.set()
                return
            if os.getppid() != self._parent_pid:
                log.warning("the supervisor (pid %d) is gone (now a child of %d): stopping",
                            self._parent_pid, os.getppid())
                self._stop.set()
                return

    def _check(self, health: Dict[str, Any]) -> bool:
        """True when this process has just become due for replacement."""
        if self._recycle is not None or self._stop.is_set():
            return False
        self._recycle = self._limits.reason(health, resident_memory())
        if self._recycle is not None:
            log.info("due for replacement: %s", self._recycle)
        return self._recycle is not None

    def close(self) -> None:
        """After the drain: the final report (its counts are complete), then no more."""
        self._send(self._service.health(), final=True)

    def _send(self, health: Dict[str, Any], *, final: bool = False) -> None:
        message = {"health": health, "metrics": self._service.metrics_snapshot(),
                   "serving": self._service.started.is_set(), "recycle": self._recycle}
        with self._send_lock:  # nothing goes after the final report (the parent keeps the last one)
            if self._closed.is_set():
                return
            if final:
                self._closed.set()
                try:
                    self._conn.send(message)
                except OSError as exc:  # the parent is gone: nobody to count them
                    log.debug("final report not sent: %s", exc)
            else:
                self._conn.send(message)


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
        limits = RecycleLimits(settings.max_tasks_per_child, settings.max_memory_per_child)
        link = _ParentLink(conn, service, stop, parent_pid, limits)
        watcher = threading.Thread(target=link.watch, name="cw-supervisor-pipe", daemon=True)
        try:
            watcher.start()
            code = service.serve(stop)
        except CommandError as exc:
            log.error("worker process %d: %s", index, exc)
            code = exc.exit_code
        finally:
            stop.set()
            link.close()
            service.close()
    # Drained (or not) already: a SIGTERM the supervisor sends now, as it shuts down, must not turn this
    # exit into a death by signal (the handler above is gone; the default action would end us with -15).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if code != EXIT_OK:
        # Not drained: a task's thread may still run, and the interpreter's exit would wait for it
        # (the pool joins its threads). Its slot is lost either way; leave now, logs flushed.
        logging.shutdown()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)


__all__ = ["REPORT_INTERVAL", "STOP", "child_main"]
