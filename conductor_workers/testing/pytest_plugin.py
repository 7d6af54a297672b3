"""pytest fixtures for testing code that uses conductor_workers; opt in from a ``conftest.py``::

    pytest_plugins = ["conductor_workers.testing.pytest_plugin"]

``local_conductor`` is a :class:`LocalConductor` shared by the test session (use unique task and
workflow names per test); ``conductor_client`` is a :class:`ConductorClient` connected to it.
"""
from __future__ import annotations

from typing import Iterator

import pytest

from ..client import ConductorClient
from ..config import Configuration
from ..server import LocalConductor


@pytest.fixture(scope="session")
def local_conductor() -> Iterator[LocalConductor]:
    """An embedded Conductor server for the whole test session."""
    with LocalConductor() as server:
        yield server


@pytest.fixture
def conductor_client(local_conductor: LocalConductor) -> Iterator[ConductorClient]:
    """A client connected to :func:`local_conductor`, closed after the test."""
    with ConductorClient(Configuration(server_url=local_conductor.url)) as client:
        yield client
