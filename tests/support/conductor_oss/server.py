"""``RealConductorServer``: one conductor-oss JVM on a loopback port with a throwaway database
(SQLite, or PostgreSQL via ``postgres_args``), health checks, logs, stop and kill."""
from __future__ import annotations

import atexit
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Dict, List, Optional, Sequence, Type
from .jar import aot_cache_path, ensure_jar, extracted_jar, jar_path
from .java import DEFAULT_VERSION, JVM_FLAGS, LOG_TAIL_LINES, RealServerError, STOP_GRACE_SECONDS, logger, select_server, uses_sqlite


# --------------------------------------------------------------------------- the server


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def check_health(base_url: str, timeout: float = 2.0) -> Optional[Dict[str, object]]:
    """The ``/health`` JSON when the server says it is healthy, else None."""
    try:
        with urllib.request.urlopen(f"{base_url}/health", timeout=timeout) as resp:
            body = json.loads(resp.read().decode("utf-8"))
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) and body.get("healthy") is True else None


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


class RealConductorServer:
    """A conductor-oss server on a free loopback port with a throwaway database.

    ``url`` ends in ``/api`` (the client's ``server_url``); ``base_url`` is the root
    (``/health`` lives there). With ``CONDUCTOR_REAL_SERVER_URL`` set, nothing is started and
    that server is used.
    """

    def __init__(
        self,
        version: Optional[str] = None,
        port: Optional[int] = None,
        postgres_jdbc_url: Optional[str] = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        """``postgres_jdbc_url``: run on PostgreSQL (database, queues, indexing and the external
        payload storage, served under ``/api/external/postgres/``) instead of SQLite; the role and
        password are ``conductor`` (see ``tests/postgres_server.py``). ``extra_args``: more Spring
        arguments, e.g. ``--conductor.app.taskOutputPayloadSizeThreshold=1024`` (KB)."""
        self.postgres_jdbc_url = postgres_jdbc_url
        self.extra_args = list(extra_args)
        # the environment's already-running server stands in for the SQLite one only
        self.external_url = None if postgres_jdbc_url else (os.environ.get("CONDUCTOR_REAL_SERVER_URL") or None)
        self.requested_version = version or DEFAULT_VERSION
        self.version = self.requested_version
        self.port = port
        self.base_url = ""
        self.url = ""
        self.java: Optional[str] = None
        self.java_major: Optional[int] = None
        self.tmp_dir: Optional[Path] = None
        self.log_path: Optional[Path] = None
        self.startup_seconds: Optional[float] = None
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self._log_file: Optional[IO[bytes]] = None
        if self.external_url:
            base = self.external_url.rstrip("/")
            self.base_url = base[: -len("/api")] if base.endswith("/api") else base
            self.url = f"{self.base_url}/api"
            self.version = os.environ.get("CONDUCTOR_SERVER_VERSION") or "external"

    # -- lifecycle

    def start(self, timeout: float = 240.0) -> "RealConductorServer":
        if self.external_url:
            if check_health(self.base_url, timeout=10.0) is None:
                raise RealServerError(f"CONDUCTOR_REAL_SERVER_URL={self.external_url}: {self.base_url}/health is not healthy")
            return self
        if self._proc is not None:
            return self
        self.version, self.java, self.java_major = select_server(self.requested_version)
        jar = ensure_jar(self.version)
        launcher = extracted_jar(jar, self.java, self.version) or jar
        self.tmp_dir = Path(tempfile.mkdtemp(prefix=f"conductor-{self.version}-"))
        self.log_path = self.tmp_dir / "server.log"
        port = self.port or _free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        self.url = f"{self.base_url}/api"
        cmd = self._command(launcher, port)
        logger.info("starting conductor-server %s on %s (log: %s)", self.version, self.base_url, self.log_path)
        logger.debug("command: %s", shlex.join(cmd))
        started = time.monotonic()
        log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._log_file = log_file
        self._proc = subprocess.Popen(
            cmd,
            cwd=self.tmp_dir,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the terminal reaches us, not the JVM directly
        )
        atexit.register(self.stop)
        try:
            self._wait_healthy(timeout)
        except BaseException:
            self.stop(keep_logs=True)
            raise
        self.startup_seconds = time.monotonic() - started
        logger.info("conductor-server %s healthy after %.1f s", self.version, self.startup_seconds)
        return self

    def _command(self, launcher: Path, port: int) -> List[str]:
        assert self.java is not None and self.tmp_dir is not None and self.java_major is not None
        jvm = list(JVM_FLAGS) + [f"-Djava.io.tmpdir={self.tmp_dir}"]
        if self.java_major >= 21:
            jvm.append("--enable-native-access=ALL-UNNAMED")  # silences sqlite-jdbc's warning
        aot = aot_cache_path(launcher, self.java_major)
        if self.java_major >= 25 and aot.is_file():
            jvm.append(f"-XX:AOTCache={aot}")  # AOTMode=auto: a stale cache is ignored
        jvm += shlex.split(os.environ.get("CONDUCTOR_SERVER_JAVA_OPTS", ""))
        args = self.server_args(self.version, port, self.tmp_dir)
        if self.postgres_jdbc_url:
            args = [arg for arg in args if not arg.startswith("--spring.datasource.url=")]
            args += postgres_args(self.postgres_jdbc_url, f"http://127.0.0.1:{port}")
        return [self.java, *jvm, "-jar", str(launcher), *args, *self.extra_args]

    @staticmethod
    def server_args(version: str, port: int, tmp_dir: Path) -> List[str]:
        """Spring arguments: loopback port, throwaway store, optional subsystems off."""
        args = [f"--server.port={port}", "--server.address=127.0.0.1"]
        if uses_sqlite(version):
            args += [
                f"--spring.datasource.url=jdbc:sqlite:{tmp_dir}/conductor.db?busy_timeout=15000&journal_mode=WAL",
                # AI/LLM system tasks: 17 fewer system-task pollers, no outbound provider setup.
                "--conductor.integrations.ai.enabled=false",
                # Workflow scheduler (cron) module: not used by workers; skips its migrations.
                "--conductor.scheduler.enabled=false",
                "--conductor.metrics-prometheus.enabled=false",
                # AI file storage would otherwise create ~/worker-payload.
                f"--conductor.file-storage.parentDir={tmp_dir}/files",
            ]
        return args

    def describe_store(self) -> str:
        return "PostgreSQL (with external payload storage)" if self.postgres_jdbc_url else "SQLite"

    def _wait_healthy(self, timeout: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise RealServerError(self._failure(f"conductor-server {self.version} exited with code {code}"))
            if check_health(self.base_url) is not None:
                return
            if time.monotonic() > deadline:
                raise RealServerError(self._failure(f"conductor-server {self.version} not healthy after {timeout:.0f} s"))
            time.sleep(0.25)

    def _failure(self, headline: str) -> str:
        assert self.log_path is not None
        return f"{headline}; log: {self.log_path}\n--- last {LOG_TAIL_LINES} log lines ---\n{_tail(self.log_path)}"

    def stop(self, keep_logs: bool = False) -> None:
        """Stop the JVM (SIGTERM, SIGKILL after 15 s) and remove the temporary directory."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                logger.warning("conductor-server did not stop in %.0f s; killing it", STOP_GRACE_SECONDS)
                proc.kill()
                proc.wait()
        log_file, self._log_file = self._log_file, None
        if log_file is not None:
            log_file.close()
        keep = keep_logs or bool(os.environ.get("CONDUCTOR_KEEP_SERVER_LOGS"))
        if self.tmp_dir is not None and not keep:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
            self.tmp_dir = None
        elif self.tmp_dir is not None and proc is not None:
            logger.info("kept conductor-server files in %s", self.tmp_dir)

    def is_running(self) -> bool:
        """Whether the JVM this object started is still alive."""
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the JVM (no shutdown hooks run), for failure tests; ``stop()`` still cleans up."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)

    def __enter__(self) -> "RealConductorServer":
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    def describe(self) -> str:
        if self.external_url:
            return f"external server {self.url} (version {self.version})"
        return f"conductor-server {self.version} on Java {self.java_major} ({self.java}) at {self.url}"


def postgres_args(jdbc_url: str, conductor_url: str) -> List[str]:
    """conductor-oss on PostgreSQL throughout, with the PostgreSQL external payload storage.

    The payload storage shares the one Spring datasource, so it cannot sit beside the SQLite store:
    everything moves to PostgreSQL (as the project's docker ``config-postgres.properties`` does).
    """
    return [
        f"--spring.datasource.url={jdbc_url}",
        "--spring.datasource.username=conductor",
        "--spring.datasource.password=conductor",
        "--conductor.db.type=postgres",
        "--conductor.queue.type=postgres",
        "--conductor.indexing.type=postgres",
        "--conductor.external-payload-storage.type=postgres",
        f"--conductor.external-payload-storage.postgres.conductor-url={conductor_url}",
    ]


def describe_selection(version: Optional[str] = None) -> str:
    """One line saying which server and Java a session would use (for report headers)."""
    external = os.environ.get("CONDUCTOR_REAL_SERVER_URL")
    if external:
        return f"real server: external {external}"
    try:
        chosen, java, major = select_server(version)
    except RealServerError as exc:
        return f"real server: unavailable ({exc})"
    return f"real server: conductor-server {chosen} on Java {major} ({java}), jar {jar_path(chosen)}"
