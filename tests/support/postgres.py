"""A throwaway PostgreSQL server on a loopback port, from Debian's ``postgresql`` package.

``PostgresServer().start()`` runs ``initdb`` into a temporary directory, starts ``postgres`` on a free
127.0.0.1 port (its socket in that directory too), and creates the role and database ``conductor``
(password ``conductor``); ``stop()`` stops it and removes everything. Run as root (CI), the cluster
belongs to the ``postgres`` system user, as initdb refuses to run as root. The real-server harness
uses it for conductor-oss with PostgreSQL (database, queues, indexing and external payload storage);
the cluster set-up of later work can share it.

    python tests/support/postgres.py    # start one, print its JDBC URL, run until Ctrl-C
"""
from __future__ import annotations

import glob
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

logger = logging.getLogger(__name__)

DATABASE = USER = PASSWORD = "conductor"


class PostgresError(RuntimeError):
    pass


def find_bin_dir() -> Optional[Path]:
    """The newest ``/usr/lib/postgresql/<major>/bin`` with initdb, or the one on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    def __init__(self) -> None:
        self.port = 0
        self.tmp_dir: Optional[Path] = None
        self._bin: Optional[Path] = None
        self._as_user: Dict[str, Any] = {}  # Popen's user/group/extra_groups when running as root
        self._proc: Optional["subprocess.Popen[bytes]"] = None

    @property
    def jdbc_url(self) -> str:
        return f"jdbc:postgresql://127.0.0.1:{self.port}/{DATABASE}"

    def start(self, timeout: float = 60.0) -> "PostgresServer":
        self._bin = find_bin_dir()
        if self._bin is None:
            raise PostgresError("no PostgreSQL server binaries (install Debian's 'postgresql' package)")
        self.tmp_dir = Path(tempfile.mkdtemp(prefix="cw-postgres-"))
        data = self.tmp_dir / "data"
        if os.geteuid() == 0:  # initdb refuses root: run the cluster as the package's system user
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresError("running as root, but there is no 'postgres' system user") from None
            os.chown(self.tmp_dir, owner.pw_uid, owner.pw_gid)
            self._as_user = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
        self.port = _free_port()
        self._run([str(self._bin / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                   "--no-sync"])
        log_path = self.tmp_dir / "postgres.log"
        log_file = open(log_path, "wb")  # noqa: SIM115 - the child keeps its own descriptor
        try:
            self._proc = subprocess.Popen(
                [str(self._bin / "postgres"), "-D", str(data), "-p", str(self.port), "-h", "127.0.0.1",
                 "-k", str(self.tmp_dir), "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=200"],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                **self._as_user,
            )
        finally:
            log_file.close()
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                self.stop()
                raise PostgresError(f"postgres did not start on port {self.port}:\n{tail}")
            time.sleep(0.2)
        self._psql(f"CREATE ROLE {USER} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
        self._psql(f"CREATE DATABASE {DATABASE} OWNER {USER}")
        logger.info("postgres on 127.0.0.1:%d (%s)", self.port, self.tmp_dir)
        return self

    def _run(self, cmd: List[str]) -> None:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **self._as_user)
        if done.returncode != 0:
            raise PostgresError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:]}")

    def _ready(self) -> bool:
        assert self._bin is not None
        done = subprocess.run([str(self._bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
                              capture_output=True, timeout=10)
        return done.returncode == 0

    def _psql(self, sql: str) -> None:
        assert self._bin is not None
        self._run([str(self._bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                   "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # "fast" shutdown
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.tmp_dir is not None:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
            self.tmp_dir = None

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    with PostgresServer() as server:
        print(server.jdbc_url, flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
