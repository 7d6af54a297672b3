"""What a fixture does when a real part (the conductor-oss server, PostgreSQL, the cluster) cannot
start: skip on a person's machine, fail under ``CI=true``, where every real part is mandatory."""
from __future__ import annotations

import os

import pytest


def unavailable(what: str, exc: BaseException) -> None:
    """Skip (a person's machine) or fail (``CI=true``) with ``what`` and the reason it could not start."""
    message = f"{what} unavailable: {type(exc).__name__}: {exc}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip("\n" + "!" * 30 + " SKIPPED: " + message)
