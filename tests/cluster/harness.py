"""A Conductor cluster on this machine: PostgreSQL, two conductor-oss nodes, HAProxy in front.

* **PostgreSQL** (Debian's ``postgresql`` package, ``tests/support/postgres.py``): database, queues,
  indexing and the workflow execution lock of every node.
* **conductor-oss nodes** (``tests/support/conductor_oss``, the 3.32.1 boot jar from the local Maven
  repository, fetched with ``mvn`` when missing), each on its own loopback port, sharing that database
  (``CLUSTER_ARGS`` below on top of ``real_server.postgres_args``).
* **HAProxy** (Debian's ``haproxy``, installed with ``apt-get`` when missing and running as root) on a
  third loopback port: round robin over the nodes, health checks on ``/health`` every second, a
  connection that fails is retried on the other node. Its admin socket gives the servers' states.

Importable (:class:`ConductorCluster`) and runnable::

    python -m tests.cluster.harness [--nodes 2] [--hold]   # start, print the URLs; --hold: until Ctrl-C

Without ``--hold`` the cluster is started, checked through the load balancer and stopped again.
"""
from __future__ import annotations

import argparse
import atexit
import csv
import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Dict, List, Optional, Sequence, Type

_TESTS = Path(__file__).resolve().parent.parent
if str(_TESTS) not in sys.path:  # the support package is importable from tests/
    sys.path.append(str(_TESTS))

from support.postgres import PostgresError, PostgresServer, find_bin_dir  # noqa: E402
from support.conductor_oss import RealConductorServer, RealServerError, check_health, postgres_args  # noqa: E402

logger = logging.getLogger(__name__)

#: Spring arguments every node gets on top of ``real_server.postgres_args`` (PostgreSQL as database,
#: queue, index and payload storage). conductor-oss 3.32.1's bundled configuration sets
#: ``conductor.workflow-execution-lock.type=local_only``, a lock inside one JVM: with two nodes, two
#: deciders could work on one workflow at once. The PostgreSQL lock (``PostgresLockDAO``, a row per
#: workflow in the ``locks`` table with a lease) is shared by every node.
CLUSTER_ARGS: Sequence[str] = (
    "--conductor.app.workflowExecutionLockEnabled=true",
    "--conductor.workflow-execution-lock.type=postgres",
)

HAPROXY_CONFIG = """\
global
    maxconn 4096
    stats socket {socket} mode 600 level admin
    log stdout format raw local0

defaults
    mode http
    log global
    # abnormal requests only (errors, aborts, retries, redispatches), into haproxy.log
    option httplog
    option dontlog-normal
    timeout connect 2s
    timeout client 65s
    timeout server 65s
    timeout http-request 10s
    timeout http-keep-alive 10s
    timeout queue 10s
    # a connection refused (a dead node) is tried again on the other node; requests already sent are not
    retries 3
    option redispatch 1

frontend conductor
    bind 127.0.0.1:{port}
    default_backend conductor_nodes

backend conductor_nodes
    balance roundrobin
    option httpchk GET /health
    http-check expect status 200
    # a killed node refuses connections: DOWN after 2 checks (~1 s); a busy node may answer /health
    # slowly on a loaded machine, so a check may take up to 5 s before it counts as failed
    timeout check 5s
    default-server inter 1s fastinter 500ms downinter 1s fall 2 rise 2
{servers}
"""


class ClusterError(RuntimeError):
    """The cluster (or one of its parts) could not be installed or started."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- installing what is missing


def apt_install(package: str, timeout: float = 600.0) -> None:
    """``apt-get install -y PACKAGE`` (after ``apt-get update`` if the first attempt fails); root only."""
    apt = shutil.which("apt-get")
    if apt is None:
        raise ClusterError(f"{package} is not installed and there is no apt-get to install it")
    if os.geteuid() != 0:
        raise ClusterError(f"{package} is not installed; run: sudo apt-get install -y {package}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = [apt, "-o", "DPkg::Lock::Timeout=120", "install", "-y", "-qq", package]
    logger.info("installing %s: %s", package, " ".join(install))
    done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:  # the package lists may be missing or stale
        subprocess.run([apt, "-o", "DPkg::Lock::Timeout=120", "update", "-qq"], env=env, capture_output=True,
                       text=True, timeout=timeout, check=False)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise ClusterError(f"apt-get install {package} failed ({done.returncode}):\n{tail}")


def ensure_haproxy() -> str:
    """Path of the ``haproxy`` binary, installing Debian's package when it is missing."""
    for candidate in (shutil.which("haproxy"), "/usr/sbin/haproxy"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    apt_install("haproxy")
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None)
    if found is None:
        raise ClusterError("apt-get installed haproxy but there is no haproxy binary")
    return found


def ensure_postgres() -> None:
    """Debian's PostgreSQL server binaries, installed when missing."""
    if find_bin_dir() is None:
        apt_install("postgresql")
        if find_bin_dir() is None:
            raise ClusterError("apt-get installed postgresql but there is no initdb")


# --------------------------------------------------------------------------- HAProxy


class LoadBalancer:
    """HAProxy in the foreground (``-db``) with a generated configuration in a temporary directory."""

    def __init__(self, port: int, node_ports: Sequence[int]) -> None:
        self.port = port
        self.node_ports = list(node_ports)
        self.tmp_dir: Optional[Path] = None
        self._proc: Optional["subprocess.Popen[bytes]"] = None
        self._log: Optional[IO[bytes]] = None

    @property
    def socket_path(self) -> Path:
        assert self.tmp_dir is not None
        return self.tmp_dir / "haproxy.sock"

    def config(self) -> str:
        servers = "\n".join(f"    server node{i} 127.0.0.1:{port} check" for i, port in enumerate(self.node_ports))
        return HAPROXY_CONFIG.format(socket=self.socket_path, port=self.port, servers=servers)

    def start(self, timeout: float = 20.0) -> "LoadBalancer":
        haproxy = ensure_haproxy()
        self.tmp_dir = Path(tempfile.mkdtemp(prefix="cw-haproxy-"))
        config = self.tmp_dir / "haproxy.cfg"
        config.write_text(self.config())
        check = subprocess.run([haproxy, "-c", "-q", "-f", str(config)], capture_output=True, text=True,
                               timeout=30, check=False)
        if check.returncode != 0:
            raise ClusterError(f"haproxy refused its configuration:\n{check.stdout}{check.stderr}")
        self._log = open(self.tmp_dir / "haproxy.log", "wb")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen([haproxy, "-db", "-f", str(config)], stdin=subprocess.DEVNULL,
                                      stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self.socket_path.exists() or not self._stats_ok():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                text = (self.tmp_dir / "haproxy.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise ClusterError(f"haproxy did not start on port {self.port}:\n{text}")
            time.sleep(0.1)
        logger.info("haproxy on 127.0.0.1:%d in front of %s", self.port, self.node_ports)
        return self

    def _stats_ok(self) -> bool:
        try:
            self.stats()
        except OSError:
            return False
        return True

    def command(self, line: str) -> str:
        """One command on HAProxy's admin socket (``show stat``, ``show info``, ...); its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5.0)
            sock.connect(str(self.socket_path))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", errors="replace")

    def stats(self) -> Dict[str, Dict[str, str]]:
        """``show stat`` of the backend's servers: ``{"node0": {"status": "UP", "stot": "12", ...}, ...}``."""
        text = self.command("show stat").lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {row["svname"]: row for row in rows
                if row.get("pxname") == "conductor_nodes" and row.get("svname", "").startswith("node")}

    def states(self) -> Dict[str, str]:
        """``{"node0": "UP", "node1": "DOWN", ...}`` (HAProxy's status column, e.g. ``UP 1/2`` while changing)."""
        return {name: row.get("status", "") for name, row in self.stats().items()}

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log, self._log = self._log, None
        if log is not None:
            log.close()
        if self.tmp_dir is not None and not os.environ.get("CONDUCTOR_KEEP_SERVER_LOGS"):
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
            self.tmp_dir = None
        elif self.tmp_dir is not None:
            logger.info("kept haproxy files in %s", self.tmp_dir)


# --------------------------------------------------------------------------- the cluster


class ConductorCluster:
    """PostgreSQL + ``nodes`` conductor-oss nodes + HAProxy, all on free loopback ports.

    ``url`` is the load balancer's API (``http://127.0.0.1:<port>/api``, what workers are pointed at);
    ``node_urls`` the nodes' own. ``kill_node(i)`` SIGKILLs node ``i``'s JVM, ``start_node(i)`` starts it
    again on the same port and database. ``stop()`` stops everything and removes the temporary files.
    """

    def __init__(self, nodes: int = 2, extra_args: Sequence[str] = (), version: Optional[str] = None) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.version = version
        self.extra_args = list(extra_args)
        self.lb_port = _free_port()
        self.node_ports = [_free_port() for _ in range(nodes)]
        while len(set(self.node_ports + [self.lb_port])) < nodes + 1:  # the OS may hand a port out twice
            self.node_ports = [_free_port() for _ in range(nodes)]
        self.postgres = PostgresServer()
        self.nodes: List[Optional[RealConductorServer]] = [None] * nodes
        self.lb = LoadBalancer(self.lb_port, self.node_ports)
        self.startup_seconds: Dict[str, float] = {}
        self._lock = threading.Lock()  # start_node / kill_node from a test's helper thread

    # -- URLs

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.lb_port}"

    @property
    def url(self) -> str:
        """The load balancer's API URL (``server_url`` for clients and workers)."""
        return f"{self.base_url}/api"

    @property
    def node_base_urls(self) -> List[str]:
        return [f"http://127.0.0.1:{port}" for port in self.node_ports]

    @property
    def node_urls(self) -> List[str]:
        return [f"{base}/api" for base in self.node_base_urls]

    def node_args(self) -> List[str]:
        """The Spring arguments of a node beyond the port and the standalone defaults."""
        return list(CLUSTER_ARGS) + self.extra_args

    # -- lifecycle

    def start(self, timeout: float = 300.0) -> "ConductorCluster":
        deadline = time.monotonic() + timeout
        atexit.register(self.stop)
        try:
            began = time.monotonic()
            ensure_haproxy()  # before anything starts: installing may take a while
            ensure_postgres()
            self.startup_seconds["install"] = time.monotonic() - began
            began = time.monotonic()
            self.postgres.start()
            self.startup_seconds["postgres"] = time.monotonic() - began
            # One after the other: the first node runs the schema migrations (Flyway) on the empty database.
            for index in range(len(self.nodes)):
                self.start_node(index, timeout=max(30.0, deadline - time.monotonic()))
            began = time.monotonic()
            self.lb.start()
            self.wait_lb(up=range(len(self.nodes)), timeout=max(10.0, deadline - time.monotonic()))
            if check_health(self.base_url, timeout=5.0) is None:
                raise ClusterError(f"{self.base_url}/health is not healthy through the load balancer")
            self.startup_seconds["haproxy"] = time.monotonic() - began
        except BaseException:
            self.stop()
            raise
        return self

    def _make_node(self, index: int) -> RealConductorServer:
        return RealConductorServer(self.version, port=self.node_ports[index],
                                   postgres_jdbc_url=self.postgres.jdbc_url, extra_args=self.node_args())

    def start_node(self, index: int, timeout: float = 240.0) -> RealConductorServer:
        """Start node ``index`` (again) on its port; returns once its ``/health`` is healthy."""
        with self._lock:
            old = self.nodes[index]
            if old is not None and old.is_running():
                return old
            if old is not None:
                old.stop()  # the killed JVM's files
            node = self._make_node(index)
            self.nodes[index] = node
        node.start(timeout=timeout)
        self.startup_seconds[f"node{index}"] = node.startup_seconds or 0.0
        logger.info("node %d healthy on %s after %.1f s", index, node.base_url, node.startup_seconds or 0.0)
        return node

    def kill_node(self, index: int) -> None:
        """SIGKILL node ``index``'s JVM: no shutdown hooks, connections reset, locks and popped messages left."""
        with self._lock:
            node = self.nodes[index]
            if node is None:
                raise ClusterError(f"node {index} is not running")
            node.kill()
        logger.info("node %d killed", index)

    def node_alive(self, index: int) -> bool:
        node = self.nodes[index]
        return node is not None and node.is_running()

    def wait_lb(self, up: Sequence[int] = (), down: Sequence[int] = (), timeout: float = 30.0) -> Dict[str, str]:
        """Wait until HAProxy sees the nodes in ``up`` UP and those in ``down`` DOWN; their states."""
        deadline = time.monotonic() + timeout
        states: Dict[str, str] = {}
        while True:
            try:
                states = self.lb.states()
            except OSError as exc:
                states = {"error": str(exc)}
            if all(states.get(f"node{i}") == "UP" for i in up) and all(
                    states.get(f"node{i}", "").startswith("DOWN") for i in down):
                return states
            if time.monotonic() > deadline:
                raise ClusterError(f"load balancer states after {timeout:.0f} s: {states} (wanted up {list(up)}, "
                                   f"down {list(down)})")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop HAProxy, every node and PostgreSQL; remove their files. Safe to call twice."""
        atexit.unregister(self.stop)
        errors = []
        self.lb.stop()
        for index, node in enumerate(self.nodes):
            if node is not None:
                try:
                    node.stop()
                except Exception as exc:  # noqa: BLE001 - stop the others, then report
                    errors.append(f"node {index}: {exc}")
        self.nodes = [None] * len(self.nodes)
        self.postgres.stop()
        if errors:
            raise ClusterError("; ".join(errors))

    def __enter__(self) -> "ConductorCluster":
        return self.start()

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.stop()

    def describe(self) -> str:
        lines = [
            f"load balancer  {self.url}   (HAProxy, round robin, health checks on /health)",
            *(f"node {i}         {url}" for i, url in enumerate(self.node_urls)),
            f"postgres       {self.postgres.jdbc_url}   (user/password conductor)",
            "node arguments " + " ".join(postgres_args(self.postgres.jdbc_url, "http://127.0.0.1:<node port>")
                                         + self.node_args()),
            "started in     " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.startup_seconds.items()),
        ]
        return "\n".join(lines)


def get_json(url: str, timeout: float = 10.0) -> object:
    """GET ``url`` and decode its JSON (for quick checks through the load balancer)."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read().decode("utf-8") or "null")


# --------------------------------------------------------------------------- script


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=2, help="conductor-oss nodes (default 2)")
    parser.add_argument("--hold", action="store_true", help="keep the cluster up until Ctrl-C or SIGTERM")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()  # never set: the hold ends with the KeyboardInterrupt of a signal

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    try:
        with ConductorCluster(args.nodes) as cluster:
            print(cluster.describe(), flush=True)
            print(f"through the load balancer: {get_json(cluster.base_url + '/health')}", flush=True)
            if args.hold:
                print("holding; Ctrl-C or SIGTERM stops the cluster", flush=True)
                while not stop.wait(3600):
                    pass
    except KeyboardInterrupt:
        return 0
    except (ClusterError, PostgresError, RealServerError, urllib.error.URLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
