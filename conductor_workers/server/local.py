"""``LocalConductor``: an in-process, Conductor-compatible server for workers and their tests.

Pure standard library (``http.server`` + ``sqlite3``). Start it in a test or a sample, point a
client at :attr:`LocalConductor.url`, and stop it when done::

    with LocalConductor() as server:
        client = ConductorClient(Configuration(server_url=server.url))
        ...

``db_path=None`` keeps everything in memory; a file path persists every definition, workflow,
task, queue entry (with its due time), poll record and task log in SQLite (WAL mode), so a
server started again on the same file carries on where the previous one stopped.
"""

from __future__ import annotations

import logging
import ssl
import threading
from types import TracebackType
from typing import Iterable, Optional, Tuple, Type

from .auth import TokenAuth
from .engine import Engine
from .http import ConductorHTTPServer
from .payloads import PayloadLimits
from .routes import Api
from .scripts import ScriptLimits

log = logging.getLogger(__name__)

#: Token lifetime of the Orkes-style auth flow, in seconds (Orkes SDKs refresh every 45 min).
DEFAULT_TOKEN_TTL = 3600.0
#: Upper bound of the sweeper's sleep, in seconds (it wakes earlier for a known deadline).
DEFAULT_SWEEP_INTERVAL = 0.5


class LocalConductor:
    """An embedded Conductor server for tests, samples and local runs.

    It runs SIMPLE tasks for workers and the system tasks workflows use (SWITCH, FORK_JOIN,
    DO_WHILE, SUB_WORKFLOW, WAIT, INLINE, ...; JavaScript and jq need the ``server`` extra).

    :param port: TCP port; 0 picks a free one (see :attr:`port` after :meth:`start`).
    :param host: interface to bind.
    :param db_path: SQLite file to persist state in; None keeps it in memory.
    :param auth: ``(key_id, key_secret)`` to require Orkes-style tokens (``POST /api/token``
        and the ``X-Authorization`` header); None serves without auth, like conductor-oss.
    :param token_ttl: lifetime of issued tokens, in seconds.
    :param tls: an ``ssl.SSLContext`` (server side) to serve HTTPS.
    :param sweep_interval: longest time, in seconds, between two timeout sweeps.
    :param payload_limits: external payload thresholds (:class:`PayloadLimits`; the defaults are
        conductor-oss's: 3072 KB for tasks, 5120 KB for workflows, a 10240 KB maximum task output).
        Payloads above them are kept in LocalConductor's own storage, served under
        ``/api/external/local/{key}`` (GET, and PUT for workers that upload).
    :param http_allowed_hosts: hosts that HTTP tasks may call besides this machine's loopback
        addresses (``"*"`` allows any host); others fail the task with a reason.
    :param script_limits: time and memory limits of each JavaScript evaluation and jq query
        (:class:`ScriptLimits`; by default conductor-oss's 4 s and 256 MB). Scripts run in runner
        processes: one that runs too long or allocates too much fails its own task, never the server.
    """

    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        db_path: Optional[str] = None,
        auth: Optional[Tuple[str, str]] = None,
        token_ttl: float = DEFAULT_TOKEN_TTL,
        tls: Optional[ssl.SSLContext] = None,
        sweep_interval: float = DEFAULT_SWEEP_INTERVAL,
        payload_limits: Optional[PayloadLimits] = None,
        http_allowed_hosts: Iterable[str] = (),
        script_limits: Optional[ScriptLimits] = None,
    ) -> None:
        self._payload_limits = payload_limits
        self._script_limits = script_limits
        self._http_allowed_hosts = tuple(http_allowed_hosts)
        self._requested_port = port
        self._host = host
        self._db_path = db_path
        self._auth = TokenAuth(auth[0], auth[1], token_ttl) if auth else None
        self._tls = tls
        self._sweep_interval = sweep_interval
        self._engine: Optional[Engine] = None
        self._server: Optional[ConductorHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # Life cycle -------------------------------------------------------------------------------
    def start(self) -> "LocalConductor":
        """Open the database, bind the port and start serving; returns ``self``."""
        if self._server is not None:
            raise RuntimeError("LocalConductor is already running")
        engine = Engine(self._db_path, self._sweep_interval, self._payload_limits, self._http_allowed_hosts,
                        self._script_limits)
        api = Api(engine, self._auth)
        try:
            address = (self._host, self._requested_port)
            server = ConductorHTTPServer(address, api, self._auth, self._tls)
        except BaseException:
            engine.close()
            raise
        engine.start()
        self._engine, self._server = engine, server
        api.root_url = self.url[: -len("/api")]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="local-conductor-accept", daemon=True)
        self._thread.start()
        log.info("LocalConductor serving on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving, close every connection, join every thread and close the database."""
        server, engine, thread = self._server, self._engine, self._thread
        if server is None or engine is None or thread is None:
            return
        engine.stop_scripts()  # a script under way would hold the engine's lock until its time limit
        server.shutdown()  # no new connections
        thread.join()
        engine.wake_all()  # release long polls
        server.close_all()
        server.server_close()
        engine.close()
        self._server = self._engine = self._thread = None
        log.info("LocalConductor stopped")

    def __enter__(self) -> "LocalConductor":
        return self.start()

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.stop()

    # Properties -------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The bound TCP port (only meaningful while running)."""
        if self._server is None:
            return self._requested_port
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL of the API, ending in ``/api`` (what a client's ``server_url`` wants)."""
        scheme = "https" if self._tls is not None else "http"
        host = self._host if ":" not in self._host else "[%s]" % self._host
        return "%s://%s:%d/api" % (scheme, host, self.port)

    @property
    def running(self) -> bool:
        return self._server is not None

    # Test helpers -----------------------------------------------------------------------------
    def expire_tokens(self) -> None:
        """Make every token issued so far expired (auth mode): the next call gets EXPIRED_TOKEN."""
        if self._auth is None:
            raise RuntimeError("LocalConductor was started without auth")
        self._auth.expire_all()

    def sweep(self) -> None:
        """Run the timeout sweeper once, now (it also runs by itself in the background)."""
        if self._engine is None:
            raise RuntimeError("LocalConductor is not running")
        self._engine.sweep()

    def __repr__(self) -> str:
        state = self.url if self.running else "stopped"
        return "LocalConductor(%s)" % state
