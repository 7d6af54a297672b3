"""The test and benchmark support proxy (``support.proxy.LoopbackProxy``) in both of its relays.

The upstream is the scripted server of conftest.py, so what reached the server is known exactly.
"""
from __future__ import annotations

import json
from typing import Iterator

import pytest
import requests
from support.proxy import LoopbackProxy
from support.scripted_server import Reply, ScriptedServer

POLL = "tasks/poll/batch/greet"


@pytest.fixture(params=[True, False], ids=["record", "raw"])
def proxy(request: pytest.FixtureRequest, server: ScriptedServer) -> Iterator[LoopbackProxy]:
    server.route("GET", POLL, Reply(200, [{"taskId": "t-1"}]))
    server.route("GET", "tasks/poll/greet", Reply(200, {"taskId": "t-1"}))
    server.route("POST", "tasks", Reply(200, "t-1"))
    server.route("GET", "metadata/taskdefs", Reply(200, []))
    with LoopbackProxy(server.api, record=request.param) as loopback:
        yield loopback


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        http.trust_env = False
        yield http


def test_forwards_and_counts_by_kind(
    proxy: LoopbackProxy, server: ScriptedServer, session: requests.Session
) -> None:
    assert proxy.url == f"http://127.0.0.1:{proxy.port}/api"
    assert session.get(f"{proxy.url}/{POLL}?count=2&timeout=100").json() == [{"taskId": "t-1"}]
    assert session.post(f"{proxy.url}/tasks", json={"taskId": "t-1", "status": "COMPLETED"}).text == "t-1"
    assert session.get(f"{proxy.url}/metadata/taskdefs").json() == []
    assert proxy.wait_for_polls(["greet"], timeout=5)
    assert proxy.wait_for_updates(1, timeout=5) is not None
    assert proxy.snapshot() == {"forwarded": 3, "polls": 1, "updates": 1, "synthetic": 0}
    assert proxy.polls_by_type == {"greet": 1} and proxy.forwarded_at_update == [2]
    assert proxy.first_forwarded_poll is not None
    assert [(r.method, r.path) for r in server.requests] == [
        ("GET", f"/api/{POLL}"), ("POST", "/api/tasks"), ("GET", "/api/metadata/taskdefs")]
    assert server.requests[1].json() == {"taskId": "t-1", "status": "COMPLETED"}
    assert server.connections == 1  # keep-alive through the proxy
    if proxy.record:
        assert [(r.method, r.path, r.answered_by) for r in proxy.requests] == [
            ("GET", f"/api/{POLL}", "upstream"), ("POST", "/api/tasks", "upstream"),
            ("GET", "/api/metadata/taskdefs", "upstream")]
        assert proxy.requests[0].query == {"count": ["2"], "timeout": ["100"]}
        conversation = [(kind, status) for kind, _, status, _ in proxy.events]
        assert conversation == [("request", 0), ("response", 200)] * 3
    else:
        assert proxy.requests == [] and proxy.events == []  # the raw relay logs nothing
    proxy.reset()
    assert proxy.snapshot() == {"forwarded": 0, "polls": 0, "updates": 0, "synthetic": 0}
    assert proxy.requests == [] and proxy.polls_by_type == {}


def test_a_chunked_body_reaches_the_server(server: ScriptedServer, session: requests.Session) -> None:
    """The recorded relay passes a chunked body on with a Content-Length (the raw relay passes bytes)."""
    server.route("POST", "tasks", Reply(200, "t-1"))
    body = json.dumps({"taskId": "t-1", "status": "COMPLETED"}).encode()
    with LoopbackProxy(server.api) as proxy:
        answer = session.post(f"{proxy.url}/tasks", data=iter([body[:10], body[10:]]),
                              headers={"Content-Type": "application/json"})
        assert (answer.status_code, answer.text) == (200, "t-1")
        assert proxy.updates == 1 and proxy.requests[0].body == body
    assert server.requests[0].json() == {"taskId": "t-1", "status": "COMPLETED"}


def test_the_gate_answers_polls_with_nothing(
    proxy: LoopbackProxy, server: ScriptedServer, session: requests.Session
) -> None:
    proxy.gate(True)
    batch = session.get(f"{proxy.url}/{POLL}?count=2")
    single = session.get(f"{proxy.url}/tasks/poll/greet")
    assert (batch.status_code, batch.json()) == (200, [])
    assert (single.status_code, single.content) == (204, b"")
    assert session.post(f"{proxy.url}/tasks", json={"taskId": "t-1"}).text == "t-1"  # only polls are gated
    assert proxy.wait_for_polls(["greet"], timeout=1)  # gated polls count as polled
    assert proxy.snapshot() == {"forwarded": 1, "polls": 0, "updates": 1, "synthetic": 2}
    assert proxy.first_forwarded_poll is None
    proxy.gate(False)
    assert session.get(f"{proxy.url}/{POLL}").json() == [{"taskId": "t-1"}]
    assert proxy.polls == 1 and proxy.first_forwarded_poll is not None
    assert [r.method for r in server.requests] == ["POST", "GET"]


def test_rules_answer_for_the_server(
    proxy: LoopbackProxy, server: ScriptedServer, session: requests.Session
) -> None:
    proxy.reject("/api/tasks", 405, '{"status":405}', method="POST", exact=True)
    refused = session.post(f"{proxy.url}/tasks", json={"taskId": "t-1"})
    assert (refused.status_code, refused.json()) == (405, {"status": 405})
    assert refused.headers["Content-Type"] == "application/json"
    assert session.get(f"{proxy.url}/{POLL}").status_code == 200  # another path: forwarded
    assert proxy.synthetic == 1 and proxy.updates == 0
    proxy.clear_rules()
    assert session.post(f"{proxy.url}/tasks", json={"taskId": "t-1"}).text == "t-1"
    assert [r.method for r in server.requests] == ["GET", "POST"]


def test_cut_resets_connections_until_restored(proxy: LoopbackProxy, session: requests.Session) -> None:
    assert session.get(f"{proxy.url}/metadata/taskdefs").status_code == 200
    proxy.cut()
    assert proxy.is_cut
    with pytest.raises(requests.ConnectionError):
        session.get(f"{proxy.url}/metadata/taskdefs", timeout=5)
    proxy.restore()
    assert not proxy.is_cut
    assert session.get(f"{proxy.url}/metadata/taskdefs", timeout=5).status_code == 200


def test_chaos_needs_the_recorded_relay(server: ScriptedServer) -> None:
    with LoopbackProxy(server.api, record=False) as raw:
        with pytest.raises(ValueError, match="record=True"):
            raw.chaos()
    with pytest.raises(ValueError, match="plain http"):
        LoopbackProxy("https://127.0.0.1:1/api")
