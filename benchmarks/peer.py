"""The official Conductor Python SDK as a peer: its virtualenv and its workers.

Standard library only, so benchmarks and tests can use it from any interpreter.

* :func:`ensure_peer_venv` makes ``<repo>/.bench/peer-venv`` with
  ``conductor-python==PEER_VERSION`` in it (once; a marker file remembers it).
* :func:`start_peer_workers` runs ``benchmarks/peer_worker.py`` with that venv's
  python in a new session (so a new process group), and :func:`stop` kills the
  whole group and checks that nothing of it is left. The SDK starts one process
  per worker plus helpers, and a SIGTERM to its parent alone leaves them
  running as orphans that keep polling.

Command line: ``python benchmarks/peer.py`` makes the venv and prints its python.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Dict, List, Optional, Sequence, Union

#: Newest 2.x release of ``conductor-python`` that installs (``pip index versions conductor-python``).
PEER_VERSION = "2.0.0"
PEER_DISTRIBUTION = "conductor-python"

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VENV_PATH = REPO_ROOT / ".bench" / "peer-venv"
PEER_WORKER_SCRIPT = Path(__file__).resolve().parent / "peer_worker.py"

_MARKER_NAME = "conductor-peer.json"

StrPath = Union[str, "os.PathLike[str]"]


class PeerError(RuntimeError):
    """The peer virtualenv or the peer workers could not be set up or stopped."""


class PeerInstallError(PeerError):
    """``pip install`` into the peer virtualenv failed (often: no route to PyPI).

    ``output`` holds pip's combined stdout and stderr.
    """

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


# --- the virtualenv ---------------------------------------------------------------


def venv_python(venv: Path) -> Path:
    if os.name == "nt":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def _wanted_marker(version: str) -> Dict[str, str]:
    return {
        "distribution": PEER_DISTRIBUTION,
        "version": version,
        # A venv is tied to the interpreter that made it; a new one means a new venv.
        "base_python": os.path.realpath(sys.executable),
        "base_python_version": "%d.%d.%d" % sys.version_info[:3],
    }


def _read_marker(venv: Path) -> Optional[Dict[str, str]]:
    try:
        data = json.loads((venv / _MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _run(cmd: Sequence[str], timeout: float, what: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            list(cmd),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.output if isinstance(exc.output, str) else ""
        raise PeerInstallError(f"{what} did not finish in {timeout:.0f} s: {' '.join(cmd)}", out) from None


class _DirLock:
    """An exclusive ``flock`` on a file, so parallel test runs build the venv once.

    A no-op where ``fcntl`` does not exist (Windows).
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fh: Optional[IO[str]] = None

    def __enter__(self) -> "_DirLock":
        try:
            import fcntl
        except ImportError:
            return self
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self._path, "w")
        fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()  # closing releases the lock
            self._fh = None


def ensure_peer_venv(
    path: Optional[StrPath] = None,
    version: str = PEER_VERSION,
    *,
    pip_timeout: float = 600.0,
) -> Path:
    """Make (or reuse) a virtualenv with ``conductor-python==version``; return its python.

    The venv is made with ``python -m venv`` by the interpreter running this
    code. It is reused when its marker file names the same version and base
    interpreter and its python still exists; otherwise it is rebuilt from
    scratch. Raises :class:`PeerInstallError` with pip's output if pip fails.
    """
    venv = Path(path) if path is not None else DEFAULT_VENV_PATH
    venv = venv.resolve()
    wanted = _wanted_marker(version)
    python = venv_python(venv)

    with _DirLock(venv.parent / (venv.name + ".lock")):
        if _read_marker(venv) == wanted and python.exists():
            return python

        venv.parent.mkdir(parents=True, exist_ok=True)
        marker = venv / _MARKER_NAME
        if marker.exists():
            marker.unlink()  # a half-built venv must never look finished
        proc = _run(
            [sys.executable, "-m", "venv", "--clear", str(venv)],
            timeout=120.0,
            what="python -m venv",
        )
        if proc.returncode != 0 or not python.exists():
            raise PeerError(f"python -m venv {venv} failed (exit {proc.returncode}):\n{proc.stdout}")

        proc = _run(
            [
                str(python), "-m", "pip", "install",
                "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
                f"{PEER_DISTRIBUTION}=={version}",
            ],
            timeout=pip_timeout,
            what="pip install",
        )
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.splitlines()[-25:])
            raise PeerInstallError(
                f"pip install {PEER_DISTRIBUTION}=={version} into {venv} failed "
                f"(exit {proc.returncode}); is PyPI reachable?\n{tail}",
                proc.stdout,
            )

        marker.write_text(json.dumps(wanted, indent=2) + "\n")
    return python


# --- the peer workers ---------------------------------------------------------------


@dataclass
class PeerHandle:
    """A running ``peer_worker.py``; ``pgid`` is its process group (= its pid)."""

    process: subprocess.Popen
    pgid: int
    command: List[str]
    log_path: Path
    _log_file: Optional[IO[bytes]] = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        """What the peer printed so far (stdout and stderr), for error messages."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def start_peer_workers(
    python: StrPath,
    server_url: str,
    task_types: Sequence[str],
    *,
    threads: int = 1,
    mode: str = "noop",
    poll_interval_ms: Optional[int] = None,
    record_file: Optional[StrPath] = None,
    log_path: Optional[StrPath] = None,
    env: Optional[Dict[str, str]] = None,
) -> PeerHandle:
    """Start ``peer_worker.py`` with the peer venv's ``python`` in its own session.

    ``task_types`` get one official-SDK worker each. Output goes to
    ``log_path`` (a temporary file if not given). ``env`` entries are added to
    this process's environment (e.g. ``CONDUCTOR_WORKER_ISOLATION``).
    Returns at once; the SDK needs about 2 s to make its first poll.
    """
    if not task_types:
        raise ValueError("task_types is empty")
    cmd = [
        str(python), str(PEER_WORKER_SCRIPT),
        "--server-url", server_url,
        "--task", ",".join(task_types),
        "--threads", str(threads),
        "--mode", mode,
    ]
    if poll_interval_ms is not None:
        cmd += ["--poll-interval-ms", str(poll_interval_ms)]
    if record_file is not None:
        cmd += ["--record-file", os.fspath(record_file)]

    if log_path is None:
        import tempfile

        fd, name = tempfile.mkstemp(prefix="peer-worker-", suffix=".log")
        os.close(fd)
        log = Path(name)
    else:
        log = Path(log_path)
    log_file = open(log, "ab")

    child_env = dict(os.environ)
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    if env:
        child_env.update(env)
    try:
        process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=child_env,
            start_new_session=True,  # own process group: stop() can kill every descendant
        )
    except BaseException:
        log_file.close()
        raise
    return PeerHandle(process=process, pgid=process.pid, command=cmd, log_path=log, _log_file=log_file)


def group_pids(pgid: int) -> List[int]:
    """Live (non-zombie) processes in process group ``pgid``, from ``/proc``.

    Where there is no ``/proc``, falls back to ``killpg(pgid, 0)`` and returns
    ``[pgid]`` if anything in the group exists.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    pids = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid pgrp ..."; comm may contain spaces and parentheses.
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return sorted(pids)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def stop(handle: PeerHandle, *, grace: float = 10.0, kill_wait: float = 5.0) -> int:
    """Stop the peer and every process it started; return the leader's exit code.

    Sends SIGTERM to the whole process group, waits up to ``grace`` seconds for
    the group to empty, then sends SIGKILL and waits up to ``kill_wait``
    seconds more. Raises :class:`PeerError` if a process of the group is
    still alive after that.
    """
    pgid = handle.pgid
    try:
        _killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            handle.process.poll()  # reap the leader so it stops counting
            if handle.process.returncode is not None and not group_pids(pgid):
                break
            time.sleep(0.05)
        else:
            _killpg(pgid, signal.SIGKILL)

        deadline = time.monotonic() + kill_wait
        while True:
            handle.process.poll()
            left = group_pids(pgid)
            if handle.process.returncode is not None and not left:
                break
            if time.monotonic() >= deadline:
                raise PeerError(f"peer process group {pgid} still has processes {left} after SIGKILL")
            _killpg(pgid, signal.SIGKILL)
            time.sleep(0.05)
    finally:
        if handle._log_file is not None:
            handle._log_file.close()
            handle._log_file = None
    return handle.process.returncode


def main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Make the official-SDK peer venv; print its python.")
    parser.add_argument("--path", default=None, help=f"venv directory (default {DEFAULT_VENV_PATH})")
    parser.add_argument("--version", default=PEER_VERSION)
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        python = ensure_peer_venv(args.path, args.version)
    except PeerError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(python)
    print(f"ready in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
