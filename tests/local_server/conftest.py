"""Fixtures for the LocalConductor tests: a server per test and an API helper bound to it."""

from __future__ import annotations

from typing import Iterator

import pytest
from lc_support import Api

from conductor_workers.testing import LocalConductor


@pytest.fixture
def server() -> Iterator[LocalConductor]:
    with LocalConductor(sweep_interval=0.2) as conductor:
        yield conductor


@pytest.fixture
def api(server: LocalConductor) -> Iterator[Api]:
    client = Api(server.url)
    yield client
    client.session.close()
