"""LocalConductor workflow and task life cycle: start, poll, update, retries, timeouts, control."""

from __future__ import annotations

import time

from lc_support import simple


def _one_task_workflow(api, name="wf", task="t", **task_def):
    api.task_def(task, **task_def)
    api.workflow_def(name, [simple(task)])


# Start and inputs ----------------------------------------------------------------------------


def test_start_resolves_inputs_and_templates(api):
    api.task_def("a", inputTemplate={"fromTaskTemplate": 1, "x": "ignored"})
    api.task_def("b")
    api.workflow_def("wf", [
        simple("a", inputParameters={
            "x": "${workflow.input.x}", "nested": {"list": ["${workflow.input.obj.items[1]}", 3]},
            "text": "id=${workflow.workflowId} x=${workflow.input.x}", "missing": "${workflow.input.nope}",
            "whole": "${workflow.input.obj}", "corr": "${workflow.correlationId}", "escaped": "$${literal}"}),
        simple("b", inputParameters={"fromA": "${a.output.result.deep}", "aInput": "${a.input.x}",
                                     "first": "${a.output.list[0]}"}),
    ], inputTemplate={"defaulted": "yes", "x": 0}, outputParameters={"final": "${b.output.done}"})
    workflow_id = api.start("wf", {"x": 5, "obj": {"items": ["p", "q"]}}, correlationId="c-1")
    task = api.poll("a")
    assert task["inputData"] == {
        "x": 5, "nested": {"list": ["q", 3]}, "text": "id=%s x=5" % workflow_id, "missing": None,
        "whole": {"items": ["p", "q"]}, "corr": "c-1", "escaped": "${literal}", "fromTaskTemplate": 1}
    workflow = api.workflow(workflow_id)
    assert workflow["input"]["defaulted"] == "yes" and workflow["input"]["x"] == 5
    assert workflow["correlationId"] == "c-1"
    assert workflow["workflowName"] == "wf" and workflow["workflowVersion"] == 1
    assert workflow["startTime"] == workflow["createTime"]
    api.complete(task, outputData={"result": {"deep": [1, 2]}, "list": ["L"]})
    task_b = api.poll("b")
    assert task_b["inputData"] == {"fromA": [1, 2], "aInput": 5, "first": "L"}
    api.complete(task_b, outputData={"done": True})
    workflow = api.wait_status(workflow_id, "COMPLETED")
    assert workflow["output"] == {"final": True}
    assert [t["seq"] for t in workflow["tasks"]] == [1, 2]
    assert workflow["endTime"] >= workflow["startTime"]


def test_start_with_request_body_and_errors(api):
    _one_task_workflow(api)
    response = api.post("/workflow", json={"name": "wf", "version": 1, "input": {"k": "v"}, "priority": 7})
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
    workflow = api.workflow(response.text)
    assert workflow["priority"] == 7 and workflow["input"] == {"k": "v"}
    missing = api.post("/workflow/nope", json={})
    assert missing.status_code == 404
    assert missing.json()["message"] == "No such workflow found by name: nope, version: null"
    assert api.post("/workflow", json={"version": 1}).status_code == 400
    assert api.post("/workflow", json={"name": "wf", "priority": 100}).status_code == 400
    assert api.post("/workflow", json={"name": "wf", "input": None}).json()["message"] == (
        "NULL input passed when starting workflow")
    assert api.get("/workflow/unknown-id").status_code == 404


def test_last_task_output_is_workflow_output_and_default_task_def(api):
    api.workflow_def("wf", [simple("unregistered")])
    workflow_id = api.start("wf")
    task = api.poll("unregistered")
    assert task["workflowTask"]["taskDefinition"]["retryCount"] == 3
    assert task["responseTimeoutSeconds"] == 3600
    api.complete(task, outputData={"r": 1})
    assert api.wait_status(workflow_id, "COMPLETED")["output"] == {"r": 1}


def test_priority_orders_the_queue(api):
    _one_task_workflow(api)
    low = api.start("wf", priority=1)
    high = api.start("wf", priority=50)
    assert api.poll("t")["workflowInstanceId"] == high
    assert api.poll("t")["workflowInstanceId"] == low


# Poll ------------------------------------------------------------------------------------------


def test_poll_transitions_and_poll_data(api):
    _one_task_workflow(api)
    assert api.get("/tasks/poll/t").status_code == 204
    assert api.get("/tasks/poll/batch/t", params={"timeout": 0}).json() == []
    workflow_id = api.start("wf")
    assert api.get("/tasks/queue/sizes", params={"taskType": ["t", "other"]}).json() == {"t": 1, "other": 0}
    response = api.get("/tasks/poll/t", params={"workerid": "w1"})
    assert response.status_code == 200
    task = response.json()
    assert task["status"] == "IN_PROGRESS" and task["pollCount"] == 1 and task["workerId"] == "w1"
    assert task["startTime"] >= task["scheduledTime"] > 0 and task["callbackAfterSeconds"] == 0
    assert task["workflowInstanceId"] == workflow_id and task["workflowType"] == "wf"
    assert task["taskDefName"] == "t" and task["referenceTaskName"] == "t"
    assert api.get("/tasks/queue/sizes", params={"taskType": "t"}).json() == {"t": 0}
    poll_data = api.get("/tasks/queue/polldata", params={"taskType": "t"}).json()
    assert poll_data[0]["queueName"] == "t" and poll_data[0]["workerId"] == "w1"
    too_long = api.get("/tasks/poll/batch/t", params={"timeout": 5001})
    assert too_long.status_code == 400
    assert too_long.json()["message"] == "Long Poll Timeout value cannot be more than 5 seconds"


def test_domains(api):
    _one_task_workflow(api)
    response = api.post("/workflow", json={"name": "wf", "taskToDomain": {"t": "blue"}})
    workflow_id = response.text
    assert api.poll("t", timeout_ms=0) is None
    task = api.poll("t", timeout_ms=0, domain="blue")
    assert task["workflowInstanceId"] == workflow_id and task["domain"] == "blue"
    api.post("/workflow", json={"name": "wf", "taskToDomain": {"*": "green"}})
    assert api.poll("t", timeout_ms=0, domain="green")["domain"] == "green"


# Update ----------------------------------------------------------------------------------------


def test_update_validation_and_not_found(api):
    _one_task_workflow(api)
    workflow_id = api.start("wf")
    task = api.poll("t")
    response = api.post("/tasks", json={"taskId": "", "workflowInstanceId": "", "status": "COMPLETED"})
    assert response.status_code == 400
    assert {e["path"] for e in response.json()["validationErrors"]} == {
        "updateTask.taskResult.workflowInstanceId", "updateTask.taskResult.taskId"}
    unknown = {"taskId": "nope", "workflowInstanceId": "nope", "status": "COMPLETED"}
    response = api.post("/tasks", json=unknown)  # the workflow is checked first
    assert response.status_code == 404 and response.json()["message"] == "No such workflow found by id: nope"
    response = api.post("/tasks", json=dict(unknown, workflowInstanceId=workflow_id))
    assert response.status_code == 404 and response.json()["message"] == "No such task found by id: nope"
    response = api.post("/tasks", json=dict(unknown, workflowInstanceId=workflow_id, taskId=task["taskId"],
                                            status="DONE"))
    assert response.status_code == 400
    assert api.get("/tasks/nope").status_code == 404


def test_in_progress_update_requeues_after_callback(api):
    _one_task_workflow(api)
    api.start("wf")
    task = api.poll("t")
    response = api.complete(task, status="IN_PROGRESS", callbackAfterSeconds=1, outputData={"step": 1},
                            logs=[{"log": "half way"}])
    assert response.text == task["taskId"]
    stored = api.get("/tasks/" + task["taskId"]).json()
    assert stored["status"] == "SCHEDULED" and stored["outputData"] == {"step": 1}
    assert stored["callbackAfterSeconds"] == 1
    assert api.poll("t", timeout_ms=0) is None
    started = time.monotonic()
    again = api.poll("t", timeout_ms=3000)
    assert 0.7 < time.monotonic() - started < 2.0
    assert again["taskId"] == task["taskId"] and again["pollCount"] == 2
    assert again["startTime"] == task["startTime"] and again["callbackAfterSeconds"] == 0
    api.complete(again, outputData={"step": 2})
    assert api.get("/tasks/" + task["taskId"]).json()["outputData"] == {"step": 2}
    assert [entry["log"] for entry in api.get("/tasks/%s/log" % task["taskId"]).json()] == ["half way"]


def test_terminal_updates_are_ignored(api):
    _one_task_workflow(api)
    workflow_id = api.start("wf")
    task = api.poll("t")
    api.complete(task, outputData={"first": True})
    response = api.complete(task, status="FAILED", outputData={"second": True})
    assert response.text == task["taskId"]
    assert api.get("/tasks/" + task["taskId"]).json()["outputData"] == {"first": True}
    assert api.workflow(workflow_id)["status"] == "COMPLETED"


def test_extend_lease_restarts_response_timeout(api):
    _one_task_workflow(api, responseTimeoutSeconds=1)
    workflow_id = api.start("wf")
    task = api.poll("t")
    for _ in range(3):
        time.sleep(0.5)
        api.complete(task, status="FAILED", extendLease=True)  # status is ignored with extendLease
    stored = api.get("/tasks/" + task["taskId"]).json()
    assert stored["status"] == "IN_PROGRESS"
    api.complete(task)
    assert api.wait_status(workflow_id, "COMPLETED")["tasks"][0]["taskId"] == task["taskId"]


def test_update_v2(api):
    _one_task_workflow(api)
    api.start("wf")
    api.start("wf")
    task = api.poll("t")
    body = {"workflowInstanceId": task["workflowInstanceId"], "taskId": task["taskId"], "workerId": "w9"}
    assert api.post("/tasks/update-v2", json=dict(body, status="IN_PROGRESS")).status_code == 204
    task = api.poll("t")  # the first task again (callbackAfterSeconds=0), or the other one
    body.update(workflowInstanceId=task["workflowInstanceId"], taskId=task["taskId"], status="COMPLETED")
    response = api.post("/tasks/update-v2", json=body)
    assert response.status_code == 200
    next_task = response.json()
    assert next_task["status"] == "IN_PROGRESS" and next_task["workerId"] == "w9"
    assert next_task["taskId"] != task["taskId"]
    body.update(workflowInstanceId=next_task["workflowInstanceId"], taskId=next_task["taskId"])
    assert api.post("/tasks/update-v2", json=body).status_code == 204


def test_update_by_reference_name(api):
    api.task_def("a")
    api.task_def("b")
    api.workflow_def("wf", [simple("a"), simple("b")])
    workflow_id = api.start("wf")
    task = api.poll("a")
    api.complete(task, status="IN_PROGRESS", outputData={"keep": 1})
    response = api.post("/tasks/%s/a/COMPLETED" % workflow_id, json={"added": 2},
                        params={"workerid": "ref-worker"})
    assert response.status_code == 200 and response.text == task["taskId"]
    stored = api.get("/tasks/" + task["taskId"]).json()
    assert stored["outputData"] == {"keep": 1, "added": 2} and stored["status"] == "COMPLETED"
    assert stored["workerId"] == "ref-worker"
    nothing = api.post("/tasks/%s/a/COMPLETED" % workflow_id, json={})
    assert nothing.status_code == 200 and nothing.text == ""
    synced = api.post("/tasks/%s/b/COMPLETED/sync" % workflow_id, json={"b": True})
    assert synced.status_code == 200 and synced.json()["status"] == "COMPLETED"
    missing = api.post("/tasks/%s/b/COMPLETED/sync" % workflow_id, json={})
    assert missing.status_code == 404
    assert api.post("/tasks/%s/b/BOGUS" % workflow_id, json={}).status_code == 400


def test_task_logs(api):
    _one_task_workflow(api)
    api.start("wf")
    task = api.poll("t")
    assert api.get("/tasks/%s/log" % task["taskId"]).status_code == 204
    api.post("/tasks/%s/log" % task["taskId"], data="plain line", headers={"Content-Type": "text/plain"})
    api.post("/tasks/%s/log" % task["taskId"], json="quoted")
    logs = api.get("/tasks/%s/log" % task["taskId"]).json()
    assert [entry["log"] for entry in logs] == ["plain line", '"quoted"']
    assert logs[0]["taskId"] == task["taskId"] and logs[0]["createdTime"] > 0


# Retries, optional tasks, failures --------------------------------------------------------------


def test_retry_with_delay_then_failure(api):
    _one_task_workflow(api, retryCount=1, retryDelaySeconds=1)
    workflow_id = api.start("wf")
    first = api.poll("t")
    api.complete(first, status="FAILED", reasonForIncompletion="boom")
    assert api.poll("t", timeout_ms=0) is None
    started = time.monotonic()
    second = api.poll("t", timeout_ms=3000)
    assert 0.7 < time.monotonic() - started < 2.0
    assert second["retryCount"] == 1 and second["retriedTaskId"] == first["taskId"]
    assert second["taskId"] != first["taskId"]
    assert api.get("/tasks/" + first["taskId"]).json()["retried"] is True
    api.complete(second, status="FAILED", reasonForIncompletion="again", outputData={"o": 1})
    workflow = api.wait_status(workflow_id, "FAILED")
    assert workflow["reasonForIncompletion"] == (
        "Task %s failed with status: FAILED and reason: 'again'" % second["taskId"])
    assert workflow["failedReferenceTaskNames"] == ["t"] and workflow["failedTaskNames"] == ["t"]
    assert workflow["output"] == {"o": 1}


def test_backoff_delays_and_workflow_task_retry_override(api):
    api.task_def("lin", retryCount=5, retryDelaySeconds=2, retryLogic="LINEAR_BACKOFF", backoffScaleFactor=3)
    api.task_def("exp", retryCount=5, retryDelaySeconds=1, retryLogic="EXPONENTIAL_BACKOFF",
                 maxRetryDelaySeconds=3)
    api.workflow_def("lw", [simple("lin")])
    api.workflow_def("ew", [simple("exp")])
    api.workflow_def("ow", [simple("exp", "override", retryCount=0)])

    def retry_delays(workflow_id, task_type, failures):
        delays = []
        for attempt in range(failures):
            task = api.poll(task_type, timeout_ms=0) if attempt == 0 else None
            if task is None:  # skip the wait: read the scheduled retry and fail it directly
                task = [t for t in api.workflow(workflow_id)["tasks"] if t["status"] == "SCHEDULED"][-1]
            api.complete(task, status="FAILED")
            retried = api.workflow(workflow_id)["tasks"][-1]
            delays.append(retried["startDelayInSeconds"])
        return delays

    assert retry_delays(api.start("lw"), "lin", 3) == [6, 12, 18]
    assert retry_delays(api.start("ew"), "exp", 3) == [1, 2, 3]
    workflow_id = api.start("ow")
    api.complete(api.poll("exp"), status="FAILED")
    assert api.wait_status(workflow_id, "FAILED")


def test_optional_and_terminal_error(api):
    api.task_def("opt", retryCount=0)
    api.task_def("t", retryCount=3)
    api.workflow_def("wf", [simple("opt", optional=True), simple("t")])
    workflow_id = api.start("wf")
    api.complete(api.poll("opt"), status="FAILED", reasonForIncompletion="meh")
    assert api.get("/tasks/" + api.workflow(workflow_id)["tasks"][0]["taskId"]).json()["status"] == (
        "COMPLETED_WITH_ERRORS")
    task = api.poll("t")
    api.complete(task, status="FAILED_WITH_TERMINAL_ERROR", reasonForIncompletion="fatal")
    workflow = api.wait_status(workflow_id, "FAILED")
    assert len(workflow["tasks"]) == 2  # never retried
    assert workflow["reasonForIncompletion"] == (
        "Task %s failed with status: FAILED and reason: 'fatal'" % task["taskId"])


def test_response_timeout_retries_with_new_id_then_times_out(api):
    _one_task_workflow(api, responseTimeoutSeconds=1, retryCount=1)
    workflow_id = api.start("wf")
    first = api.poll("t")
    second = api.poll("t", timeout_ms=3000)
    assert second is not None and second["retriedTaskId"] == first["taskId"]
    old = api.get("/tasks/" + first["taskId"]).json()
    assert old["status"] == "TIMED_OUT"
    assert old["reasonForIncompletion"] == (
        "responseTimeout: 1 exceeded for the taskId: %s with Task Definition: t" % first["taskId"])
    api.complete(first)  # late update of the dead attempt: ignored
    assert api.get("/tasks/" + first["taskId"]).json()["status"] == "TIMED_OUT"
    workflow = api.wait_status(workflow_id, "TIMED_OUT", timeout=4)
    expected = "Task %s failed with status: TIMED_OUT" % second["taskId"]
    assert workflow["reasonForIncompletion"].startswith(expected)


def test_task_timeout_policies(api):
    api.task_def("wf_timeout", timeoutSeconds=1, responseTimeoutSeconds=1, timeoutPolicy="TIME_OUT_WF")
    api.task_def("poll_timeout", pollTimeoutSeconds=1, timeoutPolicy="RETRY", retryCount=0)
    api.workflow_def("a", [simple("wf_timeout")])
    api.workflow_def("b", [simple("poll_timeout")])
    first = api.start("a")
    second = api.start("b")
    task = api.poll("wf_timeout")
    workflow = api.wait_status(first, "TIMED_OUT", timeout=4)
    reason = api.get("/tasks/" + task["taskId"]).json()["reasonForIncompletion"]
    assert reason.startswith("Task timed out after 1 seconds. Timeout configured as 1 seconds.")
    assert workflow["reasonForIncompletion"] == reason
    workflow = api.wait_status(second, "TIMED_OUT", timeout=4)
    assert "Task poll timed out after" in workflow["tasks"][0]["reasonForIncompletion"]


# Workflow control ----------------------------------------------------------------------------


def test_terminate(api):
    _one_task_workflow(api)
    workflow_id = api.start("wf")
    task = api.poll("t")
    assert api.delete("/workflow/" + workflow_id, params={"reason": "stop"}).status_code == 200
    workflow = api.workflow(workflow_id)
    assert workflow["status"] == "TERMINATED" and workflow["reasonForIncompletion"] == "stop"
    assert workflow["tasks"][0]["status"] == "CANCELED"
    assert api.complete(task).text == task["taskId"]  # ignored
    assert api.delete("/workflow/" + workflow_id).status_code == 200  # already terminated
    done = api.start("wf")
    api.complete(api.poll("t"))
    conflict = api.delete("/workflow/" + done)
    assert conflict.status_code == 409
    assert conflict.json()["message"] == "Cannot terminate a COMPLETED workflow."


def test_pause_and_resume(api):
    api.task_def("a")
    api.task_def("b")
    api.workflow_def("wf", [simple("a"), simple("b")])
    workflow_id = api.start("wf")
    assert api.put("/workflow/%s/pause" % workflow_id).status_code == 200
    assert api.workflow(workflow_id)["status"] == "PAUSED"
    api.complete(api.poll("a"))  # already scheduled tasks can still be polled and updated
    assert api.poll("b", timeout_ms=200) is None  # but nothing new is scheduled
    assert api.put("/workflow/%s/resume" % workflow_id).status_code == 200
    api.complete(api.poll("b"))
    api.wait_status(workflow_id, "COMPLETED")
    assert api.put("/workflow/%s/pause" % workflow_id).status_code == 409
    assert api.put("/workflow/%s/resume" % workflow_id).status_code == 409  # conductor-oss: 500 (IllegalStateException)


def test_retry_restart_remove_running(api):
    _one_task_workflow(api, retryCount=0)
    workflow_id = api.start("wf")
    assert api.get("/workflow/running/wf").json() == [workflow_id]
    # conductor-oss 3.32 ignores the version here (every version's running executions)
    assert api.get("/workflow/running/wf", params={"version": 2}).json() == [workflow_id]
    assert api.post("/workflow/%s/retry" % workflow_id).status_code == 404  # still running
    remove = api.delete("/workflow/%s/remove" % workflow_id)
    assert remove.status_code == 400
    assert remove.json()["message"] == "Cannot archive workflow: %s with status: RUNNING" % workflow_id
    failed = api.poll("t")
    api.complete(failed, status="FAILED")
    api.wait_status(workflow_id, "FAILED")
    assert api.post("/workflow/%s/retry" % workflow_id).status_code == 204
    retried = api.poll("t")
    assert retried["retriedTaskId"] == failed["taskId"] and retried["retryCount"] == 1
    assert api.workflow(workflow_id)["status"] == "RUNNING"
    api.complete(retried, outputData={"ok": 1})
    api.wait_status(workflow_id, "COMPLETED")
    assert api.post("/workflow/%s/restart" % workflow_id).status_code == 204
    workflow = api.workflow(workflow_id)
    assert workflow["status"] == "RUNNING" and len(workflow["tasks"]) == 1
    api.complete(api.poll("t"))
    api.wait_status(workflow_id, "COMPLETED")
    assert api.delete("/workflow/%s/remove" % workflow_id).status_code == 200
    assert api.get("/workflow/" + workflow_id).status_code == 404
