"""External payloads: :class:`PayloadLimits`, and moving the task and workflow inputs and outputs
above their thresholds to LocalConductor's own payload storage, which serves them back under
``/api/external/local/{key}`` (the engine's :class:`PayloadStorage` mixin)."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable, Sequence, Tuple

from .errors import BadRequest, Conflict, NotFound
from .model import JSON
from .store import _dumps, _Store


class PayloadLimits:
    """External payload thresholds in KB, as conductor-oss's ``conductor.app.*PayloadSizeThreshold``.

    A task's input or output above ``task_threshold_kb`` (a workflow's above ``workflow_threshold_kb``)
    is moved to LocalConductor's payload storage: API views show it empty, with
    ``external*PayloadStoragePath`` set, and clients read it through the storage location endpoints.
    A task output above ``task_max_kb`` fails the task with ``FAILED_WITH_TERMINAL_ERROR``.
    """

    __slots__ = ("task_threshold", "task_max", "workflow_threshold")

    def __init__(self, task_threshold_kb: int = 3072, task_max_kb: int = 10240, workflow_threshold_kb: int = 5120):
        self.task_threshold = task_threshold_kb * 1024
        self.task_max = task_max_kb * 1024
        self.workflow_threshold = workflow_threshold_kb * 1024


TASK_PAYLOADS = (("inputData", "externalInputPayloadStoragePath"), ("outputData", "externalOutputPayloadStoragePath"))
WORKFLOW_PAYLOADS = (("input", "externalInputPayloadStoragePath"), ("output", "externalOutputPayloadStoragePath"))


def _externalized(view: JSON, fields: Sequence[Tuple[str, str]]) -> JSON:
    for data_field, path_field in fields:
        if view.get(path_field):
            view[data_field] = {}
    return view


class PayloadStorage:
    """The payload storage of the engine (a mixin)."""

    # what the engine provides
    _store: _Store
    _tx: Callable[[], Any]
    _limits: PayloadLimits

    def _fail_oversized_output(self, task: JSON) -> bool:
        """Fail ``task`` if its output is above the maximum, as ExternalPayloadStorageUtils.failTask does.

        True when it did: the task is then ``FAILED_WITH_TERMINAL_ERROR`` with an empty output.
        """
        output = task.get("outputData")
        size = len(_dumps(output).encode("utf-8")) if output else 0
        if size <= self._limits.task_max:
            return False
        task["status"] = "FAILED_WITH_TERMINAL_ERROR"
        task["outputData"] = {}
        task["reasonForIncompletion"] = (
            "The payload size: %d of task: %s in workflow: %s  is greater than the permissible limit: %d bytes"
            % (size, task["taskId"], task["workflowInstanceId"], self._limits.task_max))
        return True

    def _externalize(self, entity: JSON, fields: Sequence[Tuple[str, str]], threshold: int) -> None:
        """Move payloads above ``threshold`` bytes to the payload store (the entity keeps its copy)."""
        for data_field, path_field in fields:
            data = entity.get(data_field)
            if not data:
                continue
            body = _dumps(data)
            if len(body) <= threshold:  # ASCII: json.dumps escapes the rest
                entity.pop(path_field, None)
                continue
            existing = entity.get(path_field)
            if existing and self._store.get_payload(existing) == body:
                continue  # already stored there (e.g. a worker's upload): keep its path
            key = hashlib.sha256(body.encode("utf-8")).hexdigest() + ".hashed.json"
            self._store.put_payload(key, body)
            entity[path_field] = key

    def store_payload(self, key: str, payload: Any) -> None:
        """Keep an uploaded payload (``PUT /api/external/local/{key}``): a JSON object, at a new key.

        A stored payload is never replaced (409): a task's input or output kept there must stay
        what the server stored, whoever learns its key.
        """
        if not isinstance(payload, dict):
            raise BadRequest("An external payload must be a JSON object")
        with self._tx() as store:
            if store.get_payload(key) is not None:
                raise Conflict("A payload is already stored at path: %s" % key)
            store.put_payload(key, _dumps(payload))

    def payload(self, key: str) -> JSON:
        with self._tx() as store:
            body = store.get_payload(key)
        if body is None:
            raise NotFound("No payload found in external storage at path: %s" % key)
        return json.loads(body)
