"""Regression tests for the divergences the differential suite (tests/conformance/test_differential.py)
found between LocalConductor and conductor-oss 3.32.1. Each test states what the real server does
(measured); each failed before its fix, except the negative-count one, which pins a difference that
is listed on purpose (tests/conformance/differential_differences.py).
"""
from __future__ import annotations

from typing import List, Tuple

from lc_support import Api, simple


def _tasks(api: Api, workflow_id: str) -> List[Tuple[str, str]]:
    return [(t["referenceTaskName"], t["status"]) for t in api.workflow(workflow_id)["tasks"]]


def test_resume_of_a_running_workflow_is_a_409_not_a_500(api: Api) -> None:
    """conductor-oss: 500 (IllegalStateException). LocalConductor never answers 5xx for a client error."""
    api.task_def("rs")
    api.workflow_def("rs_wf", [simple("rs")])
    workflow_id = api.start("rs_wf")
    response = api.put("/workflow/%s/resume" % workflow_id)
    assert response.status_code == 409, response.text
    assert "not PAUSED" in response.json()["message"]


def test_update_by_ref_name_of_an_unknown_workflow_is_an_empty_200(api: Api) -> None:
    """conductor-oss: 200 with an empty body (nothing pending), like an unknown reference name."""
    response = api.post("/tasks/no-such-workflow/a/COMPLETED", json={"v": 1})
    assert (response.status_code, response.text) == (200, "")
    synced = api.post("/tasks/no-such-workflow/a/COMPLETED/sync", json={})
    assert synced.status_code == 404
    assert synced.json()["message"] == "Found no running task a of workflow no-such-workflow to update"


def test_a_task_log_without_a_body_is_a_400(api: Api) -> None:
    """conductor-oss: 500 ("Required request body is missing"); a missing body is the client's error."""
    response = api.post("/tasks/any-task/log", data=b"", headers={"Content-Type": "text/plain"})
    assert response.status_code == 400, response.text
    assert api.get("/tasks/any-task/log").status_code == 204  # nothing stored


def test_a_negative_batch_poll_timeout_polls_what_is_queued_now(api: Api) -> None:
    """conductor-oss: a timeout below 0 is no wait, not "nothing"; it hands the queued task out."""
    api.task_def("neg_to")
    api.workflow_def("neg_to_wf", [simple("neg_to")])
    api.start("neg_to_wf")
    response = api.get("/tasks/poll/batch/neg_to", params={"count": 1, "timeout": -1})
    assert response.status_code == 200
    assert [task["taskType"] for task in response.json()] == ["neg_to"]


def test_a_batch_poll_count_below_one_takes_nothing(api: Api) -> None:
    """conductor-oss on SQLite hands out the whole queue for a negative count; we take none (listed)."""
    api.task_def("neg_count")
    api.workflow_def("neg_count_wf", [simple("neg_count")])
    api.start("neg_count_wf")
    for count in (0, -1):
        response = api.get("/tasks/poll/batch/neg_count", params={"count": count, "timeout": 0})
        assert (response.status_code, response.json()) == (200, [])
    assert api.get("/tasks/queue/sizes", params={"taskType": "neg_count"}).json() == {"neg_count": 1}


def test_an_unknown_workflow_is_a_404_before_a_null_input_is_a_400(api: Api) -> None:
    """conductor-oss looks the definition up before it checks the input."""
    unknown = api.post("/workflow", json={"name": "no_such_wf", "input": None})
    assert unknown.status_code == 404, unknown.text
    api.task_def("null_in")
    api.workflow_def("null_in_wf", [simple("null_in")])
    known = api.post("/workflow", json={"name": "null_in_wf", "input": None})
    assert known.status_code == 400, known.text
    assert known.json()["message"] == "NULL input passed when starting workflow"


def test_a_failed_optional_last_task_stays_failed_in_a_completed_workflow(api: Api) -> None:
    """conductor-oss completes the workflow without saving the decider's task changes of that pass: the
    last optional task keeps FAILED; an optional task that is followed by another one becomes
    COMPLETED_WITH_ERRORS."""
    api.task_def("opt_a", retryCount=0)
    api.task_def("opt_b", retryCount=0)
    api.workflow_def("opt_wf", [simple("opt_a", "a", optional=True), simple("opt_b", "b", optional=True)])
    workflow_id = api.start("opt_wf")
    first = api.poll("opt_a")
    assert first is not None
    api.complete(first, status="FAILED")
    assert _tasks(api, workflow_id) == [("a", "COMPLETED_WITH_ERRORS"), ("b", "SCHEDULED")]
    last = api.poll("opt_b")
    assert last is not None
    api.complete(last, status="FAILED_WITH_TERMINAL_ERROR")
    workflow = api.workflow(workflow_id)
    assert workflow["status"] == "COMPLETED"
    assert _tasks(api, workflow_id) == [("a", "COMPLETED_WITH_ERRORS"), ("b", "FAILED_WITH_TERMINAL_ERROR")]
    assert workflow["failedReferenceTaskNames"] == []


def test_input_template_values_are_resolved_and_fill_null_inputs(api: Api) -> None:
    """ParametersUtils.getTaskInputV2: template entries are resolved like inputParameters, and an input
    that resolves to null takes the template's raw value."""
    api.task_def("tpl", inputTemplate={"fromInput": "${workflow.input.x}", "escaped": "$${a}", "n": "default"})
    api.workflow_def("tpl_wf", [simple("tpl", inputParameters={"n": "${workflow.input.missing}",
                                                                "other": "${workflow.input.missing}"})])
    api.start("tpl_wf", {"x": 5})
    task = api.poll("tpl")
    assert task is not None
    assert task["inputData"] == {"fromInput": 5, "escaped": "${a}", "n": "default", "other": None}


def test_a_retried_workflow_keeps_the_start_delay_and_queues_the_task_at_once(api: Api) -> None:
    """taskToBeRescheduled copies the task (startDelayInSeconds too) and queues it with no delay."""
    api.task_def("delayed", retryCount=0)
    api.workflow_def("delayed_wf", [simple("delayed", startDelay=600)])
    workflow_id = api.start("delayed_wf")
    first = api.workflow(workflow_id)["tasks"][0]
    assert api.poll("delayed", timeout_ms=0) is None  # start delay: not yet
    api.complete(first, status="FAILED")
    assert api.workflow(workflow_id)["status"] == "FAILED"
    assert api.post("/workflow/%s/retry" % workflow_id).status_code == 204
    again = api.poll("delayed", timeout_ms=0)
    assert again is not None
    assert (again["startDelayInSeconds"], again["callbackAfterSeconds"]) == (600, 0)
