"""Event handlers (``/api/event``): stored and validated as conductor-oss stores them, never run.

* **A handler** names an ``event`` (a queue, e.g. ``conductor:my_queue`` or ``sqs:...``), an
  optional ``condition`` with its ``evaluatorType``, ``actions`` (``start_workflow``,
  ``complete_task``, ``fail_task``, ``terminate_workflow``, ``update_workflow_variables``,
  ``start_agent``) and ``active``.
* **It is kept the way Jackson reads it**: unknown fields are dropped, missing ones take
  conductor-oss's defaults (``active`` false, an action's ``expandInlineJSON`` false, its
  ``input``/``output`` ``{}``), nulls are left out.
* **Validation** is conductor-oss's bean validation (a name, an event, at least one action); a
  name registered twice is a 409, an update or removal of an unknown name a 404, with its words.
* **LocalConductor has no event queues**: nothing it does publishes to one and no handler ever
  runs (the README says so). The API exists for tools and SDKs that manage handlers.
"""

from __future__ import annotations

from typing import Any, Callable, ContextManager, Dict, List, Optional

from .errors import BadRequest, Conflict, NotFound, ValidationFailed, _violation
from .fields import FieldSpec, check_fields
from .model import JSON

ACTION_TYPES = ("start_workflow", "complete_task", "fail_task", "terminate_workflow", "update_workflow_variables",
                "start_agent")

_HANDLER_FIELDS: Dict[str, FieldSpec] = {
    "name": "str", "event": "str", "condition": "str", "actions": "list", "active": "bool", "evaluatorType": "str",
}
_ACTION_FIELDS: Dict[str, FieldSpec] = {
    "action": ACTION_TYPES, "start_workflow": "dict", "complete_task": "dict", "fail_task": "dict",
    "expandInlineJSON": "bool", "terminate_workflow": "dict", "update_workflow_variables": "dict",
    "start_agent": "dict",
}
_TASK_DETAILS = {"workflowId": "str", "taskRefName": "str", "output": "dict", "taskId": "str",
                 "reasonForIncompletion": "str"}
#: Each action's own fields, their types and defaults (fields absent and without a default are left out).
_ACTION_PARAMS: Dict[str, Dict[str, FieldSpec]] = {
    "start_workflow": {"name": "str", "version": "int", "correlationId": "str", "input": "dict",
                       "taskToDomain": "dict"},
    "complete_task": _TASK_DETAILS,
    "fail_task": _TASK_DETAILS,
    "terminate_workflow": {"workflowId": "str", "terminationReason": "str"},
    "update_workflow_variables": {"workflowId": "str", "variables": "dict", "appendArray": "bool"},
    "start_agent": {"name": "str", "version": "int", "prompt": "str", "sessionId": "str", "media": "list",
                    "context": "dict", "idempotencyKey": "str"},
}
_ACTION_DEFAULTS: Dict[str, JSON] = {"start_workflow": {"input": {}}, "complete_task": {"output": {}},
                                     "fail_task": {"output": {}}}


def normalise_event_handler(raw: Any, method: str) -> JSON:
    """Type-check and validate an EventHandler; return it as conductor-oss would store it.

    ``method``: ``addEventHandler`` or ``updateEventHandler`` (the start of a violation's path).
    """
    body = check_fields(raw, _HANDLER_FIELDS, "EventHandler")
    path = method + ".eventHandler."
    errors: List[JSON] = []
    if not body.get("name"):
        errors.append(_violation(path + "name", "Missing event handler name"))
    if not body.get("event"):
        errors.append(_violation(path + "event", "Missing event location"))
    if "actions" in body and body["actions"] is None:
        errors.append(_violation(path + "actions", "must not be null"))
    if not body.get("actions"):
        errors.append(_violation(path + "actions", "No actions specified. Please specify at-least one action"))
    if errors:
        raise ValidationFailed(errors)
    handler: JSON = {"name": body["name"], "event": body["event"]}
    if body.get("condition") is not None:
        handler["condition"] = body["condition"]
    handler["actions"] = [_action(action, index) for index, action in enumerate(body["actions"])]
    handler["active"] = bool(body.get("active"))
    if body.get("evaluatorType") is not None:
        handler["evaluatorType"] = body["evaluatorType"]
    return handler


def _action(raw: Any, index: int) -> JSON:
    what = "EventHandler.actions[%d]" % index
    body = check_fields(raw, _ACTION_FIELDS, what)
    action: JSON = {}
    if body.get("action") is not None:
        action["action"] = body["action"]
    for kind, fields in _ACTION_PARAMS.items():
        params = body.get(kind)
        if params is None:
            continue
        check_fields(params, fields, "%s.%s" % (what, kind))
        kept = dict(_ACTION_DEFAULTS.get(kind, {}))
        kept.update({key: params[key] for key in fields if params.get(key) is not None})
        action[kind] = kept
    action["expandInlineJSON"] = bool(body.get("expandInlineJSON"))
    return action


class EventHandlers:
    """The event-handler API on the engine's store; ``tx`` is the engine's transaction."""

    def __init__(self, tx: Callable[[], ContextManager[Any]]) -> None:
        self._tx = tx

    def add(self, raw: Any) -> None:
        handler = normalise_event_handler(raw, "addEventHandler")
        with self._tx() as store:
            if store.get_event_handler(handler["name"]) is not None:
                raise Conflict("EventHandler with name %s already exists!" % handler["name"])
            store.put_event_handler(handler)

    def update(self, raw: Any) -> None:
        handler = normalise_event_handler(raw, "updateEventHandler")
        with self._tx() as store:
            if store.get_event_handler(handler["name"]) is None:
                raise NotFound("EventHandler with name %s not found!" % handler["name"])
            store.put_event_handler(handler)

    def remove(self, name: str) -> None:
        with self._tx() as store:
            if not store.delete_event_handler(name):
                raise NotFound("EventHandler with name %s not found!" % name)

    def all(self) -> List[JSON]:
        with self._tx() as store:
            return list(store.event_handlers())

    def for_event(self, event: Optional[str], active_only: bool) -> List[JSON]:
        if not event:
            raise BadRequest("Event cannot be null or empty.")
        with self._tx() as store:
            return list(store.event_handlers(event, active_only))
