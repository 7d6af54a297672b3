"""External payload downloads against a storage that misbehaves: bounded in size and time, proxied per URL.

The Conductor server is the scripted server of conftest.py: it tells the client where a payload is
(``GET /api/tasks/externalstoragelocation``). The storage is :class:`support.storage_server.StorageServer`
on loopback; what it counts (bytes the socket took, whether the client hung up before the end) is what
the size checks rest on, not timing.
"""
from __future__ import annotations

import time
from typing import Any, Iterator

import pytest
from support.proxy import LoopbackProxy
from support.scripted_server import Reply, ScriptedServer
from support.storage_server import StorageServer

from conductor_workers.errors import ExternalPayloadError
from conductor_workers.payloads import TASK_INPUT, TASK_OUTPUT

KB = 1024
MB = 1024 * KB
CAP_KB = 1024  # max_payload_kb of the clients here
HUGE = 128 * MB
# What the storage's socket may take beyond what the client read: both ends' socket buffers.
# Loopback buffers grow to a few MB each here; a client that read the whole body took 128 MB.
IN_FLIGHT = 48 * MB


@pytest.fixture
def storage() -> Iterator[StorageServer]:
    with StorageServer() as running:
        yield running


def _locate(server: ScriptedServer, uri: str, path: str = "payload.json") -> None:
    server.route("GET", "tasks/externalstoragelocation", Reply(200, {"uri": uri, "path": path}))


def _read(client: Any) -> Any:
    return client.payloads.read("payload.json", TASK_INPUT)


# -- size: never past the maximum ---------------------------------------------------------------


def test_a_huge_announced_body_is_refused_without_reading_it(server, storage, make_client) -> None:
    storage.huge("big", HUGE)
    _locate(server, storage.url("big"))
    client = make_client(server.api, max_payload_kb=CAP_KB, read_timeout=30)
    with pytest.raises(ExternalPayloadError) as caught:
        _read(client)
    assert caught.value.permanent  # the same payload will be as large next time
    message = str(caught.value)
    assert f"{HUGE} bytes" in message and f"{CAP_KB * KB} bytes" in message and "max_payload_kb=1024" in message
    download = storage.last()
    assert download.hung_up and not download.finished
    assert download.sent < IN_FLIGHT, download


def test_an_endless_body_is_cut_just_past_the_maximum(server, storage, make_client) -> None:
    storage.endless("endless", ceiling=HUGE)
    _locate(server, storage.url("endless"))
    client = make_client(server.api, max_payload_kb=CAP_KB, read_timeout=30)
    with pytest.raises(ExternalPayloadError) as caught:
        _read(client)
    assert caught.value.permanent
    assert f"more than {CAP_KB * KB} bytes" in str(caught.value)
    download = storage.last()
    assert download.hung_up and not download.finished
    assert download.sent < IN_FLIGHT, download


@pytest.mark.parametrize("extra", [-1, 0, 1], ids=["under", "at", "over"])
def test_the_maximum_itself_is_allowed_and_one_byte_more_is_not(server, storage, make_client, extra: int) -> None:
    size = CAP_KB * KB + extra
    storage.huge("edge", size)
    _locate(server, storage.url("edge"))
    client = make_client(server.api, max_payload_kb=CAP_KB)
    if extra <= 0:
        assert len(_read(client)["blob"]) == size - len('{"blob":""}')
    else:
        with pytest.raises(ExternalPayloadError, match=f"{size} bytes"):
            _read(client)


def test_a_well_behaved_payload_reads_back_and_the_connection_is_reused(server, storage, make_client) -> None:
    storage.put("ok", {"blob": "y" * 300 * KB, "n": [1, 2, 3]})
    _locate(server, storage.url("ok"))
    client = make_client(server.api, max_payload_kb=CAP_KB)
    for _ in range(3):
        assert _read(client) == {"blob": "y" * 300 * KB, "n": [1, 2, 3]}
    assert all(d.finished and not d.hung_up for d in storage.downloads)
    assert storage.connections == 1  # read to the end, the connection went back to the pool


# -- time: an overall deadline, however the bytes trickle ----------------------------------------------


def test_a_slow_body_is_cut_at_the_download_deadline(server, storage, make_client) -> None:
    # 200 bytes, one every 50 ms: every read gets a byte well within the read timeout, so only an
    # overall deadline ends it before the storage does (10 s).
    storage.slow("slow", 200, interval=0.05)
    _locate(server, storage.url("slow"))
    client = make_client(server.api, read_timeout=5, download_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(ExternalPayloadError) as caught:
        _read(client)
    assert not caught.value.permanent  # a storage that is slow now may not be next time
    assert "within 1.0s" in str(caught.value)
    download = storage.last()
    assert download.hung_up and not download.finished
    assert time.monotonic() - started < 8  # the storage would have taken 10 s


def test_a_callers_shorter_deadline_applies(server, storage, make_client) -> None:
    storage.slow("slow", 200, interval=0.05)
    _locate(server, storage.url("slow"))
    client = make_client(server.api, read_timeout=5, download_timeout=60.0)
    with pytest.raises(ExternalPayloadError, match=r"within 1\.0s"):
        client.payloads.read("payload.json", TASK_INPUT, timeout=1.0)
    assert storage.last().hung_up


def test_download_timeout_must_be_positive() -> None:
    from conductor_workers import Configuration, InvalidOptionError

    with pytest.raises(InvalidOptionError, match="download_timeout"):
        Configuration(download_timeout=0)


# -- credentials stay with the server ----------------------------------------------------------------


def test_credentials_are_never_sent_to_the_storage(server, storage, make_client) -> None:
    server.route("POST", "token", Reply(200, {"token": "tok-1"}))
    storage.put("ok", {"a": 1})
    _locate(server, storage.url("ok"))
    client = make_client(server.api, key_id="key", key_secret="secret")
    assert _read(client) == {"a": 1}
    (location,) = [r for r in server.requests if r.path == "/api/tasks/externalstoragelocation"]
    assert location.headers.get("X-Authorization") == "tok-1"
    assert [d.path for d in storage.downloads] == ["/store/ok"]
    assert not any(key.lower() == "x-authorization" for key in storage.downloads[0].headers)


# -- proxies: decided per URL, as requests does ------------------------------------------------------


def test_storage_traffic_goes_through_the_proxy_the_server_bypasses(monkeypatch, server, storage, make_client) -> None:
    """HTTP_PROXY set, the Conductor server (127.0.0.1) in NO_PROXY, the storage (localhost) not."""
    with LoopbackProxy(storage.base) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        storage.put("in", {"a": 1})
        _locate(server, storage.url("in", host="localhost"), "in")
        client = make_client(server.api, upload_large_payloads=True)

        assert client.payloads.read("in", TASK_INPUT) == {"a": 1}
        server.route("GET", "tasks/externalstoragelocation",
                     Reply(200, {"uri": storage.url("out", host="localhost"), "path": "out"}))
        assert client.payloads.write({"b": 2}, TASK_OUTPUT) == "out"

        assert [(seen.method, seen.path) for seen in proxy.requests] == [("GET", "/store/in"), ("PUT", "/store/out")]
        assert [(d.method, d.path) for d in storage.downloads] == [("GET", "/store/in"), ("PUT", "/store/out")]
        # the server itself was reached directly: plain paths, not a proxy's absolute URIs
        assert server.requests and all(r.raw_path.startswith("/") for r in server.requests)

        # resolved once for that host: the environment changed afterwards changes nothing
        monkeypatch.delenv("HTTP_PROXY")
        server.route("GET", "tasks/externalstoragelocation",
                     Reply(200, {"uri": storage.url("in", host="localhost"), "path": "in"}))
        assert client.payloads.read("in", TASK_INPUT) == {"a": 1}
        assert len(proxy.requests) == 3


def test_a_storage_host_in_no_proxy_is_reached_directly(monkeypatch, server, storage, make_client) -> None:
    with LoopbackProxy(storage.base) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        storage.put("in", {"a": 1})
        _locate(server, storage.url("in", host="localhost"), "in")
        assert make_client(server.api).payloads.read("in", TASK_INPUT) == {"a": 1}
        assert proxy.requests == [] and len(storage.downloads) == 1


def test_explicit_proxies_apply_to_the_storage_too(monkeypatch, server, storage, make_client) -> None:
    with LoopbackProxy(storage.base) as proxy:
        monkeypatch.setenv("NO_PROXY", "*")  # the environment does not decide for explicit proxies
        storage.put("in", {"a": 1})
        _locate(server, storage.url("in", host="localhost"), "in")
        client = make_client(server.api, proxies={"http://localhost": proxy.url})  # the storage host only
        assert client.payloads.read("in", TASK_INPUT) == {"a": 1}
        assert [seen.path for seen in proxy.requests] == ["/store/in"]
        assert all(r.raw_path.startswith("/") for r in server.requests)
