"""The event-handler API (``/event``) on both servers: register, update, list, by event, remove.

Handlers are stored and validated as conductor-oss stores them; LocalConductor does not act on
events (it has no event queues), which the README says.
"""

from __future__ import annotations

from typing import Any, Dict, List

import requests
from _helpers import unique
from differences import expect_difference


def _call(conductor: Any, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, conductor.url + path, timeout=20, **kwargs)


def _handler(name: str, event: str, active: bool = True) -> Dict[str, Any]:
    return {
        "name": name,
        "event": event,
        "condition": "$.ok == true",
        "evaluatorType": "javascript",
        "active": active,
        "actions": [
            {"action": "start_workflow", "start_workflow": {"name": "wf", "version": 1, "input": {"a": "${x}"}}},
            {"action": "complete_task", "complete_task": {"workflowId": "${wf}", "taskRefName": "r", "output": {}}},
        ],
    }


def _named(handlers: List[Dict[str, Any]], name: str) -> List[Dict[str, Any]]:
    return [handler for handler in handlers if handler["name"] == name]


def test_register_list_get_by_event_update_and_remove(conductor):
    name, event = unique("cf_eh"), unique("conductor:cf_event")
    response = _call(conductor, "POST", "/event", json=_handler(name, event))
    assert response.status_code == 200, response.text
    stored = {
        "name": name,
        "event": event,
        "condition": "$.ok == true",
        "evaluatorType": "javascript",
        "active": True,
        "actions": [
            {"action": "start_workflow", "start_workflow": {"name": "wf", "version": 1, "input": {"a": "${x}"}},
             "expandInlineJSON": False},
            {"action": "complete_task", "complete_task": {"workflowId": "${wf}", "taskRefName": "r", "output": {}},
             "expandInlineJSON": False},
        ],
    }
    listed = _call(conductor, "GET", "/event")
    assert listed.status_code == 200
    assert _named(listed.json(), name) == [stored]
    assert _call(conductor, "GET", f"/event/{event}").json() == [stored]

    inactive = dict(_handler(name, event, active=False), condition="$.ok == false")
    assert _call(conductor, "PUT", "/event", json=inactive).status_code == 200
    assert _call(conductor, "GET", f"/event/{event}").json() == []  # activeOnly defaults to true
    got = _call(conductor, "GET", f"/event/{event}", params={"activeOnly": "false"}).json()
    assert got == [dict(stored, active=False, condition="$.ok == false")]

    assert _call(conductor, "DELETE", f"/event/{name}").status_code == 200
    assert _named(_call(conductor, "GET", "/event").json(), name) == []
    gone = _call(conductor, "DELETE", f"/event/{name}")
    assert gone.status_code == expect_difference(conductor, "event_handler_not_found_status")
    assert f"EventHandler with name {name} not found!" in gone.json()["message"]


def test_register_twice_is_a_conflict(conductor):
    name, event = unique("cf_eh"), unique("cf_event")
    assert _call(conductor, "POST", "/event", json=_handler(name, event)).status_code == 200
    again = _call(conductor, "POST", "/event", json=_handler(name, event))
    assert again.status_code == expect_difference(conductor, "event_handler_conflict_status")
    assert f"EventHandler with name {name} already exists!" in again.json()["message"]


def test_update_unknown_handler_is_not_found(conductor):
    name = unique("cf_eh")
    response = _call(conductor, "PUT", "/event", json=_handler(name, "e"))
    assert response.status_code == expect_difference(conductor, "event_handler_not_found_status")
    assert f"EventHandler with name {name} not found!" in response.json()["message"]


def test_handler_without_name_event_or_actions_is_refused(conductor):
    response = _call(conductor, "POST", "/event", json={"name": "", "event": "", "actions": []})
    assert response.status_code == 400, response.text
    messages = sorted(error["message"] for error in response.json()["validationErrors"])
    assert messages == ["Missing event handler name", "Missing event location",
                        "No actions specified. Please specify at-least one action"]


def test_handlers_of_an_event_with_none(conductor):
    response = _call(conductor, "GET", f"/event/{unique('cf_nothing')}")
    assert response.status_code == 200
    assert response.json() == []
