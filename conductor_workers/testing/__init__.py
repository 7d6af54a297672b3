"""Testing helpers for code that uses ``conductor_workers``.

:class:`LocalConductor` is an in-process Conductor-compatible server that runs SIMPLE tasks for
workers and the system tasks workflows use (it lives in :mod:`conductor_workers.server`);
:func:`run_worker` runs one worker on one task input without any server; the pytest fixtures
``local_conductor`` and ``conductor_client`` live in :mod:`conductor_workers.testing.pytest_plugin`.
"""

from __future__ import annotations

from ..server import LocalConductor, PayloadLimits, ScriptLimits
from ._helpers import run_worker

__all__ = ["LocalConductor", "PayloadLimits", "ScriptLimits", "run_worker"]
