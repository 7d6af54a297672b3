"""Fixtures for the HTTP tests: a scripted loopback server, a dead port, no proxy variables."""
from __future__ import annotations

import socket
from typing import Any, Iterator, List

import pytest

from support.scripted_server import PROXY_VARIABLES, ScriptedServer

from conductor_workers.client import ConductorClient
from conductor_workers.config import Configuration


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    s = ScriptedServer()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client resolves proxies from the environment; keep the machine's own out of these tests."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def free_port() -> int:
    """A loopback port with nothing listening on it (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def make_client() -> Iterator[Any]:
    """``make_client(url, **Configuration options)``: clients closed at teardown (no retries by default)."""
    clients: List[ConductorClient] = []

    def build(url: str, **options: Any) -> ConductorClient:
        options.setdefault("max_retries", 0)
        options.setdefault("backoff_factor", 0)
        options.setdefault("connect_timeout", 2.0)
        options.setdefault("read_timeout", 5.0)
        client = ConductorClient(Configuration(server_url=url, **options))
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()
