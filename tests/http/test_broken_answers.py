"""Answers that break mid-body, polls that must not be re-sent, wrong-shaped answers, token secrecy.

Each test talks to the scripted loopback server (nothing mocked) and pins one failure path of the
HTTP boundary: whatever happens during a call, the body read included, surfaces as a
ConductorError, and connections go back to the pool.
"""
from __future__ import annotations

import json
import logging
import time

import pytest
import requests

from conductor_workers.errors import APIError, ConductorError, InvalidResponseError, TransportError
from conductor_workers.models import TaskResult

from support.scripted_server import Reply, ScriptedServer

TASK_JSON = {"taskId": "t-1", "taskType": "greet", "status": "IN_PROGRESS", "workflowInstanceId": "w-1"}
RESULT = TaskResult.complete({"x": 1}, task_id="t-1", workflow_instance_id="w-1")



def _not_requests_error(error: BaseException) -> None:
    assert isinstance(error, ConductorError)
    assert not isinstance(error, requests.exceptions.RequestException)


# -- 1. the body is read inside the error translation ----------------------------------------------------


def test_update_v2_answer_truncated_mid_body_is_a_conductor_error(server: ScriptedServer, make_client):
    server.route("POST", "tasks/update-v2", Reply(200, TASK_JSON, truncate_to=10))
    client = make_client(server.base, max_retries=0)
    with pytest.raises(ConductorError) as info:
        client.tasks.update_task_v2(RESULT)
    _not_requests_error(info.value)
    # a short body is a broken answer with urllib3 2 (which checks) and 1.26 (which does not) alike
    assert isinstance(info.value, TransportError)


def test_truncated_text_answer_is_a_transport_error(server: ScriptedServer, make_client):
    server.route("POST", "tasks", Reply(200, "t-1-with-a-longer-id", truncate_to=3))
    client = make_client(server.base, max_retries=0)
    with pytest.raises(TransportError):
        client.tasks.update_task(RESULT)


def test_answer_stalled_mid_body_is_a_transport_error(server: ScriptedServer, make_client):
    server.route("GET", "tasks/t-1", Reply(200, TASK_JSON, truncate_to=5, stall_after_body_part=30.0))
    client = make_client(server.base, max_retries=0, read_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(TransportError) as info:
        client.tasks.get_task("t-1")
    _not_requests_error(info.value)
    assert time.monotonic() - started < 10.0  # the read timeout, not the server closing after 30 s


def test_calls_whose_body_nobody_reads_give_their_connection_back(server: ScriptedServer, make_client):
    server.route("PUT", "workflow/w-1/pause", Reply(200, "paused, with a body nobody reads"))
    client = make_client(server.base)
    for _ in range(20):
        client.workflows.pause("w-1")
    assert server.count("PUT", "workflow/w-1/pause") == 20
    assert server.connections == 1


# -- 2. a batch poll is never re-sent once it may have reached the server ---------------------------------


def test_batch_poll_read_timeout_is_not_resent(server: ScriptedServer, make_client):
    server.route("GET", "tasks/poll/batch/greet", Reply(200, [TASK_JSON], delay=10.0))
    client = make_client(server.base, max_retries=3, backoff_factor=0, read_timeout=0.3)
    with pytest.raises(TransportError):
        client.tasks.batch_poll("greet", count=1, timeout_ms=0)
    time.sleep(1.2)  # a re-sent attempt would have arrived by now
    assert server.count("GET", "tasks/poll/batch/greet") == 1


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_batch_poll_is_not_resent_on_a_retryable_status(server: ScriptedServer, make_client, status):
    server.route("GET", "tasks/poll/batch/greet", Reply(status, {"message": "busy"}, headers={"Retry-After": "60"}))
    client = make_client(server.base, max_retries=3, backoff_factor=0)
    started = time.monotonic()
    with pytest.raises(APIError) as info:
        client.tasks.batch_poll("greet", count=1, timeout_ms=0)
    assert time.monotonic() - started < 10.0  # no sleep on the Retry-After (60 s, 30 capped) in urllib3
    assert server.count("GET", "tasks/poll/batch/greet") == 1
    assert info.value.retryable
    if status in (429, 503):
        assert info.value.retry_after == 30.0  # the server's 60 s, capped


def test_batch_poll_connect_errors_are_still_retried(make_client, free_port):
    client = make_client(f"http://127.0.0.1:{free_port}", max_retries=2, backoff_factor=0)
    with pytest.raises(TransportError):
        client.tasks.batch_poll("greet", count=1, timeout_ms=0)


def test_idempotent_gets_still_retry_a_503_with_a_capped_retry_after(server: ScriptedServer, make_client):
    server.route(
        "GET", "tasks/t-1", Reply(503, {"message": "busy"}, headers={"Retry-After": "0"}), Reply(200, TASK_JSON)
    )
    client = make_client(server.base, max_retries=2, backoff_factor=0)
    assert client.tasks.get_task("t-1").task_id == "t-1"
    assert server.count("GET", "tasks/t-1") == 2


@pytest.mark.parametrize(
    "header, expected",
    [("0", 0.0), ("7", 7.0), ("120", 30.0), ("garbage", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0), ("", None)],
)
def test_retry_after_is_parsed_and_capped(server: ScriptedServer, make_client, header, expected):
    server.route("POST", "tasks", Reply(429, {"message": "slow down"}, headers={"Retry-After": header}))
    client = make_client(server.base, max_retries=0)
    with pytest.raises(APIError) as info:
        client.tasks.update_task(RESULT)
    assert info.value.retry_after == expected


# -- 8. wrong-shaped answers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [["a", "b"], {"taskId": "t-1"}, 42, "text", [{"taskId": "t-1", "status": 5}], [{"inputData": [1, 2]}]],
    ids=["strings", "object", "number", "string", "bad-status", "bad-input"],
)
def test_wrong_shaped_poll_answer_is_an_invalid_response(server: ScriptedServer, make_client, body):
    server.route("GET", "tasks/poll/batch/greet", Reply(200, body))
    client = make_client(server.base)
    with pytest.raises(InvalidResponseError):
        client.tasks.batch_poll("greet", count=2, timeout_ms=0)


@pytest.mark.parametrize("body", [["a"], 42, "text"], ids=["list", "number", "string"])
def test_wrong_shaped_update_v2_answer_is_an_invalid_response(server: ScriptedServer, make_client, body):
    server.route("POST", "tasks/update-v2", Reply(200, body, content_type="application/json"))
    client = make_client(server.base)
    with pytest.raises(InvalidResponseError):
        client.tasks.update_task_v2(RESULT)


def test_truncated_poll_answer_is_a_conductor_error(server: ScriptedServer, make_client):
    server.route("GET", "tasks/poll/batch/greet", Reply(200, [TASK_JSON, TASK_JSON], truncate_to=30))
    client = make_client(server.base, max_retries=3)
    with pytest.raises(ConductorError) as info:
        client.tasks.batch_poll("greet", count=2, timeout_ms=0)
    _not_requests_error(info.value)
    assert server.count("GET", "tasks/poll/batch/greet") == 1


# -- 9. a token endpoint's odd answer never leaks the token ------------------------------------------------

SECRET_TOKEN = "tok-SECRET-7f3a9c"


@pytest.mark.parametrize(
    "body",
    [SECRET_TOKEN, json.dumps({"accessToken": SECRET_TOKEN}), json.dumps([SECRET_TOKEN]), json.dumps({"token": 5})],
    ids=["plain-text", "other-key", "list", "not-a-string"],
)
def test_unexpected_token_answer_does_not_leak_it(server: ScriptedServer, make_client, caplog, body):
    server.route("POST", "token", Reply(200, body, content_type="application/json"))
    server.route("GET", "tasks/t-1", Reply(200, TASK_JSON))
    client = make_client(server.base, key_id="key", key_secret="SECRET-key-secret")
    caplog.set_level(logging.DEBUG, logger="conductor_workers")
    with pytest.raises(InvalidResponseError) as info:
        client.tasks.get_task("t-1")
    for text in (str(info.value), repr(info.value), info.value.body, caplog.text, repr(client.config)):
        assert SECRET_TOKEN not in text
        assert "SECRET-key-secret" not in text


# -- found in review: odd headers and bodies never escape as foreign exceptions ----------------------------


def test_a_non_ascii_retry_after_is_ignored(server: ScriptedServer, make_client):
    server.route("POST", "tasks", Reply(429, {"message": "slow down"}, headers={"Retry-After": "\u00b2"}))
    client = make_client(server.base, max_retries=0)
    with pytest.raises(APIError) as info:
        client.tasks.update_task(RESULT)
    assert info.value.status_code == 429 and info.value.retry_after is None


@pytest.mark.parametrize("status", [200, 500])
def test_json_nested_too_deep_is_a_conductor_error(server: ScriptedServer, make_client, status):
    server.route("GET", "tasks/t-1", Reply(status, "[" * 100_000 + "]" * 100_000, content_type="application/json"))
    client = make_client(server.base, max_retries=0)
    with pytest.raises(InvalidResponseError if status == 200 else APIError):
        client.tasks.get_task("t-1")


def test_one_malformed_item_does_not_cost_the_good_tasks_of_a_poll(server: ScriptedServer, make_client, caplog):
    server.route("GET", "tasks/poll/batch/greet", Reply(200, [TASK_JSON, "junk", {**TASK_JSON, "taskId": 7}]))
    client = make_client(server.base)
    caplog.set_level(logging.WARNING, logger="conductor_workers")
    assert [task.task_id for task in client.tasks.batch_poll("greet", count=3, timeout_ms=0)] == ["t-1"]
    assert len([r for r in caplog.records if "skipped" in r.getMessage()]) == 2


def test_a_host_name_that_cannot_be_encoded_is_an_invalid_request(make_client):
    from conductor_workers.errors import InvalidRequestError

    client = make_client("http://" + "a" * 70 + ".example/api", max_retries=0)
    with pytest.raises(InvalidRequestError):
        client.tasks.update_task(RESULT)
