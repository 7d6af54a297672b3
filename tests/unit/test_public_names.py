"""Public modules export what the README documents; what only the worker runtime uses stays out of
their ``__all__`` (still importable, for the runtime and for tests)."""
from __future__ import annotations

import conductor_workers.events
import conductor_workers.middleware
import conductor_workers.worker


def test_public_modules_do_not_export_what_only_the_runtime_uses() -> None:
    exported = {
        "worker": set(conductor_workers.worker.__all__),
        "middleware": set(conductor_workers.middleware.__all__),
        "events": set(conductor_workers.events.__all__),
    }
    internals = {"worker": {"run_task"}, "middleware": {"chain"}, "events": {"call_hook", "combine"}}
    leaked = {name: sorted(exported[name] & internals[name]) for name in internals}
    assert leaked == {name: [] for name in internals}
