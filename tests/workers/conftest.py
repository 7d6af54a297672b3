"""Fixtures for the worker-framework tests.

* ``local_server``: one ``LocalConductor`` for the session (fast sweeper);
* ``env``: a :class:`Env` on the local server (fast tests);
* ``any_env``: the same, parametrised over ``["local", "real"]`` (lifecycle tests); ``real`` is
  marked ``real_server`` and uses the session's conductor-oss server (``real_server_url``: skipped
  on a person's machine without Java/the jar, a failure under ``CI=true``);
* ``proxied_env``: a :class:`Env` whose *workers* talk to the local server through a
  :class:`~support.proxy.LoopbackProxy` (the test's own calls go direct, so they are neither counted nor cut).

Every test gets unique task and workflow names (the servers live for the whole session).
"""
from __future__ import annotations

from typing import Iterator

import pytest
from support.proxy import LoopbackProxy
from support.workers import Env

from conductor_workers.testing import LocalConductor


@pytest.fixture(scope="session")
def local_server() -> Iterator[LocalConductor]:
    with LocalConductor(sweep_interval=0.2) as server:
        yield server


@pytest.fixture
def env(local_server: LocalConductor) -> Iterator[Env]:
    environment = Env("local", local_server.url)
    yield environment
    environment.close()


@pytest.fixture(params=["local", pytest.param("real", marks=pytest.mark.real_server)])
def any_env(request: pytest.FixtureRequest, local_server: LocalConductor) -> Iterator[Env]:
    url = local_server.url if request.param == "local" else request.getfixturevalue("real_server_url")
    environment = Env(request.param, url)
    yield environment
    environment.close()


@pytest.fixture
def proxied_env(local_server: LocalConductor) -> Iterator[Env]:
    proxy = LoopbackProxy(local_server.url)
    environment = Env("local", local_server.url, worker_url=proxy.url, proxy=proxy)
    yield environment
    environment.close()
    proxy.close()
