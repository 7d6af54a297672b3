"""The workflow API that tests and scripts use beyond start/get: status, execute, correlation
lookups, test runs with mocked outputs, skip, rerun and signals (a mixin of the engine)."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class WorkflowOps:
    """Workflow operations of the engine (see the module docstring)."""
