"""LocalConductor under bad input and concurrency: errors stay ErrorResponses, connections survive."""

from __future__ import annotations

import http.client
import json
import threading
import time
from urllib.parse import urlsplit

import pytest
from lc_support import Api, simple
from support.waiting import wait_until


@pytest.fixture
def connection(server):
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    yield conn
    conn.close()


def _call(conn, method, path, body=None, headers=None):
    conn.request(method, "/api" + path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    return response.status, response.getheader("Content-Type"), data


def test_bad_input_gets_error_responses_on_one_connection(api, connection):
    api.task_def("t")
    api.workflow_def("wf", [simple("t")])
    workflow_id = api.start("wf")
    cases = [
        ("POST", "/metadata/taskdefs", b"{not json", 400),
        ("POST", "/metadata/taskdefs", b'[{"name": 5}]', 400),
        ("POST", "/tasks", b'{"workflowInstanceId": "%s", "taskId": "x", "status": "MAYBE"}'
         % workflow_id.encode(), 400),
        ("POST", "/tasks", b'{"workflowInstanceId": "w", "taskId": "x", "outputData": []}', 400),
        ("POST", "/tasks", b"[]", 400),
        ("POST", "/workflow/wf", b"[1, 2]", 400),
        ("POST", "/workflow/wf", b"", 400),
        ("GET", "/tasks/poll/batch/t?count=abc", None, 400),
        ("POST", "/workflow/wf?priority=x", b"{}", 400),
        ("GET", "/no/such/path", None, 404),
        ("PATCH", "/metadata/taskdefs", b"{}", 405),
        ("POST", "/tasks/some-task-id", b"{}", 405),
    ]
    first_socket = None
    for method, path, body, status in cases:
        code, content_type, data = _call(connection, method, path, body, {"Content-Type": "application/json"})
        assert code == status, (method, path, data)
        error = json.loads(data)
        assert error["status"] == status and error["message"] and error["retryable"] is False
        assert content_type == "application/json"
        first_socket = first_socket or connection.sock
        assert connection.sock is first_socket  # the connection stayed open
    assert _call(connection, "GET", "/health")[0] == 200


def test_huge_body_is_rejected_and_connection_survives(connection):
    body = b"[" + b" " * (20 * 1024 * 1024) + b"]"
    headers = {"Content-Type": "application/json"}
    code, _, data = _call(connection, "POST", "/metadata/taskdefs", body, headers)
    assert code == 413 and json.loads(data)["status"] == 413
    assert _call(connection, "GET", "/health")[0] == 200


def test_chunked_body_is_accepted(api, connection):
    def chunks():
        yield b'[{"name": '
        yield b'"chunky"}]'

    connection.request("POST", "/api/metadata/taskdefs", body=chunks(), encode_chunked=True,
                       headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    response = connection.getresponse()
    response.read()
    assert response.status == 200
    assert api.get("/metadata/taskdefs/chunky").status_code == 200


def test_waiting_batch_poll_wakes_at_once(api):
    api.task_def("t")
    api.workflow_def("wf", [simple("t")])
    result = {}
    fallback = 5.0  # the poll's own timeout (the most a long poll may ask for)

    def poll():
        result["sent"] = time.monotonic()
        result["task"] = Api(api.url).poll("t", timeout_ms=int(fallback * 1000))
        result["at"] = time.monotonic()

    poller = threading.Thread(target=poll)
    poller.start()
    # A poll records its poll data under the queue lock it then waits on: once that shows, the
    # poller is waiting (instead of a fixed sleep that a loaded machine can outlast).
    poll_data = {"taskType": "t"}
    wait_until(lambda: api.get("/tasks/queue/polldata", params=poll_data).json(), 30, message="a poll")
    api.start("wf")
    poller.join(fallback + 30)
    assert result["task"] is not None
    # Without a wake-up the poll would return only at its timeout, >= 5 s after it was sent; woken by
    # the new task it returns before that, however slow the machine was to get here.
    assert result["at"] - result["sent"] < fallback


def test_batch_poll_returns_on_count_or_timeout(api):
    api.task_def("t")
    api.workflow_def("wf", [simple("t")])
    api.start("wf")
    started = time.monotonic()
    tasks = api.get("/tasks/poll/batch/t", params={"count": 2, "timeout": 500}).json()
    assert len(tasks) == 1 and time.monotonic() - started >= 0.45
    api.start("wf")
    api.start("wf")
    started = time.monotonic()
    tasks = api.get("/tasks/poll/batch/t", params={"count": 2, "timeout": 5000}).json()
    assert len(tasks) == 2 and time.monotonic() - started < 4.5  # on count, not at the 5 s timeout


def test_concurrent_pollers_never_share_a_task(api):
    api.task_def("t")
    api.workflow_def("wf", [simple("t")])
    total = 200
    for _ in range(total):
        api.start("wf")
    seen, lock = [], threading.Lock()

    def worker():
        client = Api(api.url)
        while True:
            response = client.get("/tasks/poll/batch/t", params={"count": 3, "timeout": 200})
            tasks = response.json()
            if not tasks:
                return
            with lock:
                seen.extend(task["taskId"] for task in tasks)
            for task in tasks:
                client.complete(task)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == total and len(set(seen)) == total
