"""The servers a benchmark runs against (LocalConductor in its own process, the real conductor-oss
server from tests/real_server.py, or a URL), and starting our worker process.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent

sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(HERE))

import peer  # noqa: E402

OUR_WORKER_SCRIPT = HERE / "our_worker.py"


# --------------------------------------------------------------------------- servers


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(base_url + "/health", timeout=2) as response:
            return response.status == 200
    except Exception:  # noqa: BLE001
        return False


class Server:
    """The server under the benchmark: ``url`` ends in /api, ``base_url`` does not."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self.version = ""
        self._proc: Optional[subprocess.Popen] = None
        self._real: Any = None
        self._log = None
        if kind == "local":
            port = _free_port()
            self.base_url = f"http://127.0.0.1:{port}"
            self._log = open(tmp / "local-server.log", "wb")
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "conductor_workers", "server", "--port", str(port), "--log-level", "warning"],
                stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )
            deadline = time.monotonic() + 30
            while not _healthy(self.base_url):
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"LocalConductor did not start; see {tmp / 'local-server.log'}")
                time.sleep(0.1)
            from conductor_workers import __version__

            self.version = f"LocalConductor (conductor_workers {__version__})"
        elif kind == "real":
            sys.path.insert(0, str(REPO_ROOT / "tests"))
            from support.conductor_oss import RealConductorServer  # type: ignore[import-not-found]

            self._real = RealConductorServer()
            self._real.start()
            self.base_url = self._real.base_url
            self.version = f"conductor-oss {self._real.version}"
        else:
            url = kind.rstrip("/")
            self.base_url = url[: -len("/api")] if url.endswith("/api") else url
            self.version = f"external {self.base_url}"
        self.url = self.base_url + "/api"
        parsed = urllib.parse.urlsplit(self.base_url)
        if parsed.scheme != "http":
            raise SystemExit("the counting proxy only speaks plain http; give an http:// URL")
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 80

    def stop(self) -> None:
        if self._proc is not None:
            try:
                os.killpg(self._proc.pid, signal.SIGTERM)
                self._proc.wait(15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self._proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self._proc.wait(5)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._real is not None:
            self._real.stop()
            self._real = None


def start_our_workers(server_url: str, task_types: List[str], *, threads: int, mode: str,
                      record_file: Optional[Path], log_path: Path, env: Dict[str, str]) -> peer.PeerHandle:
    """``our_worker.py`` in its own session, like :func:`peer.start_peer_workers` does the peer's.

    Returns a :class:`peer.PeerHandle`, so :func:`peer.stop` stops both sides the same way.
    """
    cmd = [sys.executable, str(OUR_WORKER_SCRIPT), "--server-url", server_url, "--task", ",".join(task_types),
           "--threads", str(threads), "--mode", mode]
    if record_file is not None:
        cmd += ["--record-file", str(record_file)]
    log_file = open(log_path, "ab")
    try:
        process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                   env=dict(os.environ, PYTHONUNBUFFERED="1", **env), start_new_session=True)
    except BaseException:
        log_file.close()
        raise
    return peer.PeerHandle(process=process, pgid=process.pid, command=cmd, log_path=log_path, _log_file=log_file)
