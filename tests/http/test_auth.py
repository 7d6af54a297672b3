"""Orkes token authentication (contract §1.5) against a tiny loopback token server."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Iterator, List, Optional

import pytest

from conductor_workers.client import ConductorClient
from conductor_workers.config import Configuration
from conductor_workers.errors import AuthenticationError
from conductor_workers.models import TaskResult

from support.scripted_server import Recorded, Reply, ScriptedServer

KEY_ID = "app-key-123"
SECRET = "Sup3r-S3cret-Value-xyz"  # must never show up in a repr, a log record or an error message


class TokenServer:
    """Plays ``POST /api/token`` and two authenticated endpoints (GET workflow/running/wf, POST tasks)."""

    def __init__(self, server: ScriptedServer, token_delay: float = 0.0) -> None:
        self.server = server
        self.token_delay = token_delay
        self.lock = threading.Lock()
        self.issued: List[str] = []
        self.valid: set = set()
        self.token_reply: Optional[Reply] = None  # set to answer /api/token with something else
        self.rejections: List[Reply] = []  # answers for the next authenticated calls, whatever the token
        self.seen_tokens: List[Optional[str]] = []
        server.route("POST", "token", self._token)
        server.route("GET", "workflow/running/wf", self._endpoint)
        server.route("POST", "tasks", self._endpoint)

    def _token(self, request: Recorded) -> Reply:
        with self.lock:
            if self.token_reply is not None:
                return self.token_reply
            if request.json() != {"keyId": KEY_ID, "keySecret": SECRET}:
                return Reply(401, {"message": "wrong body", "error": "INVALID_CREDENTIALS"})
            token = f"tok-{len(self.issued) + 1}"
            self.issued.append(token)
            self.valid.add(token)
        return Reply(200, {"token": token}, delay=self.token_delay)

    def _endpoint(self, request: Recorded) -> Reply:
        token = request.headers.get("X-Authorization")
        with self.lock:
            self.seen_tokens.append(token)
            if self.rejections:
                return self.rejections.pop(0)
            if token in self.valid:
                return Reply(200, ["w-1"] if request.method == "GET" else "t-1")
        return Reply(401, {"message": "Token cannot be null or empty", "error": "INVALID_TOKEN"})

    def expire_all(self) -> None:
        with self.lock:
            self.valid.clear()

    @property
    def token_calls(self) -> int:
        return self.server.count("POST", "token")

    @property
    def endpoint_calls(self) -> int:
        return self.server.count("GET", "workflow/running/wf") + self.server.count("POST", "tasks")


@pytest.fixture(autouse=True)
def _no_secret_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Capture everything at DEBUG during each test, then make sure the secret was never logged."""
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.records:
        assert SECRET not in record.getMessage(), record
        assert SECRET not in str(record.args), record
        if record.exc_text:
            assert SECRET not in record.exc_text
    assert SECRET not in caplog.text


@pytest.fixture
def tokens(server: ScriptedServer) -> TokenServer:
    return TokenServer(server)


@pytest.fixture
def make_client(server: ScriptedServer) -> Iterator[Any]:
    clients: List[ConductorClient] = []

    def build(**options: Any) -> ConductorClient:
        options.setdefault("max_retries", 0)
        options.setdefault("backoff_factor", 0)
        config = Configuration(server_url=server.base, key_id=KEY_ID, key_secret=SECRET, **options)
        client = ConductorClient(config)
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()


def test_token_fetched_once_and_sent_as_x_authorization(server, tokens, make_client, caplog):
    client = make_client()
    assert server.requests == []  # nothing is fetched before the first call
    for _ in range(3):
        assert client.workflows.running("wf") == ["w-1"]
    assert tokens.token_calls == 1
    assert tokens.seen_tokens == ["tok-1", "tok-1", "tok-1"]  # the bare token: no "Bearer " prefix
    token_request = server.requests[0]
    assert token_request.path == "/api/token"
    assert token_request.json() == {"keyId": KEY_ID, "keySecret": SECRET}
    assert token_request.headers["Content-Type"] == "application/json"
    assert "X-Authorization" not in token_request.headers
    assert "Authorization" not in server.requests[1].headers
    # The DEBUG capture that guards the secret really sees the library's records.
    assert any("fetched a new auth token" in r.getMessage() for r in caplog.records)


def test_concurrent_first_calls_fetch_one_token(server, make_client):
    tokens = TokenServer(server, token_delay=0.3)
    client = make_client()
    barrier = threading.Barrier(20)
    results: List[Any] = []
    errors: List[BaseException] = []

    def call() -> None:
        barrier.wait()
        try:
            results.append(client.workflows.running("wf"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert errors == []
    assert results == [["w-1"]] * 20
    assert tokens.token_calls == 1
    assert set(tokens.seen_tokens) == {"tok-1"}


@pytest.mark.parametrize(
    "rejection",
    [
        Reply(401, {"message": "Token expired", "error": "EXPIRED_TOKEN", "timestamp": 1672808447076}),
        Reply(403, {"error": "INVALID_TOKEN"}),
        Reply(401, "<html>Unauthorized</html>"),  # an unreadable 401 counts as a token problem
        Reply(401),
    ],
    ids=["401-expired", "403-invalid", "401-html", "401-empty"],
)
def test_rejected_token_is_refreshed_and_request_retried_once(server, tokens, make_client, rejection):
    client = make_client()
    assert client.workflows.running("wf") == ["w-1"]
    tokens.expire_all()
    tokens.rejections.append(rejection)
    assert client.workflows.running("wf") == ["w-1"]
    assert tokens.token_calls == 2
    assert tokens.seen_tokens == ["tok-1", "tok-1", "tok-2"]
    # The new token is cached in its turn.
    assert client.workflows.running("wf") == ["w-1"]
    assert tokens.token_calls == 2


def test_retried_post_sends_the_same_body(server, tokens, make_client):
    client = make_client()
    tokens.rejections.append(Reply(401, {"error": "EXPIRED_TOKEN", "message": "Token expired"}))
    result = TaskResult.complete({"x": 1}, task_id="t-1", workflow_instance_id="w-1")
    assert client.tasks.update_task(result) == "t-1"
    posts = [r for r in server.requests if r.path == "/api/tasks"]
    assert len(posts) == 2
    assert posts[0].body == posts[1].body and posts[0].json()["outputData"] == {"x": 1}
    assert [p.headers["X-Authorization"] for p in posts] == ["tok-1", "tok-2"]


def test_token_retry_happens_only_once(server, tokens, make_client):
    client = make_client()
    expired = Reply(401, {"error": "EXPIRED_TOKEN", "message": "Token expired"})
    tokens.rejections.extend([expired, expired, expired])
    with pytest.raises(AuthenticationError) as info:
        client.workflows.running("wf")
    assert info.value.status_code == 401
    assert info.value.error_code == "EXPIRED_TOKEN"
    assert tokens.endpoint_calls == 2
    assert tokens.token_calls == 2


def test_permission_error_is_not_a_token_problem(server, tokens, make_client):
    client = make_client()
    denied = {"message": "Access denied to workflow wf", "error": "ACCESS_DENIED"}
    tokens.rejections.append(Reply(403, denied))
    with pytest.raises(AuthenticationError) as info:
        client.workflows.running("wf")
    assert info.value.status_code == 403
    assert info.value.error_code == "ACCESS_DENIED"
    assert "Access denied to workflow wf" in str(info.value)
    assert tokens.token_calls == 1
    assert tokens.endpoint_calls == 1
    # The token is still good for the next call.
    assert client.workflows.running("wf") == ["w-1"]
    assert tokens.token_calls == 1


def test_token_endpoint_404_means_no_auth(server, tokens, make_client):
    tokens.token_reply = Reply(404, "<html>Not Found</html>", content_type="text/html")
    client = make_client()
    # An OSS server has no auth: answer everything, whatever the header.
    server.route("GET", "workflow/running/wf", Reply(200, ["oss"]))
    for _ in range(3):
        assert client.workflows.running("wf") == ["oss"]
    assert tokens.token_calls == 1
    calls = [r for r in server.requests if r.path == "/api/workflow/running/wf"]
    assert len(calls) == 3
    assert all("X-Authorization" not in r.headers for r in calls)


def test_bad_credentials(server, tokens, make_client):
    refused = {"message": "Invalid application key or secret", "error": "INVALID_CREDENTIALS"}
    tokens.token_reply = Reply(401, refused)
    client = make_client()
    with pytest.raises(AuthenticationError) as info:
        client.workflows.running("wf")
    error = info.value
    assert "Invalid application key or secret" in str(error)
    assert KEY_ID in str(error)
    assert SECRET not in str(error) and SECRET not in repr(error)
    assert error.status_code == 401
    assert tokens.token_calls == 1 and tokens.endpoint_calls == 0

    # An immediate second call does not hammer /api/token: it is refused until the backoff ends.
    with pytest.raises(AuthenticationError, match="Invalid application key or secret"):
        client.workflows.running("wf")
    assert tokens.token_calls == 1 and tokens.endpoint_calls == 0

    # Once the backoff is over (skipped here instead of slept) and the key is fixed server-side,
    # the next call fetches a token again and succeeds.
    tokens.token_reply = None
    client._transport._auth._retry_at = 0.0
    assert client.workflows.running("wf") == ["w-1"]
    assert tokens.token_calls == 2


def test_token_ttl_expiry_refetches(server, tokens, make_client):
    """The client's own token lifetime: reused within it, fetched again once it is over.

    Seconds, not fractions of one, and waits computed from the clock instead of fixed sleeps, so
    that a slow machine can neither expire the token early nor end a wait early.
    """
    ttl = 3.0
    client = make_client(token_ttl_seconds=ttl)
    not_before = time.monotonic()  # the token is cached after this instant ...
    assert client.workflows.running("wf") == ["w-1"]
    fetched_by = time.monotonic()  # ... and before this one
    assert client.workflows.running("wf") == ["w-1"]
    time.sleep(max(0.0, not_before + ttl / 2 - time.monotonic()))
    assert client.workflows.running("wf") == ["w-1"]  # halfway through its lifetime: still reused
    assert tokens.token_calls == 1
    # The server still takes tok-1: only the client's TTL can make it fetch another one.
    time.sleep(max(0.0, fetched_by + ttl - time.monotonic()) + 0.05)
    assert client.workflows.running("wf") == ["w-1"]
    assert tokens.token_calls == 2
    assert tokens.seen_tokens == ["tok-1", "tok-1", "tok-1", "tok-2"]
    assert tokens.valid == {"tok-1", "tok-2"}  # nothing was rejected: tok-1 was dropped for its age


def test_no_credentials_no_token_calls(server, tokens):
    server.route("GET", "workflow/running/wf", Reply(200, []))
    with ConductorClient(Configuration(server_url=server.base, key_id=KEY_ID)) as client:  # no secret
        assert client.workflows.running("wf") == []
    assert tokens.token_calls == 0
    assert "X-Authorization" not in server.requests[-1].headers


def test_secret_never_in_repr(make_client):
    client = make_client()
    assert SECRET not in repr(client.config)
    assert SECRET not in str(client.config)
    assert SECRET not in repr(client)
    assert KEY_ID in repr(client.config)
