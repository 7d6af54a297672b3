"""``MetadataClient``: the ``/api/metadata`` endpoints for task and workflow definitions.

Register, update, fetch and remove :class:`~conductor_workers.models.TaskDef` and
:class:`~conductor_workers.models.WorkflowDef`; an empty answer for a definition is a NotFoundError.
Reached as ``ConductorClient.metadata``; re-exported by :mod:`conductor_workers.client`.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from ._client_common import _Api, _seg
from .errors import NotFoundError
from .models import TaskDef, WorkflowDef


class MetadataClient(_Api):
    """``/api/metadata``: task and workflow definitions."""

    __slots__ = ()

    def register_task_defs(self, task_defs: Sequence[TaskDef]) -> None:
        """Create or update task definitions (the server upserts)."""
        self._http.request("POST", "metadata/taskdefs", json_body=[td.to_json() for td in task_defs])

    def update_task_def(self, task_def: TaskDef) -> None:
        """Update an existing task definition (NotFoundError if there is none)."""
        self._http.request("PUT", "metadata/taskdefs", json_body=task_def.to_json())

    def get_task_def(self, name: str) -> TaskDef:
        data = self._http.call_json("GET", f"metadata/taskdefs/{_seg(name)}")
        if not data:
            raise NotFoundError(f"task definition {name!r} not found", status_code=204)
        return TaskDef.from_json(data)

    def get_task_defs(self) -> List[TaskDef]:
        return [TaskDef.from_json(item) for item in self._http.call_json("GET", "metadata/taskdefs") or []]

    def unregister_task_def(self, name: str) -> None:
        self._http.request("DELETE", f"metadata/taskdefs/{_seg(name)}")

    def register_workflow_def(self, workflow_def: WorkflowDef, overwrite: bool = False) -> None:
        """Create a workflow definition; an existing name+version is a ConflictError unless ``overwrite``."""
        self._http.request(
            "POST", "metadata/workflow", params={"overwrite": str(overwrite).lower()}, json_body=workflow_def.to_json()
        )

    def update_workflow_defs(self, workflow_defs: Sequence[WorkflowDef]) -> Dict[str, Any]:
        """Create or update several definitions; returns the server's ``BulkResponse``."""
        data = self._http.call_json("PUT", "metadata/workflow", json_body=[wd.to_json() for wd in workflow_defs])
        return dict(data or {})

    def get_workflow_def(self, name: str, version: Optional[int] = None) -> WorkflowDef:
        """The given version, or the latest."""
        data = self._http.call_json("GET", f"metadata/workflow/{_seg(name)}", params={"version": version})
        if not data:
            raise NotFoundError(f"workflow definition {name!r} not found", status_code=204)
        return WorkflowDef.from_json(data)

    def unregister_workflow_def(self, name: str, version: int) -> None:
        self._http.request("DELETE", f"metadata/workflow/{_seg(name)}/{int(version)}")
