"""Large payloads, on LocalConductor and on conductor-oss with the PostgreSQL payload storage.

Not on the SQLite real server of the rest of the suite: its default ("dummy") storage gives clients
no URI, so nothing could be compared there (tests/workers/test_large_payloads.py covers what a
worker does then). Both servers here use conductor-oss's default thresholds: 3072 KB for a task's
input and output, a 10240 KB maximum.
"""
from __future__ import annotations

import json
import urllib.request
from typing import Any, Dict, Iterator

import pytest
from _helpers import complete, poll_one, register_simple_workflow

from conductor_workers import APIError, ConductorClient, Configuration, TaskStatus, WorkflowExecutor
from conductor_workers.testing import LocalConductor

KB = 1024
BIG = 3200 * KB  # above the 3072 KB threshold
OVER_MAX = 10240 * KB + 100  # above the 10240 KB maximum


@pytest.fixture(
    scope="module", params=["local", pytest.param("real-pg", marks=pytest.mark.real_server)], ids=["local", "real-pg"]
)
def payload_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "local":
        with LocalConductor(sweep_interval=0.1) as server:
            yield server.url
    else:
        yield request.getfixturevalue("real_server_pg_url")


@pytest.fixture
def pclient(payload_url: str) -> Iterator[ConductorClient]:
    with ConductorClient(Configuration(server_url=payload_url, read_timeout=60)) as client:
        yield client


def _start(client: ConductorClient, workflow: str) -> str:
    return WorkflowExecutor(client).start_workflow(workflow, {"x": 1}, version=1)


def _download(client: ConductorClient, path: str, payload_type: str) -> Dict[str, Any]:
    location = client.payloads.location("READ", payload_type, path)
    assert location["path"] == path and location["uri"].startswith("http")
    with urllib.request.urlopen(location["uri"], timeout=60) as answer:
        return json.loads(answer.read())


def test_an_output_above_the_threshold_is_kept_in_storage_and_feeds_the_next_task(pclient: ConductorClient) -> None:
    flow = register_simple_workflow(
        pclient, ("a", "b"), input_parameters={"b": {"blob": "${a.output.blob}"}}
    )
    _start(pclient, flow.workflow)
    first = poll_one(pclient, flow.task_type("a"))
    complete(pclient, first, {"blob": "y" * BIG})
    stored = pclient.tasks.get_task(first.task_id)
    assert stored.output_data == {} and stored.external_output_payload_storage_path
    assert _download(pclient, stored.external_output_payload_storage_path, "TASK_OUTPUT") == {"blob": "y" * BIG}
    second = poll_one(pclient, flow.task_type("b"))
    assert second.input_data == {} and second.external_input_payload_storage_path
    assert _download(pclient, second.external_input_payload_storage_path, "TASK_INPUT") == {"blob": "y" * BIG}
    assert pclient.tasks.get_task(second.task_id, include_external=True).input_data == {"blob": "y" * BIG}


def test_an_output_above_the_maximum_fails_the_task(pclient: ConductorClient) -> None:
    flow = register_simple_workflow(pclient, ("a",))
    _start(pclient, flow.workflow)
    task = poll_one(pclient, flow.task_type("a"))
    complete(pclient, task, {"blob": "z" * OVER_MAX})
    stored = pclient.tasks.get_task(task.task_id)
    assert stored.status is TaskStatus.FAILED_WITH_TERMINAL_ERROR
    assert "is greater than the permissible limit: 10485760 bytes" in (stored.reason_for_incompletion or "")
    assert stored.output_data == {}


def test_a_small_output_stays_inline(pclient: ConductorClient) -> None:
    flow = register_simple_workflow(pclient, ("a",))
    _start(pclient, flow.workflow)
    task = poll_one(pclient, flow.task_type("a"))
    complete(pclient, task, {"small": 1})
    stored = pclient.tasks.get_task(task.task_id)
    assert stored.output_data == {"small": 1} and stored.external_output_payload_storage_path is None


@pytest.mark.parametrize("operation, payload_type", [("SHRED", "TASK_INPUT"), ("READ", "TASK_BLOB")])
def test_a_bad_storage_location_request_is_a_400(pclient: ConductorClient, operation: str, payload_type: str) -> None:
    with pytest.raises(APIError) as info:
        pclient.payloads.location(operation, payload_type, "")
    assert info.value.status_code == 400
