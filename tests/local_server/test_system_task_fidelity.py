"""System tasks where LocalConductor must do what conductor-oss 3.32.1 does: a workflow that starts
itself as a SUB_WORKFLOW, an INLINE output above the payload maximum, and the YIELD task type."""

from __future__ import annotations

from typing import Any, Dict, List

from lc_support import Api, unique
from support.waiting import wait_until

from conductor_workers.testing import LocalConductor, PayloadLimits


def sub_workflow(name: str, ref: str = "child") -> Dict[str, Any]:
    return {"name": name, "taskReferenceName": ref, "type": "SUB_WORKFLOW", "subWorkflowParam": {"name": name}}


def running(api: Api, name: str) -> List[str]:
    answer = api.get("/workflow/running/" + name, params={"version": 1})
    assert answer.status_code == 200, answer.text
    return answer.json()


# -- a workflow that starts itself -------------------------------------------------------------------


def test_a_workflow_that_starts_itself_is_accepted_and_can_be_terminated(api):
    name = unique("itself")
    api.workflow_def(name, [sub_workflow(name)])
    root = api.start(name)  # conductor-oss: 200; the recursion happens as the children run
    assert api.workflow(root)["status"] == "RUNNING"
    # the children keep coming as the server runs them, each its own execution
    wait_until(lambda: len(running(api, name)) > 60, timeout=20, message="the recursion to go deeper")
    answer = api.delete("/workflow/" + root)
    assert answer.status_code == 200, answer.text
    wait_until(lambda: not running(api, name), timeout=20, message="every descendant to be terminated")
    assert api.get("/health").status_code == 200


def test_a_deep_chain_of_sub_workflows_completes():
    depth = 400
    with LocalConductor(sweep_interval=0.05) as server:
        api = Api(server.url)
        prefix = unique("chain")
        api.workflow_def("%s_%d" % (prefix, depth), [{"name": "noop", "taskReferenceName": "noop", "type": "NOOP"}])
        for level in range(depth - 1, -1, -1):
            api.workflow_def("%s_%d" % (prefix, level), [sub_workflow("%s_%d" % (prefix, level + 1))])
        root = api.start(prefix + "_0")
        api.wait_status(root, "COMPLETED", timeout=30)
        api.session.close()


# -- an INLINE output above the maximum ------------------------------------------------------------------


def test_an_inline_output_above_the_maximum_fails_the_task():
    limits = PayloadLimits(task_threshold_kb=16, task_max_kb=32)
    with LocalConductor(sweep_interval=0.2, payload_limits=limits) as server:
        api = Api(server.url)
        name = unique("inline_big")
        api.workflow_def(name, [{"name": "make", "taskReferenceName": "make", "type": "INLINE",
                                 "inputParameters": {"evaluatorType": "value-param", "expression": "value",
                                                     "value": "${workflow.input.value}"}}])
        workflow_id = api.start(name, {"value": "x" * 40_000})
        wait_until(lambda: api.workflow(workflow_id)["status"] != "RUNNING", timeout=10, message="the end")
        workflow = api.workflow(workflow_id)
        api.session.close()
    task = workflow["tasks"][0]
    assert (workflow["status"], task["status"]) == ("FAILED", "FAILED_WITH_TERMINAL_ERROR")
    assert task["outputData"] == {}
    assert task["reasonForIncompletion"].startswith("The payload size: ")
    assert task["reasonForIncompletion"].endswith("is greater than the permissible limit: 32768 bytes")


# -- YIELD -----------------------------------------------------------------------------------------


def test_yield_is_a_task_for_the_yield_queue_as_on_conductor_oss(api):
    # conductor-oss 3.32.1 has no YIELD system task: its decider maps an unknown type as a user task
    # (UserDefinedTaskMapper), queued under the type, done by whoever updates it
    name = unique("yielding")
    api.workflow_def(name, [{"name": "pause_here", "taskReferenceName": "pause", "type": "YIELD"},
                            {"name": "after", "taskReferenceName": "after", "type": "NOOP"}])
    workflow_id = api.start(name)
    task = api.workflow(workflow_id)["tasks"][0]
    assert (task["taskType"], task["taskDefName"], task["status"]) == ("YIELD", "pause_here", "SCHEDULED")
    polled = api.poll("YIELD")
    assert polled is not None and polled["taskId"] == task["taskId"]
    api.complete(polled, outputData={"ok": True})
    done = api.wait_status(workflow_id, "COMPLETED")
    assert [t["taskType"] for t in done["tasks"]] == ["YIELD", "NOOP"]
