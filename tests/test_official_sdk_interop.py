"""Wire compatibility: the OFFICIAL Python SDK's workers against our embedded server.

The peer (``conductor-python``, see ``benchmarks/peer.py``) runs in its own
virtualenv under ``.bench/peer-venv``, built once and reused. Workflows are
defined and started over plain REST with ``requests``, so the only client
under test is the official SDK's worker.

The ``local_conductor_url`` fixture fails (it does not skip) when
``conductor_workers.testing.LocalConductor`` cannot be imported: this test is
meant to pass wherever the embedded server exists.

If the peer virtualenv cannot be built (no route to PyPI), the tests skip on a
person's machine and fail with ``CI=true``.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.peer import PeerInstallError, ensure_peer_venv, start_peer_workers, stop  # noqa: E402

pytestmark = [pytest.mark.official_sdk, pytest.mark.slow]

# Every wait below has its own deadline, well inside pytest-timeout's 300 s
# (which also covers the session fixture's first venv build).
PIP_TIMEOUT_S = 180.0
WORKFLOW_TIMEOUT_S = 60.0
HTTP_TIMEOUT_S = 10.0


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def peer_python() -> Path:
    """Python of the virtualenv with the official SDK (slow the first time only)."""
    try:
        return ensure_peer_venv(pip_timeout=PIP_TIMEOUT_S)
    except PeerInstallError as exc:
        message = f"cannot install the official SDK into its venv: {exc}"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def local_conductor_url() -> Iterator[str]:
    """URL of our embedded server; an import error here is a failure, not a skip."""
    from conductor_workers.testing import LocalConductor  # fails loudly until the server lands

    with LocalConductor() as server:
        yield server.url


def _api(base_url: str) -> str:
    url = base_url.rstrip("/")
    return url if url.endswith("/api") else url + "/api"


def _check(resp: requests.Response) -> requests.Response:
    if resp.status_code >= 400:
        raise AssertionError(f"{resp.request.method} {resp.url} -> {resp.status_code}: {resp.text[:500]}")
    return resp


def _wait_for_workflow(
    session: requests.Session, api: str, workflow_id: str, timeout: float
) -> Dict[str, Any]:
    deadline = time.monotonic() + timeout
    workflow: Dict[str, Any] = {}
    while time.monotonic() < deadline:
        workflow = _check(session.get(f"{api}/workflow/{workflow_id}", timeout=HTTP_TIMEOUT_S)).json()
        if workflow.get("status") != "RUNNING":
            return workflow
        time.sleep(0.2)
    return workflow


def _read_records(path: Path) -> Dict[str, float]:
    """``{taskId: time.time() at execute entry}`` from the peer's record file."""
    records: Dict[str, float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            stamp, task_id = line.split()
            records[task_id] = float(stamp)
    return records


def test_official_sdk_workers_complete_a_workflow(
    peer_python: Path, local_conductor_url: str, tmp_path: Path
) -> None:
    api = _api(local_conductor_url)
    suffix = uuid.uuid4().hex[:10]
    first_type, second_type = f"peer_first_{suffix}", f"peer_second_{suffix}"
    workflow_name = f"peer_interop_{suffix}"
    owner = {"ownerEmail": "interop@example.com"}

    session = requests.Session()
    session.trust_env = False  # loopback only; never through a proxy

    task_defs: List[Dict[str, Any]] = [
        {
            "name": name,
            "retryCount": 0,
            "timeoutSeconds": 120,
            "responseTimeoutSeconds": 60,
            "timeoutPolicy": "TIME_OUT_WF",
            **owner,
        }
        for name in (first_type, second_type)
    ]
    _check(session.post(f"{api}/metadata/taskdefs", json=task_defs, timeout=HTTP_TIMEOUT_S))
    _check(
        session.post(
            f"{api}/metadata/workflow",
            json={
                "name": workflow_name,
                "version": 1,
                "schemaVersion": 2,
                "inputParameters": ["greeting", "n"],
                "tasks": [
                    {
                        "name": first_type,
                        "taskReferenceName": "first",
                        "type": "SIMPLE",
                        "inputParameters": {
                            "greeting": "${workflow.input.greeting}",
                            "n": "${workflow.input.n}",
                        },
                    },
                    {
                        "name": second_type,
                        "taskReferenceName": "second",
                        "type": "SIMPLE",
                        "inputParameters": {"previous": "${first.output.seen}"},
                    },
                ],
                "outputParameters": {"result": "${second.output.seen}"},
                "timeoutSeconds": 0,
                **owner,
            },
            timeout=HTTP_TIMEOUT_S,
        )
    )

    record_file = tmp_path / "peer-record.txt"
    handle = start_peer_workers(
        peer_python,
        local_conductor_url,
        [first_type, second_type],
        threads=2,
        mode="record",
        record_file=record_file,
        log_path=tmp_path / "peer-worker.log",
    )
    try:
        workflow_input = {"greeting": "hello from the interop test", "n": 42}
        resp = _check(
            session.post(f"{api}/workflow/{workflow_name}", json=workflow_input, timeout=HTTP_TIMEOUT_S)
        )
        workflow_id = resp.text.strip().strip('"')
        assert workflow_id, "starting the workflow returned no id"

        workflow = _wait_for_workflow(session, api, workflow_id, WORKFLOW_TIMEOUT_S)
        details = (
            f"workflow {workflow_id}:\n{json.dumps(workflow, indent=2)[:4000]}\n"
            f"--- peer log ---\n{handle.log_text()[-4000:]}"
        )
        assert handle.process.poll() is None, f"the peer worker exited early\n{details}"
        assert workflow.get("status") == "COMPLETED", details
    finally:
        exit_code = stop(handle)  # raises if any peer process survives
    assert exit_code == 0, f"peer exited {exit_code}\n{handle.log_text()[-4000:]}"

    tasks = {t["referenceTaskName"]: t for t in workflow["tasks"]}
    assert set(tasks) == {"first", "second"}
    assert tasks["first"]["taskType"] == first_type
    assert tasks["second"]["taskType"] == second_type
    assert tasks["first"]["status"] == tasks["second"]["status"] == "COMPLETED"

    # The outputs are what the peer's record-mode worker returns: {"seen": <its input>}.
    assert tasks["first"]["outputData"] == {"seen": workflow_input}
    assert tasks["second"]["outputData"] == {"seen": {"previous": workflow_input}}
    assert workflow["output"] == {"result": {"previous": workflow_input}}

    # ...and the peer's own record shows it executed exactly these two tasks.
    records = _read_records(record_file)
    assert set(records) == {tasks["first"]["taskId"], tasks["second"]["taskId"]}
