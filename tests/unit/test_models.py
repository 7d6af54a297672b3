"""Wire models: real server JSON survives from_json -> to_json, unknown fields included."""
from __future__ import annotations

import copy
import json

import pytest

from conductor_workers.errors import ConductorError

from conductor_workers.models import (
    REASON_MAX_CHARS,
    PollData,
    StartWorkflowRequest,
    Task,
    TaskDef,
    TaskExecLog,
    TaskResult,
    TaskResultStatus,
    TaskStatus,
    Workflow,
    WorkflowDef,
    WorkflowStatus,
    WorkflowTask,
)

# -- realistic server payloads (field lists of the contract, §2) -------------------------------

TASK_DEF_JSON = {
    "createTime": 1717000000000,
    "updateTime": 1717000000500,
    "createdBy": "",
    "updatedBy": "",
    "name": "greet",
    "description": "says hello",
    "retryCount": 2,
    "timeoutSeconds": 120,
    "inputKeys": ["name"],
    "outputKeys": ["greeting"],
    "timeoutPolicy": "TIME_OUT_WF",
    "retryLogic": "EXPONENTIAL_BACKOFF",
    "retryDelaySeconds": 5,
    "responseTimeoutSeconds": 60,
    "concurrentExecLimit": 10,
    "inputTemplate": {"lang": "en"},
    "rateLimitPerFrequency": 0,
    "rateLimitFrequencyInSeconds": 1,
    "ownerEmail": "ops@example.com",
    "pollTimeoutSeconds": 3600,
    "backoffScaleFactor": 1,
    # fields the model does not declare
    "maxRetryDelaySeconds": 0,
    "backoffJitterMs": 0,
    "totalTimeoutSeconds": 0,
    "taskStatusListenerEnabled": True,
    "enforceSchema": False,
    "baseType": None,
}

WORKFLOW_TASK_JSON = {
    "name": "greet",
    "taskReferenceName": "greet_ref",
    "inputParameters": {"name": "${workflow.input.name}"},
    "type": "SIMPLE",
    "startDelay": 0,
    "optional": False,
    "asyncComplete": False,
    "taskDefinition": TASK_DEF_JSON,
    "defaultExclusiveJoinTask": [],
    "permissive": False,
    "rateLimited": False,
}

POLLED_TASK_JSON = {
    "taskType": "greet",
    "status": "IN_PROGRESS",
    "inputData": {"name": "Ada", "nested": {"a": [1, 2, {"b": None}]}},
    "referenceTaskName": "greet_ref",
    "retryCount": 0,
    "seq": 1,
    "correlationId": "corr-1",
    "pollCount": 1,
    "taskDefName": "greet",
    "scheduledTime": 1717000001000,
    "startTime": 1717000001050,
    "endTime": 0,
    "updateTime": 1717000001050,
    "startDelayInSeconds": 0,
    "retried": False,
    "executed": False,
    "callbackFromWorker": True,
    "responseTimeoutSeconds": 60,
    "workflowInstanceId": "5f0c1a2e-0000-4000-8000-000000000001",
    "workflowType": "hello_wf",
    "taskId": "7a1b2c3d-0000-4000-8000-000000000002",
    "callbackAfterSeconds": 0,
    "workerId": "host-1",
    "outputData": {},
    "workflowTask": WORKFLOW_TASK_JSON,
    "rateLimitPerFrequency": 0,
    "rateLimitFrequencyInSeconds": 1,
    "workflowPriority": 0,
    "iteration": 0,
    "subworkflowChanged": False,
    "firstStartTime": 0,
    "executionNameSpace": "ns-a",
    "isolationGroupId": "iso-1",
    "loopOverTask": False,
    "taskDefinition": TASK_DEF_JSON,
    "queueWaitTime": 50,
}

UNKNOWN_TASK_FIELDS = (
    "executionNameSpace",
    "isolationGroupId",
    "loopOverTask",
    "firstStartTime",
    "subworkflowChanged",
    "rateLimitPerFrequency",
    "rateLimitFrequencyInSeconds",
)

WORKFLOW_DEF_JSON = {
    "createTime": 1717000000000,
    "name": "hello_wf",
    "description": "greets, then switches",
    "version": 3,
    "tasks": [
        WORKFLOW_TASK_JSON,
        {
            "name": "route",
            "taskReferenceName": "route_ref",
            "inputParameters": {"kind": "${workflow.input.kind}"},
            "type": "SWITCH",
            "evaluatorType": "value-param",
            "expression": "kind",
            "decisionCases": {
                "a": [{"name": "task_a", "taskReferenceName": "a_ref", "inputParameters": {"k": "${x}"}}],
                "b": [{"name": "task_b", "taskReferenceName": "b_ref", "type": "SIMPLE"}],
            },
            "defaultCase": [{"name": "task_c", "taskReferenceName": "c_ref", "type": "SIMPLE"}],
            "startDelay": 0,
            "optional": False,
        },
        {
            "name": "fork",
            "taskReferenceName": "fork_ref",
            "type": "FORK_JOIN",
            "forkTasks": [[{"name": "x", "taskReferenceName": "x_ref", "type": "SIMPLE"}]],
        },
        {"name": "join", "taskReferenceName": "join_ref", "type": "JOIN", "joinOn": ["x_ref"]},
    ],
    "inputParameters": ["name", "kind"],
    "outputParameters": {"greeting": "${greet_ref.output.greeting}"},
    "failureWorkflow": "on_failure",
    "schemaVersion": 2,
    "restartable": True,
    "workflowStatusListenerEnabled": False,
    "ownerEmail": "ops@example.com",
    "timeoutPolicy": "ALERT_ONLY",
    "timeoutSeconds": 0,
    "variables": {"v": 1},
    "inputTemplate": {},
    "enforceSchema": True,
    "metadata": {},
    "maskedFields": [],
}

WORKFLOW_JSON = {
    "ownerApp": "",
    "createTime": 1717000001000,
    "updateTime": 1717000002000,
    "status": "COMPLETED",
    "endTime": 1717000002000,
    "workflowId": "5f0c1a2e-0000-4000-8000-000000000001",
    "tasks": [
        dict(
            POLLED_TASK_JSON, status="COMPLETED", outputData={"greeting": "Hello Ada"}, endTime=1717000001900
        ),
    ],
    "input": {"name": "Ada", "kind": "a"},
    "output": {"greeting": "Hello Ada"},
    "correlationId": "corr-1",
    "taskToDomain": {},
    "failedReferenceTaskNames": [],
    "failedTaskNames": [],
    "workflowDefinition": WORKFLOW_DEF_JSON,
    "priority": 0,
    "variables": {},
    "lastRetriedTime": 0,
    "history": [],
    "startTime": 1717000001000,
    "workflowName": "hello_wf",
    "workflowVersion": 3,
    "rateLimited": False,
}


def _roundtrip_equal(model_cls, payload):
    """Everything the server sent comes back unchanged from to_json(from_json(payload)).

    to_json may add declared fields the payload lacked (with the server's own defaults), and drops
    ``null`` values of declared fields; nothing else may differ.
    """
    obj = model_cls.from_json(copy.deepcopy(payload))
    out = obj.to_json()
    json.dumps(out)  # plain JSON only
    _assert_contains(out, payload, path=model_cls.__name__)
    # A second trip is stable.
    assert model_cls.from_json(out).to_json() == out
    return obj


def _assert_contains(actual, expected, path):
    if isinstance(expected, dict):
        assert isinstance(actual, dict), path
        for key, value in expected.items():
            if value is None and key not in actual:
                continue  # a null of a declared field: the default was kept and None is omitted
            assert key in actual, f"{path}.{key} was lost"
            _assert_contains(actual[key], value, f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), path
        for index, (a, e) in enumerate(zip(actual, expected)):
            _assert_contains(a, e, f"{path}[{index}]")
    else:
        assert actual == expected and type(actual) is type(expected), f"{path}: {actual!r} != {expected!r}"


# -- Task ----------------------------------------------------------------------------------------


def test_polled_task_roundtrip_keeps_unknown_fields():
    task = _roundtrip_equal(Task, POLLED_TASK_JSON)
    assert task.task_id == POLLED_TASK_JSON["taskId"]
    assert task.status is TaskStatus.IN_PROGRESS
    assert task.input_data["nested"] == {"a": [1, 2, {"b": None}]}
    assert task.workflow_type == "hello_wf"
    assert task.poll_count == 1
    assert task.queue_wait_time == 50
    for key in UNKNOWN_TASK_FIELDS:
        assert key in task.extra, key
        assert task.extra[key] == POLLED_TASK_JSON[key]
    assert task.extra["executionNameSpace"] == "ns-a"
    assert task.extra["firstStartTime"] == 0
    assert isinstance(task.workflow_task, WorkflowTask)
    assert isinstance(task.task_definition, TaskDef)
    assert task.task_definition.retry_logic == "EXPONENTIAL_BACKOFF"
    assert task.task_definition.extra["maxRetryDelaySeconds"] == 0


def test_task_extra_is_not_part_of_equality_or_repr():
    a = Task.from_json(POLLED_TASK_JSON)
    b = Task.from_json({k: v for k, v in POLLED_TASK_JSON.items() if k not in UNKNOWN_TASK_FIELDS})
    assert a == b
    assert "executionNameSpace" not in repr(a)


def test_unknown_task_status_is_kept_as_string():
    payload = dict(POLLED_TASK_JSON, status="CANCELLED_BY_USER")
    task = Task.from_json(payload)
    assert task.status == "CANCELLED_BY_USER"
    assert not isinstance(task.status, TaskStatus)
    assert task.to_json()["status"] == "CANCELLED_BY_USER"


def test_unknown_workflow_status_is_kept_as_string_and_not_terminal():
    wf = Workflow.from_json({"workflowId": "w", "status": "ARCHIVED_SOMEHOW"})
    assert wf.status == "ARCHIVED_SOMEHOW"
    assert wf.is_terminal is False
    assert wf.to_json()["status"] == "ARCHIVED_SOMEHOW"


def test_null_values_keep_defaults():
    task = Task.from_json(
        {
            "taskId": "t",
            "inputData": None,
            "outputData": None,
            "retryCount": None,
            "callbackFromWorker": None,
            "status": None,
            "workflowTask": None,
        }
    )
    assert task.input_data == {}
    assert task.output_data == {}
    assert task.retry_count == 0
    assert task.callback_from_worker is True
    assert task.status is TaskStatus.SCHEDULED
    assert task.workflow_task is None
    assert task.extra == {}
    td = TaskDef.from_json({"name": "x", "retryCount": None, "responseTimeoutSeconds": None})
    assert td.retry_count == 3
    assert td.response_timeout_seconds == 3600


def test_to_json_omits_none_and_uses_wire_names():
    out = Task(task_id="t1", workflow_instance_id="w1").to_json()
    assert out["taskId"] == "t1"
    assert out["workflowInstanceId"] == "w1"
    assert out["status"] == "SCHEDULED"
    assert "correlationId" not in out
    assert "workflowTask" not in out
    assert "task_id" not in out


def test_status_enums_terminal_flags():
    assert not TaskStatus.IN_PROGRESS.is_terminal
    assert not TaskStatus.SCHEDULED.is_terminal
    assert TaskStatus.COMPLETED.is_terminal
    assert TaskStatus.COMPLETED_WITH_ERRORS.is_terminal
    assert not WorkflowStatus.PAUSED.is_terminal
    assert WorkflowStatus.TERMINATED.is_terminal


# -- Workflow --------------------------------------------------------------------------------------


def test_workflow_with_tasks_roundtrip():
    wf = _roundtrip_equal(Workflow, WORKFLOW_JSON)
    assert wf.status is WorkflowStatus.COMPLETED
    assert wf.is_terminal
    assert len(wf.tasks) == 1 and isinstance(wf.tasks[0], Task)
    assert wf.tasks[0].status is TaskStatus.COMPLETED
    assert wf.tasks[0].extra["isolationGroupId"] == "iso-1"
    assert wf.task_by_ref("greet_ref").output_data == {"greeting": "Hello Ada"}
    assert wf.task_by_ref("nope") is None
    assert wf.workflow_name == "hello_wf" and wf.workflow_version == 3
    assert isinstance(wf.workflow_definition, WorkflowDef)
    assert wf.extra["lastRetriedTime"] == 0
    assert wf.extra["history"] == []


def test_task_by_ref_returns_latest_attempt():
    wf = Workflow.from_json(
        {
            "workflowId": "w",
            "status": "RUNNING",
            "tasks": [
                {"taskId": "1", "referenceTaskName": "r", "status": "FAILED", "seq": 1},
                {"taskId": "2", "referenceTaskName": "r", "status": "SCHEDULED", "seq": 2},
            ],
        }
    )
    assert wf.task_by_ref("r").task_id == "2"
    assert not wf.is_terminal


# -- definitions -----------------------------------------------------------------------------------


def test_task_def_roundtrip():
    td = _roundtrip_equal(TaskDef, TASK_DEF_JSON)
    assert td.name == "greet"
    assert td.concurrent_exec_limit == 10
    assert td.extra["taskStatusListenerEnabled"] is True
    assert td.extra["baseType"] is None  # unknown fields are passed through as they came


def test_task_def_defaults_match_server():
    out = TaskDef(name="t").to_json()
    assert out == {
        "name": "t",
        "retryCount": 3,
        "timeoutSeconds": 0,
        "timeoutPolicy": "TIME_OUT_WF",
        "retryLogic": "FIXED",
        "retryDelaySeconds": 60,
        "responseTimeoutSeconds": 3600,
    }


def test_workflow_def_keeps_control_flow_fields_and_inline_task_def():
    wd = _roundtrip_equal(WorkflowDef, WORKFLOW_DEF_JSON)
    assert wd.version == 3
    first, switch, fork, join = wd.tasks
    assert isinstance(first.task_definition, TaskDef)
    assert first.task_definition.response_timeout_seconds == 60
    assert first.extra["permissive"] is False
    assert switch.type == "SWITCH"
    assert switch.extra["decisionCases"]["a"][0]["taskReferenceName"] == "a_ref"
    assert switch.extra["defaultCase"][0]["name"] == "task_c"
    assert switch.extra["evaluatorType"] == "value-param"
    assert fork.extra["forkTasks"] == [[{"name": "x", "taskReferenceName": "x_ref", "type": "SIMPLE"}]]
    assert join.extra["joinOn"] == ["x_ref"]
    assert wd.extra["enforceSchema"] is True
    out = wd.to_json()
    assert out["tasks"][1]["decisionCases"] == WORKFLOW_DEF_JSON["tasks"][1]["decisionCases"]
    assert out["tasks"][0]["taskDefinition"]["maxRetryDelaySeconds"] == 0
    assert out["tasks"][3]["joinOn"] == ["x_ref"]


def test_workflow_def_built_in_code_serialises_nested_models():
    wd = WorkflowDef(
        name="wf",
        tasks=[
            WorkflowTask(
                name="t", task_reference_name="t_ref", task_definition=TaskDef(name="t", retry_count=0)
            )
        ],
    )
    out = wd.to_json()
    assert out["tasks"][0]["taskDefinition"]["retryCount"] == 0
    assert out["tasks"][0]["taskReferenceName"] == "t_ref"
    assert out["schemaVersion"] == 2
    assert WorkflowDef.from_json(out) == wd


# -- requests and small models ---------------------------------------------------------------------


def test_start_workflow_request_roundtrip():
    payload = {
        "name": "hello_wf",
        "version": 3,
        "correlationId": "corr-9",
        "input": {"name": "Ada"},
        "taskToDomain": {"greet": "blue"},
        "priority": 5,
        "idempotencyKey": "k-1",
        "idempotencyStrategy": "RETURN_EXISTING",
        "externalInputPayloadStoragePath": "s3://bucket/x",
        "workflowDef": {"name": "hello_wf", "version": 3, "tasks": [WORKFLOW_TASK_JSON]},
    }
    req = _roundtrip_equal(StartWorkflowRequest, payload)
    assert req.task_to_domain == {"greet": "blue"}
    assert isinstance(req.workflow_def, WorkflowDef)
    assert req.extra == {"externalInputPayloadStoragePath": "s3://bucket/x"}
    minimal = StartWorkflowRequest(name="x").to_json()
    assert minimal == {"name": "x", "input": {}, "taskToDomain": {}, "priority": 0}


def test_task_exec_log_and_poll_data_roundtrip():
    log = _roundtrip_equal(TaskExecLog, {"log": "hello", "taskId": "t1", "createdTime": 1717000000123})
    assert log.created_time == 1717000000123
    pd = _roundtrip_equal(
        PollData,
        {"queueName": "greet", "domain": "blue", "workerId": "host-1", "lastPollTime": 1717000000999},
    )
    assert pd.queue_name == "greet" and pd.last_poll_time == 1717000000999
    pd2 = PollData.from_json({"queueName": "q", "lastPollTime": 1, "somethingNew": {"x": 1}})
    assert pd2.to_json()["somethingNew"] == {"x": 1}


# -- TaskResult ------------------------------------------------------------------------------------

TASK_RESULT_JSON = {
    "workflowInstanceId": "w1",
    "taskId": "t1",
    "reasonForIncompletion": "boom",
    "callbackAfterSeconds": 10,
    "workerId": "host-1",
    "status": "FAILED",
    "outputData": {"x": 1},
    "logs": [{"log": "line", "taskId": "t1", "createdTime": 5}],
    "extendLease": False,
    "subWorkflowId": "sw",
    "executionMetadata": {"serverSendTime": 1, "clientReceiveTime": 2},
    "externalOutputPayloadStoragePath": "s3://x",
}


def test_task_result_roundtrip():
    tr = _roundtrip_equal(TaskResult, TASK_RESULT_JSON)
    assert tr.status is TaskResultStatus.FAILED
    assert tr.logs == [TaskExecLog(log="line", task_id="t1", created_time=5)]
    assert tr.extra["executionMetadata"] == {"serverSendTime": 1, "clientReceiveTime": 2}


def test_task_result_unknown_status_is_an_error():
    # A TaskResult is what WE send: a bad status is a programming error, not a newer server.
    with pytest.raises(ValueError, match="COMPLETED"):
        TaskResult(status="DONE")


def test_reason_for_incompletion_is_cut_to_500_chars():
    long = "x" * 1000
    tr = TaskResult.failed(long)
    assert len(tr.reason_for_incompletion) == REASON_MAX_CHARS == 500
    assert TaskResult.from_json({"reasonForIncompletion": "y" * 501}).reason_for_incompletion == "y" * 500
    assert TaskResult.failed("short").reason_for_incompletion == "short"
    assert TaskResult.failed("z" * 500).reason_for_incompletion == "z" * 500


def test_task_result_helpers():
    done = TaskResult.complete({"a": 1}, task_id="t", workflow_instance_id="w")
    assert (done.status, done.output_data, done.task_id, done.workflow_instance_id) == (
        TaskResultStatus.COMPLETED,
        {"a": 1},
        "t",
        "w",
    )
    assert TaskResult.complete().output_data == {}

    failed = TaskResult.failed("bad", {"why": "x"})
    assert failed.status is TaskResultStatus.FAILED
    assert failed.reason_for_incompletion == "bad" and failed.output_data == {"why": "x"}
    terminal = TaskResult.failed("fatal", terminal=True)
    assert terminal.status is TaskResultStatus.FAILED_WITH_TERMINAL_ERROR

    waiting = TaskResult.in_progress(30, {"progress": 0.5})
    assert waiting.status is TaskResultStatus.IN_PROGRESS
    assert waiting.callback_after_seconds == 30 and isinstance(waiting.callback_after_seconds, int)
    assert waiting.to_json()["callbackAfterSeconds"] == 30
    assert TaskResult.in_progress(2.9).callback_after_seconds == 2

    task = Task.from_json(POLLED_TASK_JSON)
    addressed = TaskResult.for_task(task, status="COMPLETED", output_data={"k": "v"})
    assert addressed.task_id == task.task_id
    assert addressed.workflow_instance_id == task.workflow_instance_id
    assert addressed.status is TaskResultStatus.COMPLETED
    assert addressed.to_json() == {
        "workflowInstanceId": task.workflow_instance_id,
        "taskId": task.task_id,
        "status": "COMPLETED",
        "outputData": {"k": "v"},
        "callbackAfterSeconds": 0,
        "logs": [],
        "extendLease": False,
    }


def test_task_result_status_coerce():
    assert TaskResultStatus.coerce(TaskResultStatus.FAILED) is TaskResultStatus.FAILED
    assert TaskResultStatus.coerce("COMPLETED") is TaskResultStatus.COMPLETED
    terminal = TaskResultStatus.FAILED_WITH_TERMINAL_ERROR
    assert TaskResultStatus.coerce("FAILED_WITH_TERMINAL_ERROR") is terminal
    with pytest.raises(ValueError) as info:
        TaskResultStatus.coerce("DONE")
    assert isinstance(info.value, ConductorError)  # one exception root, also for a bad status name
    message = str(info.value)
    assert "'DONE'" in message
    for name in ("IN_PROGRESS", "FAILED", "FAILED_WITH_TERMINAL_ERROR", "COMPLETED"):
        assert name in message
    with pytest.raises(ValueError):
        TaskResultStatus.coerce("completed")  # names are upper case, as on the wire
    with pytest.raises(ValueError):
        TaskResultStatus.coerce(None)  # type: ignore[arg-type]


def test_models_are_frozen():
    import attrs

    task = Task.from_json(POLLED_TASK_JSON)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        task.task_id = "other"  # type: ignore[misc]
