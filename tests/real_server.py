"""Run the real conductor-oss server for tests, CI and benchmarks.

Importable (``RealConductorServer``) and runnable::

    python tests/real_server.py [--version V] [--port P]    # start, print the URL, run until Ctrl-C
    python tests/real_server.py --prepare                   # one-off: extract the jar + build an AOT cache

The server runs from the Spring Boot jar in the local Maven repository (fetched with
``mvn dependency:get`` when missing) on a throwaway SQLite database in a temporary directory.
Versions 3.22+ need Java 21+; without such a runtime the newest 3.21.x on Maven Central
(``FALLBACK_VERSION``, in-memory store, Java 17) is used instead (see DECISIONS.md).

Environment:
    CONDUCTOR_SERVER_VERSION     server version (default ``DEFAULT_VERSION``)
    CONDUCTOR_REAL_SERVER_URL    use this already-running server instead of starting one
    CONDUCTOR_KEEP_SERVER_LOGS   keep the temporary directory (log + database) after stop()
    CONDUCTOR_SERVER_CACHE_DIR   where the extracted jar and AOT cache live
                                 (default ``~/.cache/conductor-workers``)
    CONDUCTOR_SERVER_JAVA_OPTS   extra JVM flags, whitespace-separated
    MAVEN_REPO_LOCAL             local Maven repository (default ``~/.m2/repository``)
"""

from __future__ import annotations

import argparse
import atexit
import glob
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Dict, List, Optional, Sequence, Tuple, Type

logger = logging.getLogger(__name__)

DEFAULT_VERSION = os.environ.get("CONDUCTOR_SERVER_VERSION") or "3.32.1"
# Newest 3.21.x published on Maven Central (3.21.20 and 3.21.21 are tags only, not on Central).
FALLBACK_VERSION = "3.21.14"
GROUP_ID = "org.conductoross"
ARTIFACT_ID = "conductor-server"
JVM_ROOT = "/usr/lib/jvm"

STOP_GRACE_SECONDS = 15.0
LOG_TAIL_LINES = 40

# JVM flags for a small (2-core) machine. SerialGC: no GC threads competing with the client
# under test; a fixed 1 GiB heap avoids resizing. C2 stays on (no TieredStopAtLevel=1) so that
# benchmark throughput is not capped by C1-only code.
JVM_FLAGS: Tuple[str, ...] = ("-Xms1g", "-Xmx1g", "-XX:+UseSerialGC", "-Dfile.encoding=UTF-8")


class RealServerError(RuntimeError):
    """The real server could not be obtained or started."""


# --------------------------------------------------------------------------- versions and Java


def parse_version(version: str) -> Tuple[int, ...]:
    """``"3.32.1"`` -> ``(3, 32, 1)``; a suffix such as ``-rc18`` is ignored."""
    numbers = re.match(r"^(\d+(?:\.\d+)*)", version)
    if not numbers:
        raise ValueError(f"not a version: {version!r}")
    return tuple(int(part) for part in numbers.group(1).split("."))


def required_java(version: str) -> int:
    """Minimum Java major version the server ``version`` runs on."""
    return 21 if parse_version(version) >= (3, 22) else 17


def uses_sqlite(version: str) -> bool:
    """Whether the bundled configuration of ``version`` is the standalone SQLite one (3.22+)."""
    return parse_version(version) >= (3, 22)


def java_major(java: str) -> Optional[int]:
    """Major version of the ``java`` executable, parsed from ``java -version``; None if unusable."""
    try:
        proc = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        logger.debug("cannot run %s -version: %s", java, exc)
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', proc.stderr + proc.stdout)
    if proc.returncode != 0 or not match:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0_392" style
        major = int(match.group(2))
    return major


def find_java(min_major: int) -> Optional[str]:
    """Path of a Java runtime of at least ``min_major``.

    ``$JAVA_HOME/bin/java`` wins if it is new enough; otherwise the newest runtime under
    /usr/lib/jvm. Returns None when there is none.
    """
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = os.path.join(java_home, "bin", "java")
        major = java_major(candidate) if os.access(candidate, os.X_OK) else None
        if major is not None and major >= min_major:
            return candidate
    best: Optional[Tuple[int, str]] = None
    for candidate in sorted(glob.glob(os.path.join(JVM_ROOT, "*", "bin", "java"))):
        real = os.path.realpath(candidate)
        major = java_major(real)
        if major is not None and major >= min_major and (best is None or major > best[0]):
            best = (major, real)
    return best[1] if best else None


def select_server(version: Optional[str] = None) -> Tuple[str, str, int]:
    """Choose ``(version, java_path, java_major)`` to run.

    Falls back to ``FALLBACK_VERSION`` on Java 17 when ``version`` needs Java 21+ and no such
    runtime exists.
    """
    wanted = version or DEFAULT_VERSION
    java = find_java(required_java(wanted))
    if java is None and required_java(wanted) > 17:
        java = find_java(17)
        if java is not None:
            logger.warning(
                "no Java %d+ runtime found: running conductor-server %s on %s instead of %s",
                required_java(wanted),
                FALLBACK_VERSION,
                java,
                wanted,
            )
            wanted = FALLBACK_VERSION
    if java is None:
        raise RealServerError(
            f"no Java {required_java(wanted)}+ runtime found (checked $JAVA_HOME and "
            f"{JVM_ROOT}/*/bin/java); install one (e.g. Temurin 21) to run conductor-server"
        )
    major = java_major(java)
    assert major is not None
    return wanted, java, major


# --------------------------------------------------------------------------- the jar


def maven_repo_local() -> Path:
    """The local Maven repository: ``$MAVEN_REPO_LOCAL``, ``-Dmaven.repo.local`` in
    ``$MAVEN_OPTS``, else ``~/.m2/repository``."""
    explicit = os.environ.get("MAVEN_REPO_LOCAL")
    if explicit:
        return Path(explicit).expanduser()
    match = re.search(r"-Dmaven\.repo\.local=(\S+)", os.environ.get("MAVEN_OPTS", ""))
    if match:
        return Path(match.group(1)).expanduser()
    return Path.home() / ".m2" / "repository"


def jar_path(version: str) -> Path:
    group_dir = Path(*GROUP_ID.split("."))
    return maven_repo_local() / group_dir / ARTIFACT_ID / version / f"{ARTIFACT_ID}-{version}-boot.jar"


def _mvn_get(artifact: str) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RealServerError(f"{artifact} is not in {maven_repo_local()} and `mvn` is not installed")
    cmd = [
        mvn,
        "-q",
        "-B",
        "dependency:get",
        f"-Dartifact={artifact}",
        "-Dtransitive=false",
        f"-Dmaven.repo.local={maven_repo_local()}",
    ]
    logger.info("fetching %s: %s", artifact, " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
        raise RealServerError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{tail}")


def ensure_jar(version: str) -> Path:
    """Path of the server's boot jar, downloading it with ``mvn dependency:get`` if missing."""
    path = jar_path(version)
    if not path.is_file():
        _mvn_get(f"{GROUP_ID}:{ARTIFACT_ID}:{version}:jar:boot")
        if not path.is_file():
            raise RealServerError(f"mvn reported success but {path} does not exist")
    return path


# --------------------------------------------------------------------------- startup speed-ups


def cache_root() -> Path:
    return Path(os.environ.get("CONDUCTOR_SERVER_CACHE_DIR") or Path.home() / ".cache" / "conductor-workers")


def extracted_jar(jar: Path, java: str, version: str) -> Optional[Path]:
    """Spring Boot 3.3+ ``-Djarmode=tools extract`` layout of ``jar``, cached; None if unsupported.

    Running the extracted jar skips opening the 450 MB nested jar at every start (a few
    seconds) and is what a JVM AOT cache needs (a stable class path).
    """
    target = cache_root() / f"{ARTIFACT_ID}-{version}" / "extracted"
    launcher = target / jar.name
    if launcher.is_file():
        return launcher
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="extract-", dir=target.parent))
    try:
        proc = subprocess.run(
            [java, "-Djarmode=tools", "-jar", str(jar), "extract", "--destination", str(staging / "x")],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0 or not (staging / "x" / jar.name).is_file():
            logger.info("jar extraction not available for %s; running the fat jar", jar.name)
            return None
        try:
            os.rename(staging / "x", target)
        except OSError:  # another process won the race
            if not launcher.is_file():
                raise
        return launcher
    except (OSError, subprocess.SubprocessError) as exc:
        logger.warning("could not extract %s (%s); running the fat jar", jar, exc)
        return None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def aot_cache_path(launcher: Path, java_major_version: int) -> Path:
    return launcher.parent.parent / f"app-java{java_major_version}.aot"


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


# --------------------------------------------------------------------------- AOT cache (opt-in)


def prepare(version: Optional[str] = None) -> Optional[Path]:
    """Fetch + extract the jar and, on Java 25+, record a JVM AOT cache (startup ~3x faster).

    The training run starts the application context and exits (``spring.context.exit=onRefresh``);
    it takes one to two minutes. Returns the cache path, or None when not applicable.
    """
    chosen, java, major = select_server(version)
    jar = ensure_jar(chosen)
    launcher = extracted_jar(jar, java, chosen)
    if launcher is None or major < 25:
        logger.info("AOT cache needs an extractable jar and Java 25+; skipped")
        return None
    target = aot_cache_path(launcher, major)
    work = Path(tempfile.mkdtemp(prefix="conductor-aot-"))
    try:
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        cmd = [
            java,
            *JVM_FLAGS,
            f"-Djava.io.tmpdir={work}",
            "--enable-native-access=ALL-UNNAMED",
            f"-XX:AOTCacheOutput={partial}",
            "-Dspring.context.exit=onRefresh",
            "-jar",
            str(launcher),
            *RealConductorServer.server_args(chosen, _free_port(), work),
        ]
        log_path = work / "training.log"
        with open(log_path, "wb") as log_file:
            code = subprocess.run(cmd, cwd=work, stdout=log_file, stderr=subprocess.STDOUT, check=False).returncode
        if code != 0 or not partial.is_file():
            raise RealServerError(f"AOT training run failed (exit {code}):\n{_tail(log_path)}")
        os.replace(partial, target)
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------- script


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", default=DEFAULT_VERSION, help="server version (default %(default)s)")
    parser.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    parser.add_argument("--timeout", type=float, default=240.0, help="startup timeout in seconds")
    parser.add_argument("--prepare", action="store_true", help="extract the jar, build the AOT cache, exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        if args.prepare:
            cache = prepare(args.version)
            print(f"AOT cache: {cache}" if cache else "no AOT cache (needs Java 25+)")
            return 0
        server = RealConductorServer(args.version, args.port)
        with server:
            print(f"{server.url}  ({server.describe()}; started in {server.startup_seconds or 0:.1f} s; "
                  f"log {server.log_path})", flush=True)
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    except RealServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
