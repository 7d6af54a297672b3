"""How the client turns what a server (or the network) does into conductor_workers errors.

Every test talks to a real loopback HTTP server (see conftest.py); nothing is mocked.
"""
from __future__ import annotations

import math
import time
from typing import Any

import pytest

from conductor_workers.client import ConductorClient
from conductor_workers.errors import (
    APIError,
    AuthenticationError,
    ConductorError,
    ConflictError,
    EndpointNotSupportedError,
    InvalidResponseError,
    NotFoundError,
    TransportError,
)
from conductor_workers.models import StartWorkflowRequest, TaskResult

from scripted_server import Reply, ScriptedServer

TASK_JSON = {"taskId": "t-1", "taskType": "greet", "status": "IN_PROGRESS", "workflowInstanceId": "w-1"}
RESULT = TaskResult.complete({"x": 1}, task_id="t-1", workflow_instance_id="w-1")



@pytest.fixture
def client(server: ScriptedServer, make_client: Any) -> ConductorClient:
    return make_client(server.base)


# -- transport ---------------------------------------------------------------------------------------


def test_connection_refused(make_client, free_port):
    client = make_client(f"http://127.0.0.1:{free_port}")
    with pytest.raises(TransportError) as info:
        client.workflows.running("wf", version=1)
    error = info.value
    assert f"http://127.0.0.1:{free_port}/api/workflow/running/wf" in str(error)
    assert error.url == f"http://127.0.0.1:{free_port}/api/workflow/running/wf"
    assert error.method == "GET"
    assert "server_url" in str(error)
    assert isinstance(error, ConductorError)


def test_connection_refused_for_post_and_with_retries(make_client, free_port):
    client = make_client(f"http://127.0.0.1:{free_port}/api/", max_retries=2)
    started = time.monotonic()
    with pytest.raises(TransportError, match=str(free_port)):
        client.tasks.update_task(RESULT)
    assert time.monotonic() - started < 3.0  # backoff_factor=0: no sleeping between connect retries


def test_wrong_host_port(make_client):
    client = make_client("http://127.0.0.1:1")
    with pytest.raises(TransportError) as info:
        client.tasks.batch_poll("greet", count=1, timeout_ms=0)
    assert "127.0.0.1:1" in str(info.value)


def test_read_timeout(server, make_client):
    server.route("GET", "workflow/running/slow", Reply(200, [], delay=1.5))
    client = make_client(server.base, read_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(TransportError) as info:
        client.workflows.running("slow")
    assert time.monotonic() - started < 1.4
    assert "no answer within 0.3s" in str(info.value)
    assert "/api/workflow/running/slow" in str(info.value)


def test_read_timeout_on_post_and_on_retried_get(server, make_client):
    server.route("POST", "tasks", Reply(200, "t-1", delay=1.0))
    server.route("GET", "workflow/running/slow", Reply(200, [], delay=1.0))
    client = make_client(server.base, read_timeout=0.2, max_retries=1)
    with pytest.raises(TransportError, match="no answer within 0.2s"):
        client.tasks.update_task(RESULT)
    assert server.count("POST", "tasks") == 1  # a POST is never re-sent after a read timeout
    with pytest.raises(TransportError, match="no answer within 0.2s"):
        client.workflows.running("slow")
    assert server.count("GET", "workflow/running/slow") == 2  # a GET is, max_retries times


def test_long_poll_gets_its_timeout_added_to_the_read_timeout(server, make_client):
    # The server may hold a batch poll for timeout_ms; that must not count as a read timeout.
    server.route("GET", "tasks/poll/batch/greet", Reply(200, [TASK_JSON], delay=0.5))
    client = make_client(server.base, read_timeout=0.3)
    tasks = client.tasks.batch_poll("greet", count=1, timeout_ms=1000)
    assert [t.task_id for t in tasks] == ["t-1"]
    assert server.requests[-1].query == {"count": "1", "timeout": "1000"}


# -- non-2xx answers ---------------------------------------------------------------------------------


def test_500_error_response(server, client):
    body = {"status": 500, "message": "Internal error: db down", "instance": "host-1", "retryable": False}
    server.route("GET", "workflow/w-1", Reply(500, body))
    with pytest.raises(APIError) as info:
        client.workflows.get("w-1")
    error = info.value
    assert type(error) is APIError
    assert error.status_code == 500
    assert error.server_message == "Internal error: db down"
    assert error.retryable is True
    assert error.method == "GET"
    assert "Internal error: db down" in str(error) and "500" in str(error)
    assert '"instance"' in error.body


def test_400_validation_errors(server, client):
    body = {
        "status": 400,
        "message": "Validation failed, check below errors for detail.",
        "validationErrors": [
            {
                "path": "updateTask.taskResult.workflowInstanceId",
                "message": "Workflow Id cannot be null or empty",
            }
        ],
        "retryable": False,
    }
    server.route("POST", "tasks", Reply(400, body))
    with pytest.raises(APIError) as info:
        client.tasks.update_task(TaskResult.complete(task_id="t-1"))
    error = info.value
    assert type(error) is APIError
    assert error.status_code == 400
    assert error.retryable is False
    assert error.server_message == "Validation failed, check below errors for detail."
    assert error.validation_errors == body["validationErrors"]
    text = str(error)
    assert "Validation failed" in text
    assert "Workflow Id cannot be null or empty" in text
    assert "updateTask.taskResult.workflowInstanceId" in text


def test_400_transient_flag_from_server(server, client):
    server.route("POST", "tasks", Reply(400, {"status": 400, "message": "try later", "retryable": True}))
    with pytest.raises(APIError) as info:
        client.tasks.update_task(RESULT)
    assert info.value.retryable is True


def test_404_error_response_is_not_found(server, client):
    body = {"status": 404, "message": "No such workflow found by id: w-404", "retryable": False}
    server.route("GET", "workflow/w-404", Reply(404, body))
    with pytest.raises(NotFoundError) as info:
        client.workflows.get("w-404")
    assert not isinstance(info.value, EndpointNotSupportedError)
    assert info.value.server_message == "No such workflow found by id: w-404"
    assert info.value.status_code == 404
    assert info.value.retryable is False


def test_404_html_is_endpoint_not_supported(server, client):
    # No route scripted: the server answers its HTML 404 page, as an old server without update-v2 does.
    with pytest.raises(EndpointNotSupportedError) as info:
        client.tasks.update_task_v2(RESULT)
    assert info.value.status_code == 404
    assert "no such endpoint" in str(info.value)
    assert "/api/tasks/update-v2" in str(info.value)
    assert isinstance(info.value, APIError)


def test_404_empty_body_is_endpoint_not_supported(server, client):
    server.route("POST", "tasks/update-v2", Reply(404))
    with pytest.raises(EndpointNotSupportedError):
        client.tasks.update_task_v2(RESULT)


def test_405_is_endpoint_not_supported(server, client):
    body = {"status": 405, "message": "Request method 'POST' is not supported", "retryable": False}
    server.route("POST", "tasks/update-v2", Reply(405, body, headers={"Allow": "GET"}))
    with pytest.raises(EndpointNotSupportedError) as info:
        client.tasks.update_task_v2(RESULT)
    assert info.value.status_code == 405
    assert "not supported" in str(info.value)


def test_409_is_conflict(server, client):
    body = {"status": 409, "message": "Workflow w-1 is already COMPLETED", "retryable": False}
    server.route("DELETE", "workflow/w-1", Reply(409, body))
    with pytest.raises(ConflictError) as info:
        client.workflows.terminate("w-1", reason="stop")
    assert info.value.server_message == "Workflow w-1 is already COMPLETED"
    assert server.requests[-1].query == {"reason": "stop"}


def test_401_without_credentials_is_authentication_error(server, client):
    body = {"message": "Token cannot be null or empty", "error": "INVALID_TOKEN"}
    server.route("GET", "workflow/w-1", Reply(401, body))
    with pytest.raises(AuthenticationError) as info:
        client.workflows.get("w-1")
    assert info.value.error_code == "INVALID_TOKEN"
    assert server.count("POST", "token") == 0


def test_429_is_retryable(server, client):
    server.route("POST", "tasks", Reply(429, "slow down"))
    with pytest.raises(APIError) as info:
        client.tasks.update_task(RESULT)
    assert info.value.status_code == 429 and info.value.retryable is True
    assert info.value.server_message is None


# -- 2xx answers that are not what the endpoint promises -------------------------------------------------


def test_malformed_json_is_invalid_response(server, client):
    server.route("GET", "workflow/w-1", Reply(200, '{"workflowId": "w-1", ', content_type="application/json"))
    with pytest.raises(InvalidResponseError) as info:
        client.workflows.get("w-1")
    assert info.value.status_code == 200
    assert '{"workflowId": "w-1", ' in info.value.body
    assert "not JSON" in str(info.value)


def test_malformed_json_in_batch_poll(server, client):
    server.route("GET", "tasks/poll/batch/greet", Reply(200, "<html>proxy error</html>"))
    with pytest.raises(InvalidResponseError):
        client.tasks.batch_poll("greet")


def test_batch_poll_empty_answers(server, client):
    server.route(
        "GET", "tasks/poll/batch/greet", Reply(204), Reply(200, []), Reply(200, [TASK_JSON, TASK_JSON])
    )
    assert client.tasks.batch_poll("greet", count=5, timeout_ms=0, worker_id="me", domain="blue") == []
    assert server.requests[-1].query == {"count": "5", "timeout": "0", "workerid": "me", "domain": "blue"}
    assert client.tasks.batch_poll("greet", count=5, timeout_ms=0) == []
    assert server.requests[-1].query == {"count": "5", "timeout": "0"}
    assert len(client.tasks.batch_poll("greet", count=5, timeout_ms=0)) == 2


def test_single_poll_204_is_none(server, client):
    server.route("GET", "tasks/poll/greet", Reply(204), Reply(200, TASK_JSON))
    assert client.tasks.poll("greet") is None
    assert client.tasks.poll("greet").task_id == "t-1"


def test_get_task_204_is_not_found(server, client):
    server.route("GET", "tasks/unknown", Reply(204))
    with pytest.raises(NotFoundError, match="unknown"):
        client.tasks.get_task("unknown")


def test_get_task_404_is_not_found(server, client):
    body = {"status": 404, "message": "No such task found by id: unknown"}
    server.route("GET", "tasks/unknown", Reply(404, body))
    with pytest.raises(NotFoundError) as info:
        client.tasks.get_task("unknown")
    assert not isinstance(info.value, EndpointNotSupportedError)


def test_update_by_ref_name_empty_200_is_not_found(server, client):
    server.route("POST", "tasks/w-1/wait_ref/COMPLETED", Reply(200, ""), Reply(200, "t-9"))
    with pytest.raises(NotFoundError) as info:
        client.tasks.update_task_by_ref_name(
            workflow_id="w-1", ref_name="wait_ref", status="COMPLETED", output={"a": 1}
        )
    assert "wait_ref" in str(info.value) and "w-1" in str(info.value)
    assert server.requests[-1].json() == {"a": 1}
    assert (
        client.tasks.update_task_by_ref_name(workflow_id="w-1", ref_name="wait_ref", status="COMPLETED")
        == "t-9"
    )


def test_update_by_ref_name_takes_keywords_only(client):
    with pytest.raises(TypeError):
        client.tasks.update_task_by_ref_name("w-1", "ref", "COMPLETED")  # type: ignore[misc]


def test_path_segments_are_quoted(server, client):
    server.route("GET", "tasks/poll/batch/ns%3Agreet%2Fx", Reply(200, []))
    assert client.tasks.batch_poll("ns:greet/x") == []
    assert server.requests[-1].raw_path.startswith("/api/tasks/poll/batch/ns%3Agreet%2Fx?")


# -- retries ------------------------------------------------------------------------------------------


def test_get_is_retried_on_503_then_succeeds(server, make_client):
    server.route("GET", "workflow/running/wf", Reply(503, "busy"), Reply(503, "busy"), Reply(200, ["w-1"]))
    client = make_client(server.base, max_retries=3, backoff_factor=0)
    assert client.workflows.running("wf", version=2) == ["w-1"]
    assert server.count("GET", "workflow/running/wf") == 3
    assert server.requests[-1].query == {"version": "2"}


def test_get_gives_up_after_max_retries(server, make_client):
    server.route("GET", "workflow/running/wf", Reply(503, {"status": 503, "message": "unavailable"}))
    client = make_client(server.base, max_retries=2, backoff_factor=0)
    with pytest.raises(APIError) as info:
        client.workflows.running("wf")
    assert info.value.status_code == 503 and info.value.retryable
    assert server.count("GET", "workflow/running/wf") == 3  # first try + 2 retries


def test_post_start_workflow_is_not_retried_on_503(server, make_client):
    server.route("POST", "workflow", Reply(503, "busy"), Reply(200, "w-1"))
    client = make_client(server.base, max_retries=3, backoff_factor=0)
    with pytest.raises(APIError) as info:
        client.workflows.start(StartWorkflowRequest(name="wf", input={"a": 1}))
    assert info.value.status_code == 503
    assert info.value.retryable is True
    assert server.count("POST", "workflow") == 1
    assert server.requests[-1].json() == {"name": "wf", "input": {"a": 1}, "taskToDomain": {}, "priority": 0}
    # The next call gets the next scripted answer: nothing was consumed behind our back.
    assert client.workflows.start(StartWorkflowRequest(name="wf")) == "w-1"


def test_post_update_is_not_retried_on_503(server, make_client):
    server.route("POST", "tasks", Reply(503, "busy"))
    client = make_client(server.base, max_retries=3, backoff_factor=0)
    with pytest.raises(APIError):
        client.tasks.update_task(RESULT)
    assert server.count("POST", "tasks") == 1


# -- requests that cannot be built ----------------------------------------------------------------------


@pytest.mark.parametrize("bad", [{"a": object()}, {"a": {1, 2}}, {"a": math.nan}, {"a": math.inf}])
def test_unserialisable_body_raises_before_sending(server, client, bad):
    with pytest.raises(ConductorError) as info:
        client.workflows.start_by_name("wf", bad)
    assert isinstance(info.value, ValueError)
    assert "JSON" in str(info.value)
    with pytest.raises(ValueError):
        client.tasks.update_task(TaskResult.complete(bad, task_id="t", workflow_instance_id="w"))
    assert server.requests == []


# -- every error is a ConductorError -------------------------------------------------------------------


def test_error_hierarchy():
    for cls in (
        TransportError,
        InvalidResponseError,
        APIError,
        NotFoundError,
        ConflictError,
        AuthenticationError,
        EndpointNotSupportedError,
    ):
        assert issubclass(cls, ConductorError), cls
    for cls in (NotFoundError, ConflictError, AuthenticationError, EndpointNotSupportedError):
        assert issubclass(cls, APIError)


# -- proxies, CA bundle: resolved once from the environment -----------------------------------------------


def test_session_does_not_read_the_environment_per_request(client):
    assert client._transport._session.trust_env is False


def test_proxy_environment_is_resolved_at_build(monkeypatch, make_client):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3129")
    monkeypatch.setenv("NO_PROXY", "internal.example,localhost")
    client = make_client("http://conductor.example:8080")
    proxies = client._transport._session.proxies
    assert proxies.get("http") == "http://127.0.0.1:3128"
    assert proxies.get("https") == "http://127.0.0.1:3129"

    bypassed = make_client("http://internal.example:8080")
    assert "http" not in bypassed._transport._session.proxies

    no_env = make_client("http://conductor.example:8080", trust_env=False)
    assert dict(no_env._transport._session.proxies) == {}

    explicit = make_client("http://conductor.example:8080", proxies={"http": "http://10.0.0.1:1"})
    assert dict(explicit._transport._session.proxies) == {"http": "http://10.0.0.1:1"}


def test_requests_go_through_the_proxy_resolved_at_build(monkeypatch, server, make_client):
    # The scripted server plays the proxy: it receives absolute-URI request lines.
    server.route("GET", "workflow/running/wf", Reply(200, ["via-proxy"]))
    monkeypatch.setenv("HTTP_PROXY", server.base)
    client = make_client("http://conductor.invalid:8080")
    monkeypatch.delenv("HTTP_PROXY")  # too late: it was resolved when the client was built
    assert client.workflows.running("wf") == ["via-proxy"]
    assert server.requests[-1].raw_path.startswith("http://conductor.invalid:8080/api/workflow/running/wf")


def test_proxy_set_after_build_is_ignored(monkeypatch, server, make_client, free_port):
    server.route("GET", "workflow/running/wf", Reply(200, []))
    client = make_client(server.base)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port}")  # a dead proxy
    assert client.workflows.running("wf") == []


def test_ca_bundle_from_environment(monkeypatch, make_client, tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not really a certificate")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    assert make_client("https://conductor.example")._transport._session.verify == str(bundle)
    assert make_client("https://conductor.example", verify=False)._transport._session.verify is False
    assert make_client("https://conductor.example", trust_env=False)._transport._session.verify is True


def test_client_cert_is_set_on_the_session(make_client):
    client = make_client("https://conductor.example", cert=("/c.pem", "/k.pem"))
    assert client._transport._session.cert == ("/c.pem", "/k.pem")
