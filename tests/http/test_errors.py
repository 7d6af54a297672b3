"""How the client turns what a server (or the network) does into conductor_workers errors.

Every test talks to a real loopback HTTP server (see conftest.py); nothing is mocked.
"""
from __future__ import annotations

import math
import shutil
import ssl
import subprocess
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
from conductor_workers.testing import LocalConductor

from support.scripted_server import Reply, ScriptedServer

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
    server.route("GET", "workflow/running/slow", Reply(200, [], delay=30.0))
    client = make_client(server.base, read_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(TransportError) as info:
        client.workflows.running("slow")
    assert time.monotonic() - started < 10.0  # the read timeout ended it, long before the answer at 30 s
    assert "no answer within 0.3s" in str(info.value)
    assert "/api/workflow/running/slow" in str(info.value)


def test_read_timeout_on_post_and_on_retried_get(server, make_client):
    server.route("POST", "tasks", Reply(200, "t-1", delay=10.0))
    server.route("GET", "workflow/running/slow", Reply(200, [], delay=10.0))
    client = make_client(server.base, read_timeout=0.2, max_retries=1)
    with pytest.raises(TransportError, match="no answer within 0.2s"):
        client.tasks.update_task(RESULT)
    assert server.count("POST", "tasks") == 1  # a POST is never re-sent after a read timeout
    with pytest.raises(TransportError, match="no answer within 0.2s"):
        client.workflows.running("slow")
    assert server.count("GET", "workflow/running/slow") == 2  # a GET is, max_retries times


def test_long_poll_gets_its_timeout_added_to_the_read_timeout(server, make_client):
    # The server may hold a batch poll for timeout_ms; that must not count as a read timeout.
    # Answered after 2 s: past the 0.5 s read timeout, well within 0.5 s + the poll's 5 s.
    server.route("GET", "tasks/poll/batch/greet", Reply(200, [TASK_JSON], delay=2.0))
    client = make_client(server.base, read_timeout=0.5)
    tasks = client.tasks.batch_poll("greet", count=1, timeout_ms=5000)
    assert [t.task_id for t in tasks] == ["t-1"]
    assert server.requests[-1].query == {"count": "1", "timeout": "5000"}


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


# -- proxies, CA bundle, client certificate: resolved once, and what is really sent -------------------------
#
# The transport hands prepared requests straight to the session's HTTPAdapter, with the proxies,
# verify and cert it resolved when it was built; so these tests look at where requests really go
# (a ScriptedServer plays the proxy: it records the absolute-URI request lines or the CONNECT a
# proxied request sends), at real TLS handshakes, and at what HTTPAdapter.send is handed.


@pytest.fixture
def target() -> Any:
    """A second scripted server: the Conductor server the client means to reach (``server`` is the proxy)."""
    other = ScriptedServer()
    other.route("GET", "workflow/running/wf", Reply(200, ["direct"]))
    yield other
    other.close()


@pytest.fixture
def proxy_b() -> Any:
    """Another recording proxy, for environment changes made after a client was built."""
    other = ScriptedServer()
    other.route("GET", "workflow/running/wf", Reply(200, ["via-proxy-b"]))
    yield other
    other.close()


def _proxied(recorded: Any) -> bool:
    """A request line as a proxy receives it: an absolute URI (or a CONNECT), not a bare path."""
    return recorded.method == "CONNECT" or not recorded.raw_path.startswith("/")


def test_proxy_environment_decides_where_requests_go(monkeypatch, server, target, make_client):
    proxy = server
    proxy.route("GET", "workflow/running/wf", Reply(200, ["via-proxy"]))
    url = f"{target.base}/api/workflow/running/wf"

    # HTTP_PROXY, and no NO_PROXY: the request goes to the proxy, with the target's absolute URL
    monkeypatch.setenv("HTTP_PROXY", proxy.base)
    assert make_client(target.base).workflows.running("wf") == ["via-proxy"]
    assert [r.raw_path for r in proxy.requests] == [url]
    assert target.requests == []

    # NO_PROXY naming the host: straight to the target, the proxy sees nothing
    monkeypatch.setenv("NO_PROXY", "internal.example,127.0.0.1")
    assert make_client(target.base).workflows.running("wf") == ["direct"]
    assert [r.raw_path for r in target.requests] == ["/api/workflow/running/wf"]
    assert len(proxy.requests) == 1

    # trust_env=False: the environment is not read at all
    monkeypatch.delenv("NO_PROXY")
    assert make_client(target.base, trust_env=False).workflows.running("wf") == ["direct"]
    assert len(target.requests) == 2 and len(proxy.requests) == 1

    # explicit proxies beat the environment, NO_PROXY included
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert make_client(target.base, proxies={"http": proxy.base}).workflows.running("wf") == ["via-proxy"]
    assert [r.raw_path for r in proxy.requests] == [url, url]
    assert len(target.requests) == 2


def test_https_proxy_environment_is_used_for_https(monkeypatch, server, proxy_b, make_client):
    monkeypatch.setenv("HTTP_PROXY", proxy_b.base)
    monkeypatch.setenv("HTTPS_PROXY", server.base)
    # The scripted proxy refuses the tunnel (404), which is a transport error; what matters is that
    # the https request asked the HTTPS_PROXY, and only it, for a tunnel to the server.
    with pytest.raises(TransportError):
        make_client("https://conductor.example").workflows.running("wf")
    assert [(r.method, r.raw_path) for r in server.requests] == [("CONNECT", "conductor.example:443")]
    assert proxy_b.requests == []


def test_environment_changed_after_build_changes_nothing(monkeypatch, server, target, proxy_b, make_client):
    """The proxy settings are read once, when the client is built, never again per request."""
    proxy = server
    for scripted in (proxy, target):
        scripted.route("GET", "tasks/poll/batch/greet", Reply(200, []))
    proxy.route("GET", "workflow/running/wf", Reply(200, ["via-proxy"]))
    monkeypatch.setenv("HTTP_PROXY", proxy.base)
    proxied = make_client(target.base)
    monkeypatch.delenv("HTTP_PROXY")
    direct = make_client(target.base)

    monkeypatch.setenv("HTTP_PROXY", proxy_b.base)  # another proxy for everything ...
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # ... except this host: neither applies any more
    for _ in range(3):
        assert proxied.workflows.running("wf") == ["via-proxy"]
        assert direct.workflows.running("wf") == ["direct"]
    assert proxied.tasks.batch_poll("greet", count=1, timeout_ms=0) == []  # polls have a pool of their own
    assert direct.tasks.batch_poll("greet", count=1, timeout_ms=0) == []
    assert len(proxy.requests) == 4 and all(_proxied(r) for r in proxy.requests)
    assert len(target.requests) == 4 and not any(_proxied(r) for r in target.requests)
    assert proxy_b.requests == []


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


def _spy_on_adapters(client: ConductorClient) -> "list[tuple[str, dict]]":
    """Record the keyword arguments each of the transport's two adapters is really sent (and send on)."""
    calls: "list[tuple[str, dict]]" = []
    transport = client._transport
    for name in ("_adapter", "_once_adapter"):
        adapter = getattr(transport, name)

        def spy(request: Any, *args: Any, _send: Any = adapter.send, _name: str = name, **kwargs: Any) -> Any:
            calls.append((_name, dict(kwargs)))
            return _send(request, *args, **kwargs)

        adapter.send = spy  # on this instance only; the real send still does the work
    return calls


def test_adapters_are_handed_the_resolved_verify_cert_and_proxies(monkeypatch, server, make_client, tmp_path):
    server.route("GET", "workflow/running/wf", Reply(200, ["w"]))
    server.route("GET", "tasks/poll/batch/greet", Reply(200, []))
    bundle, cert, key = tmp_path / "ca.pem", tmp_path / "c.pem", tmp_path / "k.pem"
    for path in (bundle, cert, key):
        path.write_text("not read for plain http")
    monkeypatch.setenv("HTTP_PROXY", server.base)  # the scripted server plays the proxy
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))

    def sent(**options: Any) -> "list[tuple[str, dict]]":
        client = make_client("http://conductor.invalid:8080", **options)
        calls = _spy_on_adapters(client)
        assert client.workflows.running("wf") == ["w"]
        assert client.tasks.batch_poll("greet", count=1, timeout_ms=0) == []
        assert [name for name, _ in calls] == ["_adapter", "_once_adapter"]  # both pools were used
        return [kwargs for _, kwargs in calls]

    for kwargs in sent(cert=(str(cert), str(key))):
        assert kwargs["verify"] == str(bundle)  # REQUESTS_CA_BUNDLE, read at build
        assert kwargs["cert"] == (str(cert), str(key))
        assert kwargs["proxies"].get("http") == server.base
    for kwargs in sent(verify=False):
        assert kwargs["verify"] is False and kwargs["cert"] is None
    for kwargs in sent(trust_env=False, proxies={"http": server.base}):
        assert kwargs["verify"] is True  # REQUESTS_CA_BUNDLE ignored
        assert kwargs["proxies"] == {"http": server.base}
    assert len(server.requests) == 6 and all(_proxied(r) for r in server.requests)


# -- real TLS against LocalConductor: the CA bundle and the client certificate are really used ---------------


def _self_signed(directory: Any, name: str, common_name: str) -> "tuple[str, str]":
    cert, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", f"/CN={common_name}", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-addext", "basicConstraints=critical,CA:TRUE", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    return str(cert), str(key)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> "dict[str, tuple[str, str]]":
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    directory = tmp_path_factory.mktemp("tls")
    return {
        "server": _self_signed(directory, "server", "localhost"),
        "client": _self_signed(directory, "client", "worker"),
    }


def _tls_server(tls_files: "dict[str, tuple[str, str]]", require_client_cert: bool = False) -> LocalConductor:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_files["server"])
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(tls_files["client"][0])
    return LocalConductor(tls=context)


def _talks(client: ConductorClient) -> bool:
    """A plain GET and a poll (one through each pool): True if both get through, False if both fail."""
    outcomes = []
    for call in (client.health, lambda: client.tasks.batch_poll("nothing_here", count=1, timeout_ms=0)):
        try:
            call()
        except TransportError:
            outcomes.append(False)
        else:
            outcomes.append(True)
    assert outcomes in ([True, True], [False, False]), f"GET, poll: {outcomes}"  # the two pools agree
    return outcomes[0]


@pytest.fixture
def _no_ca_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.filterwarnings("ignore:Unverified HTTPS request")
def test_ca_bundle_from_environment_is_used_for_tls(monkeypatch, make_client, tls_files, tmp_path,
                                                   _no_ca_env):
    server_cert = tls_files["server"][0]
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not really a certificate")
    with _tls_server(tls_files) as server:
        assert server.url.startswith("https://")
        built_before = make_client(server.url)  # no CA bundle in the environment yet
        assert not _talks(built_before)  # the system CAs do not trust the test certificate

        monkeypatch.setenv("REQUESTS_CA_BUNDLE", server_cert)
        assert _talks(make_client(server.url))  # the environment's bundle is what verifies the server
        assert not _talks(built_before)  # ... only for clients built after it was set
        assert not _talks(make_client(server.url, trust_env=False))  # not read with trust_env=False
        assert _talks(make_client(server.url, trust_env=False, verify=server_cert))

        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bogus))
        with pytest.raises(TransportError):  # a bundle that cannot be read is really used, and fails
            make_client(server.url).health()
        assert _talks(make_client(server.url, verify=False))  # verify=False beats the environment


def test_client_certificate_is_presented_in_the_handshake(make_client, tls_files, _no_ca_env):
    server_cert = tls_files["server"][0]
    with _tls_server(tls_files, require_client_cert=True) as server:
        assert _talks(make_client(server.url, verify=server_cert, cert=tls_files["client"]))
        assert not _talks(make_client(server.url, verify=server_cert))  # the server demands one
