"""Shared pytest fixtures."""

from __future__ import annotations

from typing import Iterator

import pytest

# ----------------------------------------------------------------------------------------------
# Real conductor-oss server (tests/support/conductor_oss; tests/real_server.py runs one by hand). One JVM per test session; set
# CONDUCTOR_REAL_SERVER_URL to use a server that is already running. Without Java/the jar the
# tests that need it are skipped on a person's machine and fail in CI (CI=true).
# ----------------------------------------------------------------------------------------------
from support.availability import unavailable
from support.conductor_oss import RealConductorServer, describe_selection


def pytest_report_header(config: pytest.Config) -> str:
    return describe_selection()


def pytest_collection_modifyitems(items: "list[pytest.Item]") -> None:
    """Every test that asks for the real server is marked ``real_server`` (``-m "not real_server"``)."""
    for item in items:
        if {"real_server", "real_server_pg"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real_server)



@pytest.fixture(scope="session")
def real_server() -> Iterator[RealConductorServer]:
    server = RealConductorServer()
    try:
        server.start()
    except Exception as exc:  # any failure to obtain/start the server ends up in the message
        unavailable("real conductor server", exc)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def real_server_url(real_server: RealConductorServer) -> str:
    """``http://127.0.0.1:<port>/api`` of the session's real server."""
    return real_server.url


# ---------------------------------------------------------------------------- end real server


# ----------------------------------------------------------------------------------------------
# conductor-oss on PostgreSQL with the PostgreSQL external payload storage (tests/support/postgres.py
# starts a throwaway PostgreSQL from Debian's package). Started only by the tests that ask for it;
# like the SQLite server: skipped on a person's machine when it cannot start, a failure in CI.
# ----------------------------------------------------------------------------------------------
from support.postgres import PostgresServer  # noqa: E402


@pytest.fixture(scope="session")
def real_server_pg() -> Iterator[RealConductorServer]:
    postgres = PostgresServer()
    server: "RealConductorServer | None" = None
    try:
        postgres.start()
        # workflow outputs above 1 MB externalized too, so that the executor's download is exercised
        server = RealConductorServer(
            postgres_jdbc_url=postgres.jdbc_url,
            extra_args=["--conductor.app.workflowOutputPayloadSizeThreshold=1024"],
        )
        server.start()
    except Exception as exc:
        if server is not None:
            server.stop()
        postgres.stop()
        unavailable("real conductor server on PostgreSQL", exc)
    try:
        yield server
    finally:
        server.stop()
        postgres.stop()


@pytest.fixture(scope="session")
def real_server_pg_url(real_server_pg: RealConductorServer) -> str:
    return real_server_pg.url
