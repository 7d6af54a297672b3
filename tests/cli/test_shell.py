"""The shell commands (``task``, ``workflow``) and the ``server`` options, run as subprocesses.

``python -m conductor_workers ...`` runs against a LocalConductor started in the test (in this process,
or as a ``server`` subprocess for its own flags); one test also runs against the real server.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conductor_workers import ConductorClient, Configuration, _shell
from conductor_workers._version import __version__
from conductor_workers.errors import AuthenticationError
from conductor_workers.models import TaskDef, WorkflowDef, WorkflowTask
from conductor_workers.testing import LocalConductor

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 60
_OUR_ENV = ("CONDUCTOR_SERVER_URL", "CONDUCTOR_AUTH_KEY", "CONDUCTOR_AUTH_SECRET", "LOCAL_CONDUCTOR_AUTH",
            "LOCAL_CONDUCTOR_AUTH_FILE")


def _env(**extra: str) -> Dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _OUR_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def cli(*args: str, env: Optional[Dict[str, str]] = None, stdin: Optional[str] = None,
        timeout: float = TIMEOUT) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([sys.executable, "-m", "conductor_workers", *args], capture_output=True, text=True,
                          env=env if env is not None else _env(), cwd=str(REPO), input=stdin, timeout=timeout)


def ok(result: "subprocess.CompletedProcess[str]") -> Any:
    """The JSON a command printed; it must have exited 0 with nothing on stderr."""
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    assert result.stderr == ""
    return json.loads(result.stdout)


def refused(result: "subprocess.CompletedProcess[str]", code: int, *words: str) -> str:
    """The one stderr line of a command that exited ``code``; it must contain ``words``."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # argparse's usage errors too
    for word in words:
        assert word.lower() in lines[-1].lower(), result.stderr
    return lines[-1]


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def register(client: ConductorClient, *, task_name: str, workflow_name: str) -> None:
    """A task definition (no retries) and a one-task workflow whose output is the task's ``result``."""
    client.metadata.register_task_defs(
        [TaskDef(name=task_name, retry_count=0, response_timeout_seconds=60, owner_email="cli@example.com")]
    )
    client.metadata.register_workflow_def(
        WorkflowDef(
            name=workflow_name,
            owner_email="cli@example.com",
            tasks=[WorkflowTask(name=task_name, task_reference_name="step",
                                input_parameters={"x": "${workflow.input.x}"})],
            output_parameters={"result": "${step.output.result}"},
        ),
        overwrite=True,
    )


TASK, FLOW = "cli_task", "cli_flow"


@pytest.fixture(scope="module")
def server() -> Iterator[LocalConductor]:
    with LocalConductor(sweep_interval=0.2) as conductor:
        with ConductorClient(Configuration(server_url=conductor.url)) as client:
            register(client, task_name=TASK, workflow_name=FLOW)
            client.metadata.register_workflow_def(WorkflowDef(
                name="cli_fails", owner_email="cli@example.com",
                tasks=[WorkflowTask(name="stop", task_reference_name="stop", type="TERMINATE",
                                    input_parameters={"terminationStatus": "FAILED",
                                                      "terminationReason": "on purpose"})]))
            client.metadata.register_workflow_def(WorkflowDef(
                name="cli_noop", owner_email="cli@example.com",
                tasks=[WorkflowTask(name="noop", task_reference_name="noop", type="NOOP")],
                output_parameters={"done": True}))
        yield conductor


@pytest.fixture
def url(server: LocalConductor) -> str:
    return server.url


def start(url: str, *extra: str, name: str = FLOW) -> str:
    return str(ok(cli("workflow", "start", name, "--server-url", url, *extra))["workflowId"])


def only_task(url: str, workflow_id: str) -> Dict[str, Any]:
    workflow = ok(cli("workflow", "get", workflow_id, "--tasks", "--server-url", url))
    assert len(workflow["tasks"]) == 1, workflow
    return dict(workflow["tasks"][0])


# -- top level -------------------------------------------------------------------------------------


def test_version() -> None:
    result = cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"conductor-workers {__version__}"


@pytest.mark.parametrize("args", [
    [],  # no command
    ["task"],  # no action
    ["workflow", "start"],  # no name
    ["task", "get"],  # no id
    ["task", "update", "some-id"],  # no --status
    ["task", "update", "some-id", "--status", "DONE"],  # not a status
    ["task", "update-by-ref", "wf-id", "--status", "COMPLETED"],  # no ref name
    ["workflow", "start", "x", "--version", "one"],
    ["workflow", "start", "x", "--wait", "soon"],
    ["workflow", "get"],
    ["workflow", "terminate"],
    ["workflow", "pause", "wf-id"],  # no such action
])
def test_missing_or_bad_arguments_exit_2(args: List[str]) -> None:
    result = cli(*args)
    line = refused(result, 2, "error:", "see --help")
    assert result.stdout == "" and line.startswith("conductor-workers")


# -- task and workflow commands ---------------------------------------------------------------------


def test_start_get_and_complete_by_task_id(url: str, tmp_path: Path) -> None:
    workflow_id = start(url, "--input", '{"x": 41}', "--correlation-id", "cli-1")
    workflow = ok(cli("workflow", "get", workflow_id, "--server-url", url))
    assert workflow["workflowId"] == workflow_id and workflow["status"] == "RUNNING"
    assert workflow["input"] == {"x": 41} and workflow["correlationId"] == "cli-1"
    assert [task["referenceTaskName"] for task in workflow["tasks"]] == ["step"]  # tasks by default

    task = only_task(url, workflow_id)
    fetched = ok(cli("task", "get", task["taskId"], "--server-url", url))
    assert fetched["taskId"] == task["taskId"] and fetched["workflowInstanceId"] == workflow_id
    assert fetched["status"] == "SCHEDULED" and fetched["inputData"] == {"x": 41}

    output = tmp_path / "out.json"
    output.write_text(json.dumps({"result": 42}))
    answer = ok(cli("task", "update", task["taskId"], "--status", "COMPLETED", "--output", f"@{output}",
                    "--server-url", url))
    assert answer == {"taskId": task["taskId"], "workflowId": workflow_id, "status": "COMPLETED"}
    done = ok(cli("workflow", "get", workflow_id, "--server-url", url))
    assert done["status"] == "COMPLETED" and done["output"] == {"result": 42}


def test_server_url_from_the_environment_and_output_from_stdin(url: str) -> None:
    env = _env(CONDUCTOR_SERVER_URL=url[: -len("/api")])  # without /api, as Configuration allows
    workflow_id = str(ok(cli("workflow", "start", FLOW, env=env))["workflowId"])
    task = only_task(url, workflow_id)
    ok(cli("task", "update", task["taskId"], "--status", "COMPLETED", "--output", "@-", env=env,
           stdin='{"result": "from stdin"}'))
    assert ok(cli("workflow", "get", workflow_id, env=env))["output"] == {"result": "from stdin"}


def test_task_update_failed_with_reason_and_workflow_id(url: str) -> None:
    workflow_id = start(url)
    task = only_task(url, workflow_id)
    ok(cli("task", "update", task["taskId"], "--status", "FAILED", "--reason", "disk full",
           "--workflow-id", workflow_id, "--server-url", url))
    failed = ok(cli("task", "get", task["taskId"], "--server-url", url))
    assert failed["status"] == "FAILED" and failed["reasonForIncompletion"] == "disk full"
    workflow = ok(cli("workflow", "get", workflow_id, "--server-url", url))
    assert workflow["status"] == "FAILED"  # retryCount 0


def test_task_update_in_progress_puts_it_back_for_later(url: str) -> None:
    workflow_id = start(url)
    task = only_task(url, workflow_id)
    ok(cli("task", "update", task["taskId"], "--status", "IN_PROGRESS", "--callback-after", "30",
           "--output", '{"progress": 50}', "--server-url", url))
    again = ok(cli("task", "get", task["taskId"], "--server-url", url))
    # back in the queue for later (conductor-oss shows such a task SCHEDULED again)
    assert again["status"] in ("SCHEDULED", "IN_PROGRESS") and again["outputData"] == {"progress": 50}
    assert again["callbackAfterSeconds"] == 30
    ok(cli("workflow", "terminate", workflow_id, "--server-url", url))


def test_update_by_ref(url: str) -> None:
    workflow_id = start(url)
    answer = ok(cli("task", "update-by-ref", workflow_id, "step", "--status", "COMPLETED",
                    "--output", '{"result": "by ref"}', "--server-url", url))
    assert answer["workflowId"] == workflow_id and answer["status"] == "COMPLETED" and answer["taskId"]
    assert ok(cli("workflow", "get", workflow_id, "--server-url", url))["output"] == {"result": "by ref"}
    # nothing pending any more under that name: the server said no
    refused(cli("task", "update-by-ref", workflow_id, "step", "--status", "COMPLETED", "--server-url", url),
            1, "step")


def test_update_by_ref_sync_prints_the_workflow(url: str) -> None:
    workflow_id = start(url)
    workflow = ok(cli("task", "update-by-ref", workflow_id, "step", "--status", "COMPLETED", "--sync",
                      "--output", '{"result": 7}', "--server-url", url))
    assert workflow["workflowId"] == workflow_id and workflow["status"] == "COMPLETED"
    assert workflow["output"] == {"result": 7}


def test_start_wait_completed(url: str) -> None:
    workflow = ok(cli("workflow", "start", "cli_noop", "--wait", "20", "--server-url", url))
    assert workflow["status"] == "COMPLETED" and workflow["output"] == {"done": True}
    assert [task["referenceTaskName"] for task in workflow["tasks"]] == ["noop"]


def test_start_wait_not_completed_exits_1_and_prints_it(url: str) -> None:
    result = cli("workflow", "start", "cli_fails", "--wait", "20", "--server-url", url)
    line = refused(result, 1, "ended FAILED", "on purpose")
    workflow = json.loads(result.stdout)
    assert workflow["status"] == "FAILED" and workflow["workflowId"] in line


def test_start_wait_timeout_exits_1_and_prints_it_as_it_is(url: str) -> None:
    result = cli("workflow", "start", FLOW, "--wait", "0.5", "--server-url", url)
    refused(result, 1, "still RUNNING")
    workflow = json.loads(result.stdout)
    assert workflow["status"] == "RUNNING"
    ok(cli("workflow", "terminate", workflow["workflowId"], "--server-url", url))


def test_start_a_version_and_the_server_says_no(url: str) -> None:
    ok(cli("workflow", "terminate", start(url, "--version", "1"), "--server-url", url))
    refused(cli("workflow", "start", FLOW, "--version", "9", "--server-url", url), 1, "cli_flow")
    refused(cli("workflow", "start", "no_such_flow", "--server-url", url), 1, "no_such_flow")


def test_terminate(url: str) -> None:
    workflow_id = start(url)
    assert ok(cli("workflow", "terminate", workflow_id, "--reason", "enough", "--server-url", url)) == {
        "workflowId": workflow_id, "status": "TERMINATED"}
    workflow = ok(cli("workflow", "get", workflow_id, "--tasks", "--server-url", url))
    assert workflow["status"] == "TERMINATED" and workflow["reasonForIncompletion"] == "enough"
    assert workflow["tasks"][0]["status"] == "CANCELED"


def test_terminate_a_completed_workflow_is_a_conflict(url: str) -> None:
    workflow = ok(cli("workflow", "start", "cli_noop", "--wait", "20", "--server-url", url))
    refused(cli("workflow", "terminate", workflow["workflowId"], "--server-url", url), 1)


@pytest.mark.parametrize("args", [
    ["task", "get", "no-such-task"],
    ["task", "update", "no-such-task", "--status", "COMPLETED"],
    ["workflow", "get", "no-such-workflow"],
    ["workflow", "terminate", "no-such-workflow"],
    ["task", "update-by-ref", "no-such-workflow", "step", "--status", "COMPLETED"],
])
def test_unknown_ids_exit_1(url: str, args: List[str]) -> None:
    result = cli(*args, "--server-url", url)
    refused(result, 1, "no-such")
    assert result.stdout == ""


@pytest.mark.parametrize("value, words", [
    ("{not json", ["--output", "not valid JSON"]),
    ("[1, 2]", ["--output", "JSON object", "list"]),
    ("@/no/such/file.json", ["--output", "cannot read", "/no/such/file.json"]),
])
def test_bad_output_exits_2_before_anything_is_sent(url: str, value: str, words: List[str]) -> None:
    workflow_id = start(url)
    task = only_task(url, workflow_id)
    refused(cli("task", "update", task["taskId"], "--status", "COMPLETED", "--output", value,
                "--server-url", url), 2, *words)
    refused(cli("task", "update-by-ref", workflow_id, "step", "--status", "COMPLETED", "--output", value,
                "--server-url", url), 2, *words)
    assert ok(cli("task", "get", task["taskId"], "--server-url", url))["status"] == "SCHEDULED"
    ok(cli("workflow", "terminate", workflow_id, "--server-url", url))


def test_bad_input_exits_2(url: str) -> None:
    refused(cli("workflow", "start", FLOW, "--input", "{'x': 1}", "--server-url", url), 2, "--input", "JSON")
    refused(cli("workflow", "start", FLOW, "--input", '"text"', "--server-url", url), 2, "--input", "str")


def test_bad_server_url_exits_2() -> None:
    refused(cli("task", "get", "x", "--server-url", "ftp://somewhere"), 2, "server_url")


def test_unreachable_server_exits_1_with_one_line() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens on it
    refused(cli("workflow", "get", "x", "--server-url", f"http://127.0.0.1:{port}/api"), 1, "could not talk")


# -- output cut short, bad inputs, update-by-ref by name, tasks by default -----------------------------


def cli_into_closed_pipe(*args: str, buffered: bool) -> "subprocess.CompletedProcess[str]":
    """Run a command whose stdout is a pipe nobody reads any more (``... | head`` once head is gone)."""
    env = _env()
    if buffered:
        del env["PYTHONUNBUFFERED"]  # what is left in the buffer is flushed again as the interpreter exits
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", "conductor_workers", *args], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=str(REPO), timeout=TIMEOUT)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("args", [["--version"], ["run", "--help"], ["workflow", "start", "--help"],
                                  ["workflow", "get", "{id}"], ["task", "get", "{task}"]])
def test_output_cut_short_ends_quietly_with_141(url: str, args: List[str], buffered: bool) -> None:
    workflow_id = start(url, "--input", json.dumps({"x": "y" * 100_000}))  # more than a pipe holds
    task_id = only_task(url, workflow_id)["taskId"]
    args = [arg.format(id=workflow_id, task=task_id) for arg in args]
    if args[0] in ("workflow", "task") and "--help" not in args:
        args += ["--server-url", url]
    result = cli_into_closed_pipe(*args, buffered=buffered)
    assert (result.returncode, result.stderr) == (141, "")  # 128 + SIGPIPE, as a shell reports `git log | head`
    ok(cli("workflow", "terminate", workflow_id, "--server-url", url))


def _deep(depth: int) -> str:
    return '{"a": ' + "[" * depth + "]" * depth + "}"


@pytest.mark.parametrize("content, words", [
    (b"\xff\xfe{}", ["not UTF-8"]),                       # e.g. saved as UTF-16 or Latin-1
    ('{"caf\u00e9": 1}'.encode("latin-1"), ["not UTF-8"]),
    (b"{not json", ["not valid JSON"]),
    (b"", ["not valid JSON"]),
    (_deep(5000).encode(), ["nested", "deep"]),
    (b'{"x": NaN}', ["not valid JSON", "NaN"]),             # not JSON, and no server could take it
])
def test_bad_output_file_is_one_line_and_exit_2(url: str, tmp_path: Path, content: bytes,
                                                  words: List[str]) -> None:
    workflow_id = start(url)
    task = only_task(url, workflow_id)
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    refused(cli("task", "update", task["taskId"], "--status", "COMPLETED", "--output", f"@{bad}",
                "--server-url", url), 2, "--output", *words)
    from_stdin = subprocess.run(
        [sys.executable, "-m", "conductor_workers", "task", "update-by-ref", workflow_id, "step",
         "--status", "COMPLETED", "--output", "@-", "--server-url", url],
        input=content, capture_output=True, env=_env(), cwd=str(REPO), timeout=TIMEOUT)
    assert from_stdin.returncode == 2, from_stdin
    assert len(from_stdin.stderr.decode().strip().splitlines()) == 1, from_stdin.stderr
    assert all(word.lower() in from_stdin.stderr.decode().lower() for word in words), from_stdin.stderr
    refused(cli("workflow", "start", FLOW, "--input", f"@{bad}", "--server-url", url), 2, "--input", *words)
    assert ok(cli("task", "get", task["taskId"], "--server-url", url))["status"] == "SCHEDULED"
    ok(cli("workflow", "terminate", workflow_id, "--server-url", url))


def test_deep_inline_json_and_a_directory_are_one_line_and_exit_2(url: str, tmp_path: Path) -> None:
    refused(cli("workflow", "start", FLOW, "--input", _deep(5000), "--server-url", url), 2, "--input", "deep")
    refused(cli("workflow", "start", FLOW, "--input", f"@{tmp_path}", "--server-url", url), 2, "--input",
            "cannot read")


@given(depth=st.integers(min_value=1, max_value=3000))
@settings(max_examples=60, deadline=None)
def test_json_objects_are_refused_or_can_be_sent_at_any_depth(depth: int) -> None:
    """Whatever the nesting, a value is refused with UsageError or is one the client can encode."""
    try:
        value = _shell.read_json_object(_deep(depth), "--input")
    except _shell.UsageError as exc:
        assert "deep" in str(exc)
        return

    def encode_from_deeper_in_the_stack(frames: int) -> str:
        return json.dumps(value) if frames == 0 else encode_from_deeper_in_the_stack(frames - 1)

    assert encode_from_deeper_in_the_stack(150)  # the client encodes it under ~100 frames of its own


@pytest.mark.parametrize("wait", ["-1", "nan", "inf", "-inf", "1e300", "1e12"])
def test_bad_wait_is_refused_before_the_workflow_starts(server: LocalConductor, url: str, wait: str) -> None:
    name = _unique("wait_flow")
    with ConductorClient(Configuration(server_url=url)) as client:
        register(client, task_name=TASK, workflow_name=name)
        refused(cli("workflow", "start", name, f"--wait={wait}", "--server-url", url, timeout=20), 2, "--wait")
        assert client.workflows.running(name, version=1) == []


@given(text=st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=8)))
@settings(max_examples=200, deadline=None)
def test_wait_seconds_takes_only_what_a_wait_can_use(text: str) -> None:
    try:
        seconds = _shell.wait_seconds(text)
    except argparse.ArgumentTypeError:
        return
    assert 0 <= seconds <= threading.TIMEOUT_MAX


@pytest.mark.parametrize("args, words", [
    (["--priority", "100"], ["--priority", "0", "99"]),
    (["--priority", "-1"], ["--priority"]),
    (["--version", "0"], ["--version"]),
])
def test_bad_start_numbers_exit_2(url: str, args: List[str], words: List[str]) -> None:
    refused(cli("workflow", "start", FLOW, *args, "--server-url", url), 2, *words)


def test_bad_callback_after_exits_2(url: str) -> None:
    refused(cli("task", "update", "some-id", "--status", "IN_PROGRESS", "--callback-after", "-5",
                "--server-url", url), 2, "--callback-after")


def test_workflow_get_includes_tasks_unless_told_not_to(url: str) -> None:
    workflow_id = start(url)
    plain = ok(cli("workflow", "get", workflow_id, "--server-url", url))
    assert [task["referenceTaskName"] for task in plain["tasks"]] == ["step"]
    assert ok(cli("workflow", "get", workflow_id, "--tasks", "--server-url", url))["tasks"] == plain["tasks"]
    without = ok(cli("workflow", "get", workflow_id, "--no-tasks", "--server-url", url))
    assert "tasks" not in without and without["workflowId"] == workflow_id  # left out, not "no tasks"
    ok(cli("workflow", "terminate", workflow_id, "--server-url", url))


@pytest.mark.parametrize("form", [["--workflow-id", "{wf}", "--ref-name", "step"],
                                  ["--ref", "step", "--workflow-id", "{wf}"],
                                  ["{wf}", "step"]])
def test_update_by_ref_with_named_options(url: str, form: List[str]) -> None:
    workflow_id = start(url)
    args = [arg.format(wf=workflow_id) for arg in form]
    answer = ok(cli("task", "update-by-ref", *args, "--status", "COMPLETED", "--output", '{"result": "named"}',
                    "--server-url", url))
    assert answer["workflowId"] == workflow_id and answer["taskId"]
    assert ok(cli("workflow", "get", workflow_id, "--server-url", url))["output"] == {"result": "named"}


@pytest.mark.parametrize("args", [
    ["wf-id", "--ref-name", "step"],                  # half positional, half named
    ["--workflow-id", "wf-id"],                       # no ref name
    ["--ref", "step"],                                # no workflow id
    ["wf-id", "step", "--workflow-id", "other"],      # both forms
])
def test_update_by_ref_mixed_or_missing_exits_2(url: str, args: List[str]) -> None:
    refused(cli("task", "update-by-ref", *args, "--status", "COMPLETED", "--server-url", url), 2,
            "--workflow-id", "--ref-name")


def test_update_by_ref_in_the_python_order_says_which_order(url: str) -> None:
    workflow_id = start(url)
    # WorkflowExecutor.update_task_by_ref_name(ref, workflow_id, ...) takes them the other way round
    line = refused(cli("task", "update-by-ref", "step", workflow_id, "--status", "COMPLETED", "--server-url", url),
                   1, "WORKFLOW_ID REF_NAME", "--workflow-id")
    assert "step" in line
    ok(cli("workflow", "terminate", workflow_id, "--server-url", url))


# -- the server command -----------------------------------------------------------------------------


def _start_server(*args: str, env: Optional[Dict[str, str]] = None) -> Tuple["subprocess.Popen[str]", str]:
    process = subprocess.Popen([sys.executable, "-m", "conductor_workers", "server", "--port", "0", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env if env is not None else _env(), cwd=str(REPO))
    line = process.stdout.readline() if process.stdout else ""
    if not line.startswith("LocalConductor listening on "):
        _stop(process)
        raise AssertionError(f"server did not start: {line!r}")
    return process, line.split()[-1]


def _stop(process: "subprocess.Popen[str]") -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=15) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    for stream in (process.stdout, process.stderr):
        if stream:
            stream.close()


@pytest.fixture
def spawn() -> Iterator[Any]:
    """``spawn(*server_args)`` starts ``conductor-workers server``; every one is stopped at the end."""
    started: List["subprocess.Popen[str]"] = []

    def start_one(*args: str, env: Optional[Dict[str, str]] = None) -> str:
        process, server_url = _start_server(*args, env=env)
        started.append(process)
        return server_url

    yield start_one
    for process in started:
        _stop(process)


@pytest.mark.parametrize("how", ["file", "file-env", "env"])
def test_server_auth(spawn: Any, how: str, tmp_path: Path) -> None:
    secret_file = tmp_path / "auth"
    secret_file.write_text("cli-key:s3:cret\n")  # the secret may contain ':'; the newline is not part of it
    if how == "file":
        server_url = spawn("--auth-file", str(secret_file))
    elif how == "file-env":
        server_url = spawn(env=_env(LOCAL_CONDUCTOR_AUTH_FILE=str(secret_file)))
    else:
        server_url = spawn(env=_env(LOCAL_CONDUCTOR_AUTH="cli-key:s3:cret"))
    name = _unique("auth_flow")
    authed = Configuration(server_url=server_url, key_id="cli-key", key_secret="s3:cret")
    with ConductorClient(authed) as client:
        register(client, task_name=_unique("auth_task"), workflow_name=name)
    with ConductorClient(Configuration(server_url=server_url)) as anonymous:
        with pytest.raises(AuthenticationError):
            anonymous.metadata.get_task_defs()
    with ConductorClient(attrs.evolve(authed, key_secret="wrong")) as wrong:
        with pytest.raises(AuthenticationError):
            wrong.metadata.get_task_defs()

    env = _env(CONDUCTOR_SERVER_URL=server_url, CONDUCTOR_AUTH_KEY="cli-key", CONDUCTOR_AUTH_SECRET="s3:cret")
    workflow_id = str(ok(cli("workflow", "start", name, env=env))["workflowId"])
    assert ok(cli("workflow", "get", workflow_id, env=env))["status"] == "RUNNING"
    refused(cli("workflow", "get", workflow_id, "--server-url", server_url), 1)  # no credentials


def _self_signed(directory: Path) -> Tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-addext", "basicConstraints=critical,CA:TRUE", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_server_tls(spawn: Any, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_url = spawn("--tls-cert", str(cert), "--tls-key", str(key))
    assert server_url.startswith("https://127.0.0.1:")
    name = _unique("tls_flow")
    with ConductorClient(Configuration(server_url=server_url, verify=str(cert))) as client:
        assert client.health()["healthy"] is True
        register(client, task_name=_unique("tls_task"), workflow_name=name)
    env = _env(REQUESTS_CA_BUNDLE=str(cert))
    workflow_id = str(ok(cli("workflow", "start", name, "--server-url", server_url, env=env))["workflowId"])
    ok(cli("task", "update-by-ref", workflow_id, "step", "--status", "COMPLETED", "--server-url", server_url,
           env=env))
    done = ok(cli("workflow", "get", workflow_id, "--server-url", server_url, env=env))
    assert done["status"] == "COMPLETED"
    # not trusted without the certificate: a transport error, one line
    refused(cli("workflow", "get", workflow_id, "--server-url", server_url), 1, "certificate verify failed")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_server_tls_key_in_the_certificate_file(spawn: Any, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    both = tmp_path / "both.pem"
    both.write_text(cert.read_text() + key.read_text())
    server_url = spawn("--tls-cert", str(both))
    with ConductorClient(Configuration(server_url=server_url, verify=str(cert))) as client:
        assert client.health()["healthy"] is True


def server_fails(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "conductor_workers", "server", *args], capture_output=True,
                            text=True, env=_env(), cwd=str(REPO), timeout=TIMEOUT)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    return refused(result, 1)


def test_server_port_in_use_exits_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        line = server_fails("--port", str(port))
    assert line == f"conductor-workers: error: cannot listen on 127.0.0.1:{port}: address already in use"


@pytest.mark.parametrize("port", ["65536", "-1"])
def test_server_bad_port_exits_1(port: str) -> None:
    assert "bad port" in server_fails("--port", port)


def test_server_unknown_host_exits_1() -> None:
    line = server_fails("--port", "0", "--host", "no-such-host.invalid")
    assert "cannot listen on no-such-host.invalid:0" in line


@pytest.mark.parametrize("where", ["missing-dir", "a-directory"])
def test_server_unwritable_db_exits_1(tmp_path: Path, where: str) -> None:
    path = tmp_path / "no" / "such" / "dir" / "c.db" if where == "missing-dir" else tmp_path
    line = server_fails("--port", "0", "--db", str(path))
    assert f"cannot open the database {path}" in line


def test_server_bad_tls_files_exit_1(tmp_path: Path) -> None:
    assert "cannot load the TLS certificate" in server_fails("--tls-cert", str(tmp_path / "missing.pem"))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    assert "cannot load the TLS certificate" in server_fails("--tls-cert", str(garbage))


def server_usage_error(*args: str, env: Optional[Dict[str, str]] = None) -> str:
    result = subprocess.run([sys.executable, "-m", "conductor_workers", "server", "--port", "0", *args],
                            capture_output=True, text=True, env=env or _env(), cwd=str(REPO), timeout=TIMEOUT)
    assert result.stdout == ""
    return refused(result, 2)


@pytest.mark.parametrize("args", [["--tls-key", "k.pem"], ["--port", "eighty"]])
def test_server_bad_flags_exit_2(args: Sequence[str]) -> None:
    server_usage_error(*args)


@pytest.mark.parametrize("value", ["cli-key:s3cr3t-value", "no-colon"])
def test_server_auth_secret_on_the_command_line_is_refused(value: str) -> None:
    """``ps`` shows every process's arguments to every user: the secret goes in a file or the environment."""
    line = server_usage_error("--auth", value)
    assert "--auth-file" in line and "LOCAL_CONDUCTOR_AUTH" in line
    assert "s3cr3t" not in line


@pytest.mark.parametrize("content", [b"no-colon-s3cr3t\n", b":s3cr3t\n", b"key:\n", b"", b"\xffkey:s3cr3t\n",
                                     b"key:s3cr3t\nkey:two\n"])
def test_server_bad_auth_file_exits_2(tmp_path: Path, content: bytes) -> None:
    auth = tmp_path / "auth"
    auth.write_bytes(content)
    for line in (server_usage_error("--auth-file", str(auth)),
                 server_usage_error(env=_env(LOCAL_CONDUCTOR_AUTH_FILE=str(auth)))):
        assert str(auth) in line and "KEY_ID:SECRET" in line
        assert "s3cr3t" not in line  # never echoed


def test_server_bad_auth_variable_exits_2() -> None:
    line = server_usage_error(env=_env(LOCAL_CONDUCTOR_AUTH="no-colon-s3cr3t"))
    assert "$LOCAL_CONDUCTOR_AUTH" in line and "KEY_ID:SECRET" in line and "s3cr3t" not in line


def test_server_missing_auth_file_exits_2(tmp_path: Path) -> None:
    line = server_usage_error("--auth-file", str(tmp_path / "missing"))
    assert "cannot read" in line and str(tmp_path / "missing") in line
    server_usage_error("--auth-file", str(tmp_path))  # a directory


# -- against the real server -------------------------------------------------------------------------


def _complete_by_ref_while_waiting(server_url: str, workflow_name: str) -> None:
    """``workflow start --wait`` blocks while this test polls the task and completes it with
    ``task update-by-ref``; the waiting command then prints the COMPLETED workflow and exits 0."""
    correlation = _unique("corr")
    waiting = subprocess.Popen(
        [sys.executable, "-m", "conductor_workers", "workflow", "start", workflow_name, "--input", '{"x": 1}',
         "--correlation-id", correlation, "--wait", "60", "--server-url", server_url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=str(REPO))
    try:
        with ConductorClient(Configuration(server_url=server_url)) as client:
            deadline = time.monotonic() + 30
            found = []
            while not found and time.monotonic() < deadline:
                found = client.workflows.get_by_correlation_id(workflow_name, correlation, include_tasks=True)
                if not found:
                    time.sleep(0.1)
            assert found, "the waiting command did not start the workflow"
            workflow_id = found[0].workflow_id
        answer = ok(cli("task", "update-by-ref", workflow_id, "step", "--status", "COMPLETED",
                        "--output", '{"result": "real"}', "--server-url", server_url))
        assert answer["workflowId"] == workflow_id and answer["taskId"]
        stdout, stderr = waiting.communicate(timeout=90)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()
    assert waiting.returncode == 0, (stdout, stderr)
    workflow = json.loads(stdout)
    assert workflow["workflowId"] == workflow_id and workflow["status"] == "COMPLETED"
    assert workflow["output"] == {"result": "real"} and workflow["correlationId"] == correlation


def test_update_by_ref_while_start_waits_local(url: str) -> None:
    _complete_by_ref_while_waiting(url, FLOW)


@pytest.mark.real_server
def test_update_by_ref_while_start_waits_real_server(real_server_url: str) -> None:
    task_name, workflow_name = _unique("cli_task"), _unique("cli_flow")
    with ConductorClient(Configuration(server_url=real_server_url)) as client:
        register(client, task_name=task_name, workflow_name=workflow_name)
    _complete_by_ref_while_waiting(real_server_url, workflow_name)
    wrong = cli("task", "get", "00000000-0000-0000-0000-000000000000", "--server-url", real_server_url)
    refused(wrong, 1)
