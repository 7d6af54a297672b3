"""The Conductor wire models as frozen attrs classes with snake_case attributes.

Each class maps its attributes to the server's JSON names once (the ``wire`` metadata of a field) and
gets ``from_json`` / ``to_json`` from :class:`WireModel`. Fields the server sends that a class does not
declare are kept in ``extra`` and sent back by ``to_json``, so a definition fetched from a newer server
survives a round trip. ``None`` attributes are left out of the JSON, as the server itself does.

The classes live in private modules grouped by concept (``_wire``: the mapping machinery;
``_metadata_models``: definitions; ``_task_models``: what workers poll and report;
``_workflow_models``: executions); this module is their public home and re-exports them all.
"""
from __future__ import annotations

from . import _task_models, _wire
from ._metadata_models import TaskDef, WorkflowDef, WorkflowTask
from ._task_models import (
    PollData,
    Task,
    TaskExecLog,
    TaskResult,
    TaskResultStatus,
    TaskStatus,
)
from ._workflow_models import (
    SignalResponse,
    StartWorkflowRequest,
    Workflow,
    WorkflowStatus,
    WorkflowStatusSummary,
)

# public names that are not in __all__, importable from here as before
REASON_MAX_CHARS = _task_models.REASON_MAX_CHARS
WireModel = _wire.WireModel
wire = _wire.wire

__all__ = [
    "PollData",
    "SignalResponse",
    "StartWorkflowRequest",
    "Task",
    "TaskDef",
    "TaskExecLog",
    "TaskResult",
    "TaskResultStatus",
    "TaskStatus",
    "Workflow",
    "WorkflowDef",
    "WorkflowStatus",
    "WorkflowStatusSummary",
    "WorkflowTask",
]
