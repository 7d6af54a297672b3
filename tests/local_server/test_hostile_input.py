"""LocalConductor under hostile input: bounded reads, auth before the body, numbers that cannot poison.

One test per case that the hardening issue reproduced (each fails on the main before the fix).
"""
from __future__ import annotations

import socket
import threading
import time
from typing import List, Tuple
from urllib.parse import urlsplit

from lc_support import Api, simple

from conductor_workers.testing import LocalConductor


def _raw(server: LocalConductor, request: bytes, wait: float = 3.0) -> bytes:
    """Send ``request`` and read what comes back within ``wait`` s, keeping our side open."""
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=wait) as sock:
        sock.sendall(request)
        sock.settimeout(wait)
        try:
            return sock.recv(65536)
        except socket.timeout:
            return b""


# -- 1. unbounded body reads, and reads before authentication -------------------------------------------


def test_a_negative_chunk_size_is_refused_at_once(server):
    head = (
        b"POST /api/tasks/t-1/log HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n-1\r\n"
    )
    answer = _raw(server, head + b"x" * 100_000)  # and the client never closes
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]


def test_authentication_is_decided_before_the_body_is_read():
    with LocalConductor(auth=("key", "secret")) as server:
        head = (
            b"POST /api/metadata/taskdefs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 200000000\r\n\r\n"
        )
        started = time.monotonic()
        answer = _raw(server, head)  # 200 MB announced, none sent
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        assert time.monotonic() - started < 2.5
        assert Api(server.url).get("/health").status_code == 200


# -- 2. numbers that used to poison the store ------------------------------------------------------------


def test_a_huge_response_timeout_does_not_poison_polls(api):
    api.task_def("huge_rto", responseTimeoutSeconds=1e16)
    api.workflow_def("huge_rto_wf", [simple("huge_rto")])
    workflow_id = api.start("huge_rto_wf")
    task = api.poll("huge_rto")
    assert task is not None
    api.complete(task)
    assert api.get("/workflow/" + workflow_id).json()["status"] == "COMPLETED"
    assert api.get("/tasks/poll/batch/huge_rto", params={"count": 1, "timeout": 0}).status_code == 200


def test_integers_out_of_their_java_range_are_a_400(api):
    cases = [
        ("/metadata/taskdefs", [{"name": "bad_delay", "retryDelaySeconds": 1e16}]),
        ("/metadata/taskdefs", [{"name": "bad_retry", "retryCount": 2 ** 40}]),
    ]
    for path, body in cases:
        response = api.post(path, json=body)
        assert response.status_code == 400, (body, response.status_code, response.text)
    response = api.put("/metadata/workflow", json=[{"name": "bad_version", "version": 1e30, "tasks": [simple("t")]}])
    assert response.status_code == 400, response.text
    response = api.get("/tasks/poll/batch/t", params={"count": 2 ** 63, "timeout": 0})
    assert response.status_code == 400, response.text
    assert api.get("/health").status_code == 200


# -- 4. JSON nested too deep -----------------------------------------------------------------------------


def test_json_nested_thousands_deep_is_a_400(api):
    body = "[" * 5000 + "]" * 5000
    response = api.post("/metadata/taskdefs", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text[:200]


# -- 5. a burst of new connections -----------------------------------------------------------------------


def test_a_burst_of_new_connections_does_not_stall(server):
    parts = urlsplit(server.url)
    count = 300
    times: List[float] = []
    sockets: List[socket.socket] = []
    lock = threading.Lock()
    barrier = threading.Barrier(count)

    def connect() -> None:
        barrier.wait()
        started = time.monotonic()
        sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
        with lock:
            times.append(time.monotonic() - started)
            sockets.append(sock)

    threads = [threading.Thread(target=connect) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    try:
        assert len(times) == count
        slow: List[Tuple[int, float]] = [(i, t) for i, t in enumerate(times) if t >= 0.9]
        assert not slow, f"{len(slow)} of {count} connects took a SYN retransmit (>= 0.9 s)"
    finally:
        for sock in sockets:
            sock.close()


# -- 3. an update that names another workflow ------------------------------------------------------------


def test_an_update_naming_another_workflow_still_moves_the_tasks_own_workflow(api):
    """conductor-oss 3.32.1 (measured): 200, the task completes, and its own workflow is re-decided by
    the workflow sweeper about 30 s later (its next task SCHEDULED). LocalConductor decides it at once."""
    api.task_def("xa")
    api.task_def("xb")
    api.workflow_def("xwf", [simple("xa", "a"), simple("xb", "b")])
    first, second = api.start("xwf"), api.start("xwf")
    task = api.poll("xa")
    other = api.poll("xa")
    assert task is not None and other is not None
    if task["workflowInstanceId"] != first:
        task, other = other, task
    wrong = {"taskId": task["taskId"], "workflowInstanceId": second, "status": "COMPLETED", "outputData": {"x": 1}}
    assert api.post("/tasks", json=wrong).status_code == 200
    own = api.get("/workflow/" + first).json()
    assert [(t["referenceTaskName"], t["status"]) for t in own["tasks"]] == [("a", "COMPLETED"), ("b", "SCHEDULED")]
    named = api.get("/workflow/" + second).json()
    assert [(t["referenceTaskName"], t["status"]) for t in named["tasks"]] == [("a", "IN_PROGRESS")]
