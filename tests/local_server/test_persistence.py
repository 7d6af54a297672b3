"""A file-backed LocalConductor keeps every workflow going across a restart."""

from __future__ import annotations

import time

from lc_support import Api, simple

from conductor_workers.testing import LocalConductor


def test_restart_on_same_file_completes_every_workflow(tmp_path):
    db = str(tmp_path / "conductor.db")
    with LocalConductor(db_path=db, sweep_interval=0.2) as server:
        api = Api(server.url)
        api.task_def("a", responseTimeoutSeconds=1, retryCount=2, retryDelaySeconds=0)
        api.task_def("b", retryCount=1, retryDelaySeconds=2)
        api.workflow_def("wf", [simple("a"), simple("b")], outputParameters={"b": "${b.output.v}"})
        ids = [api.start("wf", {"n": n}) for n in range(4)]
        in_progress = api.poll("a")  # abandoned: only the response timeout brings it back
        to_fail = api.poll("a")
        api.complete(to_fail)
        api.complete(api.poll("b"), status="FAILED")  # a retry due in 2 s
        port = server.port
    # a new server on the same file (and port)
    with LocalConductor(db_path=db, port=port, sweep_interval=0.2) as server:
        api = Api(server.url)
        assert api.get("/metadata/taskdefs/b").json()["retryDelaySeconds"] == 2
        assert api.workflow(in_progress["workflowInstanceId"])["tasks"][0]["status"] == "IN_PROGRESS"
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            statuses = {api.workflow(workflow_id)["status"] for workflow_id in ids}
            if statuses == {"COMPLETED"}:
                break
            for task_type in ("a", "b"):
                task = api.poll(task_type, timeout_ms=100)
                if task:
                    api.complete(task, outputData={"v": task["workflowInstanceId"]})
        for workflow_id in ids:
            workflow = api.workflow(workflow_id)
            assert workflow["status"] == "COMPLETED", workflow
            assert workflow["output"] == {"b": workflow_id}
        timed_out = api.get("/tasks/" + in_progress["taskId"]).json()
        assert timed_out["status"] == "TIMED_OUT" and timed_out["retried"] is True
