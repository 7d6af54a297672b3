"""Fixtures of the conformance suite: every test runs against LocalConductor and the real server.

``conductor`` is session-scoped and parametrised (``local`` / ``real``): pytest runs every test on
the embedded server first, then on the real conductor-oss server (started once, see
tests/real_server.py and the ``real_server_url`` fixture in tests/conftest.py).
"""

from __future__ import annotations

from typing import Iterator, Optional

import attrs
import pytest

from conductor_workers import ConductorClient, Configuration
from conductor_workers.testing import LocalConductor

#: LocalConductor's sweeper interval in this suite (seconds).
LOCAL_SWEEP_INTERVAL = 0.1


@attrs.frozen
class ConductorUnderTest:
    """The server a conformance test runs against."""

    kind: str  # "local" or "real"
    url: str  # ends in /api
    local: Optional[LocalConductor] = None


@pytest.fixture(scope="session", params=["local", pytest.param("real", marks=pytest.mark.real_server)], ids=["local", "real"])
def conductor(request: pytest.FixtureRequest) -> Iterator[ConductorUnderTest]:
    if request.param == "local":
        with LocalConductor(sweep_interval=LOCAL_SWEEP_INTERVAL) as server:
            yield ConductorUnderTest("local", server.url, server)
    else:
        url = request.getfixturevalue("real_server_url")  # skips / fails (CI) when it cannot start
        yield ConductorUnderTest("real", url)


@pytest.fixture
def client(conductor: ConductorUnderTest) -> Iterator[ConductorClient]:
    with ConductorClient(Configuration(server_url=conductor.url)) as conductor_client:
        yield conductor_client
