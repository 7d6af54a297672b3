"""Metadata operations: register, update, get, list and delete task definitions and workflow
definitions (the engine's :class:`Metadata` mixin)."""

from __future__ import annotations

from typing import Any, Callable, List, Optional

from .errors import BadRequest, Conflict, NotFound, ValidationFailed, _violation
from .model import JSON, _java_str, now_ms
from .validation import normalise_task_def, normalise_workflow_def


class Metadata:
    """Task and workflow definitions (a mixin of the engine)."""

    # what the engine provides
    _tx: Callable[[], Any]

    # Metadata: task definitions -------------------------------------------------------------
    def register_task_defs(self, raw: Any) -> None:
        if not isinstance(raw, list):
            raise BadRequest("Invalid request body: expected a JSON array of TaskDef")
        if not raw:
            raise ValidationFailed([_violation("registerTaskDef.taskDefinitions",
                                               "size must be between 1 and 2147483647")])
        task_defs = [normalise_task_def(item, "registerTaskDef.taskDefinitions[%d]" % index)
                     for index, item in enumerate(raw)]
        with self._tx() as store:
            for task_def in task_defs:
                existing = store.get_task_def(task_def["name"])
                task_def.setdefault("createTime", (existing or {}).get("createTime") or now_ms())
                if existing:
                    task_def["updateTime"] = now_ms()
                store.put_task_def(task_def)

    def update_task_def(self, raw: Any) -> None:
        task_def = normalise_task_def(raw, "updateTaskDef.taskDefinition")
        with self._tx() as store:
            existing = store.get_task_def(task_def["name"])
            if existing is None:
                raise NotFound("No such task by name %s" % task_def["name"])
            task_def["createTime"] = existing.get("createTime")
            task_def["updateTime"] = now_ms()
            store.put_task_def(task_def)

    def task_defs(self) -> List[JSON]:
        with self._tx() as store:
            return store.task_defs()

    def task_def(self, name: str) -> JSON:
        with self._tx() as store:
            task_def = store.get_task_def(name)
        if task_def is None:
            raise NotFound("No such taskType found by name: %s" % name)
        return task_def

    def delete_task_def(self, name: str) -> None:
        with self._tx() as store:
            if not store.delete_task_def(name):
                raise NotFound("No such task definition")

    # Metadata: workflow definitions ---------------------------------------------------------
    def create_workflow_def(self, raw: Any, overwrite: bool) -> None:
        wf_def = normalise_workflow_def(raw, "registerWorkflowDef.workflowDef")
        with self._tx() as store:
            existing = store.get_workflow_def(wf_def["name"], wf_def["version"])
            if existing is not None and not overwrite:
                raise Conflict("Workflow with %s.%d already exists!" % (wf_def["name"], wf_def["version"]))
            self._stamp(wf_def, existing)
            store.put_workflow_def(wf_def)

    def upsert_workflow_defs(self, raw: Any) -> JSON:
        """``PUT /api/metadata/workflow``: create or update each; returns a BulkResponse."""
        if not isinstance(raw, list):
            raise BadRequest("Invalid request body: expected a JSON array of WorkflowDef")
        wf_defs = [normalise_workflow_def(item, "updateWorkflowDef.workflowDefs[%d]" % index)
                   for index, item in enumerate(raw)]
        with self._tx() as store:
            for wf_def in wf_defs:
                self._stamp(wf_def, store.get_workflow_def(wf_def["name"], wf_def["version"]))
                store.put_workflow_def(wf_def)
        return {
            "bulkErrorResults": {},
            "bulkSuccessfulResults": [wf_def["name"] for wf_def in wf_defs],
            "message": "Bulk Request has been processed.",
        }

    @staticmethod
    def _stamp(wf_def: JSON, existing: Optional[JSON]) -> None:
        if existing is None:
            wf_def.setdefault("createTime", now_ms())
        else:
            wf_def["createTime"] = existing.get("createTime")
            wf_def["updateTime"] = now_ms()

    def workflow_def(self, name: str, version: Optional[int]) -> JSON:
        with self._tx() as store:
            wf_def = store.get_workflow_def(name, version)
        if wf_def is None:
            raise NotFound("No such workflow found by name: %s, version: %s" % (name, _java_str(version)))
        return wf_def

    def workflow_defs(self) -> List[JSON]:
        with self._tx() as store:
            return store.workflow_defs()

    def delete_workflow_def(self, name: str, version: int) -> None:
        with self._tx() as store:
            if not store.delete_workflow_def(name, version):
                raise NotFound("No such workflow definition: %s version: %d" % (name, version))
