"""Connection handling of LocalConductor's HTTP front end: a poller for idle sockets, a bounded pool.

A thread per open connection lets 10,000 connections that send nothing hold 10,000 threads (and
hundreds of MB). Here a connection only has a thread while it has a request to serve:

* a newly accepted connection waits in a selector until its first bytes arrive;
* after a response, the serving thread waits up to ``linger`` seconds for the next request on the
  same connection (a worker's pooled connection is back well within that, so the hot path is a
  plain blocking read); then the connection goes back to the selector and the thread to the pool;
* a connection idle in the selector for ``idle_timeout`` seconds is closed (Tomcat's default
  keep-alive timeout, 60 s, is what the real server does); when ``max_connections`` are open, the
  connection idle the longest is closed to make room, so a flood of silent connections cannot lock
  out the next client;
* at most ``max_threads`` requests are served at once (Tomcat's default is 200); more wait, in order.

Registrations reach the selector through a queue and a wake-up socket pair, so only the poller
thread touches the selector.
"""

from __future__ import annotations

import collections
import logging
import queue
import selectors
import socket
import ssl
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Optional, Set

log = logging.getLogger(__name__)

#: Seconds a connection may sit idle (in the selector) before it is closed.
DEFAULT_IDLE_TIMEOUT = 60.0
#: Seconds a thread waits on its connection for the next request before parking the connection.
DEFAULT_LINGER = 1.0
#: Requests served at the same time.
DEFAULT_MAX_THREADS = 256
#: Open connections kept at most (and below the process's open-file limit, see `connection_limit`).
DEFAULT_MAX_CONNECTIONS = 16384
#: File descriptors left for the database, the listening socket, logs and the like.
_SPARE_FDS = 64


def connection_limit(wanted: int) -> int:
    """``wanted``, lowered to what the open-file limit allows (accept() fails with EMFILE beyond)."""
    try:
        import resource
    except ImportError:  # not on Unix
        return wanted
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(16, min(wanted, int(soft) - _SPARE_FDS))


class Connection:
    """One accepted socket and what the HTTP layer keeps of it between requests."""

    __slots__ = ("sock", "address", "handshaken", "idle_since")

    def __init__(self, sock: socket.socket, address: Any) -> None:
        self.sock = sock
        self.address = address
        self.handshaken = not isinstance(sock, ssl.SSLSocket)  # TLS: done on the first serve
        self.idle_since = time.monotonic()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            log.debug("shutdown of a connection from %s failed (already gone)", self.address)
        self.sock.close()


#: ``serve(connection) -> keep``: serve the requests that have arrived on ``connection``; True to
#: keep it open (it is then parked until its next request), False to close it.
ServeCallback = Callable[[Connection], bool]


class ConnectionManager:
    """Parks idle connections in a selector and serves ready ones on a bounded thread pool."""

    def __init__(self, serve: ServeCallback, max_threads: int = DEFAULT_MAX_THREADS,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT, linger: float = DEFAULT_LINGER) -> None:
        self._serve = serve
        self._max_threads = max_threads
        self.max_connections = connection_limit(max_connections)
        self._idle_timeout = idle_timeout
        self.linger = linger
        self._lock = threading.Lock()
        self._open: Set[Connection] = set()  # every connection not yet closed
        self._active: Set[Connection] = set()  # being served on a thread
        self._parked: Dict[Connection, None] = {}  # insertion order = oldest idle first (poller only)
        self._incoming: Deque[Connection] = collections.deque()  # to park, handed to the poller
        self._ready: "queue.SimpleQueue[Optional[Connection]]" = queue.SimpleQueue()
        self._threads: List[threading.Thread] = []
        self._idle_threads = 0
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._closing = threading.Event()
        self._poller = threading.Thread(target=self._poll_loop, name="local-conductor-poller", daemon=True)
        self._poller.start()

    # -- intake ---------------------------------------------------------------------------------
    def add(self, sock: socket.socket, address: Any) -> None:
        """A newly accepted connection: park it until its first request arrives."""
        connection = Connection(sock, address)
        with self._lock:
            if self._closing.is_set():
                connection.close()
                return
            self._open.add(connection)
        self._park(connection)

    def _park(self, connection: Connection) -> None:
        connection.idle_since = time.monotonic()
        self._incoming.append(connection)
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):  # full (the poller is already due to wake) or closed
            return

    # -- the poller -----------------------------------------------------------------------------
    def _poll_loop(self) -> None:
        next_expiry = time.monotonic() + 1.0
        while not self._closing.is_set():
            try:
                events = self._selector.select(timeout=1.0)
            except OSError:
                log.exception("LocalConductor's connection poller failed; retrying")
                self._closing.wait(0.1)
                continue
            for key, _mask in events:
                if key.fileobj is self._wake_r:
                    self._drain_wake()
                    continue
                connection: Connection = key.data
                self._selector.unregister(connection.sock)
                self._parked.pop(connection, None)
                self._dispatch(connection)
            self._register_incoming()
            now = time.monotonic()
            if now >= next_expiry:
                self._expire(now)
                next_expiry = now + 1.0
        for connection in list(self._parked):
            self._discard(connection)
        self._parked.clear()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            return

    def _register_incoming(self) -> None:
        while self._incoming:
            connection = self._incoming.popleft()
            try:
                self._selector.register(connection.sock, selectors.EVENT_READ, connection)
            except (ValueError, OSError, KeyError):  # closed meanwhile
                self._discard(connection)
                continue
            self._parked[connection] = None
        while len(self._open) > self.max_connections and self._parked:
            oldest = next(iter(self._parked))
            log.debug("closing the longest-idle connection from %s: %d connections open",
                      oldest.address, len(self._open))
            self._unpark_and_close(oldest)

    def _expire(self, now: float) -> None:
        for connection in list(self._parked):
            if now - connection.idle_since < self._idle_timeout:
                break  # parked in order: the rest are younger
            self._unpark_and_close(connection)

    def _unpark_and_close(self, connection: Connection) -> None:
        self._parked.pop(connection, None)
        try:
            self._selector.unregister(connection.sock)
        except (KeyError, ValueError, OSError):
            log.debug("connection from %s was not registered", connection.address)
        self._discard(connection)

    def _discard(self, connection: Connection) -> None:
        with self._lock:
            self._open.discard(connection)
        connection.close()

    # -- the pool -------------------------------------------------------------------------------
    def _dispatch(self, connection: Connection) -> None:
        with self._lock:
            self._active.add(connection)
            start = self._idle_threads == 0 and len(self._threads) < self._max_threads
            if start:
                thread = threading.Thread(target=self._work, name="local-conductor-http", daemon=True)
                self._threads.append(thread)
            elif self._idle_threads:  # an idle thread takes it (at the cap with none idle, it waits its turn)
                self._idle_threads -= 1
        self._ready.put(connection)
        if start:
            thread.start()

    def _work(self) -> None:
        while True:
            connection = self._ready.get()
            if connection is None:
                return
            keep = False
            try:
                keep = self._serve(connection)
            except Exception:  # a bug in serving one connection must not take the thread down
                log.exception("serving a connection from %s failed", connection.address)
            with self._lock:
                self._active.discard(connection)
                self._idle_threads += 1
            if keep and not self._closing.is_set():
                self._park(connection)
            else:
                self._discard(connection)

    # -- shutdown -------------------------------------------------------------------------------
    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    def close(self, timeout: float = 5.0) -> None:
        """Close every connection and join the threads (each finishes the request it serves)."""
        with self._lock:
            self._closing.set()
            active = list(self._active)
            threads = list(self._threads)
        self._wake()
        self._poller.join(timeout)
        for connection in active:
            try:
                connection.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                log.debug("shutdown of an active connection from %s failed", connection.address)
        for _ in threads:
            self._ready.put(None)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        while self._incoming:
            self._discard(self._incoming.popleft())
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
