"""LocalConductor's resources stay bounded under connection floods and endless bodies.

The flood tests run the server in its own process (``conductor-workers server``) so that its
memory and thread count can be read from /proc, and so that 10,000 client sockets and 10,000
server sockets do not share one open-file limit.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from typing import Iterator, List, Tuple

import pytest
import requests
from lc_support import simple

from conductor_workers.server.engine import Engine
from conductor_workers.server.http import ConductorHTTPServer
from conductor_workers.server.routes import Api

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and raises RLIMIT_NOFILE"),
]

FLOOD = 10_000


def _status(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(status.read().split(field + ":")[1].split()[0])


def _rss_mb(pid: int) -> float:
    return _status(pid, "VmRSS") / 1024


@pytest.fixture
def server_process() -> Iterator[Tuple[subprocess.Popen, str, int]]:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 3 * FLOOD) if hard != resource.RLIM_INFINITY else 3 * FLOOD
    if wanted < FLOOD + 500:
        pytest.skip(f"the open-file limit ({hard}) is too low for {FLOOD} connections")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))  # the child inherits it
    proc = subprocess.Popen([sys.executable, "-m", "conductor_workers", "server", "--port", "0",
                             "--log-level", "warning"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        match = re.search(r"http://\S+", proc.stdout.readline())
        assert match, "the server did not print its URL"
        url = match.group(0)
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        yield proc, url, port
    finally:
        proc.terminate()
        proc.wait(30)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _health_times(url: str, times: int = 5) -> List[float]:
    took = []
    for _ in range(times):
        started = time.monotonic()
        assert requests.get(url + "/health", timeout=10).status_code == 200
        took.append(time.monotonic() - started)
    return took


def test_ten_thousand_silent_connections_cost_no_threads_and_health_answers(server_process):
    proc, url, port = server_process
    _health_times(url, 1)
    rss_before = _rss_mb(proc.pid)
    silent = []
    try:
        for _ in range(FLOOD):
            sock = socket.socket()
            sock.setblocking(False)
            try:
                sock.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            silent.append(sock)
        time.sleep(2.0)  # let the server accept them all
        took = _health_times(url)
        threads, rss_after = _status(proc.pid, "Threads"), _rss_mb(proc.pid)
        assert max(took) < 1.0, took
        assert threads < 50, f"{threads} threads for {FLOOD} silent connections"
        assert rss_after - rss_before < 64, f"RSS grew {rss_after - rss_before:.0f} MB"
    finally:
        for sock in silent:
            sock.close()
    # and the server still runs a workflow afterwards
    api = requests.Session()
    api.post(url + "/metadata/taskdefs", json=[{"name": "after_flood"}]).raise_for_status()
    api.post(url + "/metadata/workflow", json={"name": "after_flood_wf", "version": 1,
                                               "tasks": [simple("after_flood")]}).raise_for_status()
    workflow_id = api.post(url + "/workflow/after_flood_wf", json={}).text
    polled = api.get(url + "/tasks/poll/after_flood").json()
    assert polled["workflowInstanceId"] == workflow_id


def test_an_endless_chunked_body_is_cut_off_with_memory_bounded(server_process):
    proc, url, port = server_process
    rss_before = _rss_mb(proc.pid)
    peak = [rss_before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], _rss_mb(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    sent_mb, cut_off = 0, False
    chunk = b"100000\r\n" + b"x" * 0x100000 + b"\r\n"  # 1 MB chunks, for ever
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /api/tasks/t-1/log HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            while sent_mb < 2048:
                sock.sendall(chunk)
                sent_mb += 1
                if sent_mb % 64 == 0:
                    assert max(_health_times(url, 1)) < 1.0
        except OSError:
            cut_off = True
    stop.set()
    sampler.join()
    assert cut_off, f"the server read {sent_mb} MB of one body without closing"
    assert peak[0] - rss_before < 64, f"RSS grew {peak[0] - rss_before:.0f} MB while reading the body"
    _health_times(url, 1)


# -- the connection manager's limits, on a small in-process server ---------------------------------


@pytest.fixture
def small_server() -> Iterator[Tuple[ConductorHTTPServer, str]]:
    engine = Engine(None, 0.5)
    engine.start()
    server = ConductorHTTPServer(("127.0.0.1", 0), Api(engine), max_connections=40, idle_timeout=1.5)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield server, "http://127.0.0.1:%d/api" % server.server_address[1]
    finally:
        server.shutdown()
        thread.join()
        engine.wake_all()
        server.close_all()
        server.server_close()
        engine.close()


def test_at_the_connection_cap_the_longest_idle_connection_makes_room(small_server):
    server, url = small_server
    port = server.server_address[1]
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(200)]
    try:
        time.sleep(0.5)
        assert _health_times(url, 3)
        assert server.connections.open_connections <= 41
        closed = 0
        for sock in silent[:50]:  # the oldest ones were closed by the server
            sock.settimeout(2)
            try:
                closed += sock.recv(1) == b""
            except OSError:
                closed += 1
        assert closed == 50
    finally:
        for sock in silent:
            sock.close()


def test_an_idle_connection_is_closed_after_the_idle_timeout(small_server):
    server, url = small_server
    port = server.server_address[1]
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert sock.recv(1) == b""  # closed by the server
        assert 1.0 < time.monotonic() - started < 4.5
    assert server.connections.open_connections == 0


def test_pipelined_requests_on_one_connection_are_all_answered(small_server):
    server, url = small_server
    port = server.server_address[1]
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
        sock.settimeout(5)
        received = b""
        while received.count(b"HTTP/1.1 200") < 3:
            data = sock.recv(65536)
            assert data, received
            received += data
