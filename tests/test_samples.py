"""Every sample runs to a successful exit on the embedded server; hello_world and order_workflow on the real one too."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def run_sample(name: str, *args: str, server_url: "str | None" = None) -> "subprocess.CompletedProcess[str]":
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONDUCTOR_")}
    if server_url:
        env["CONDUCTOR_SERVER_URL"] = server_url
    return subprocess.run(
        [sys.executable, str(SAMPLES / name), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.parametrize(
    "name, args",
    [
        ("hello_world.py", ("--workflows", "30")),
        ("order_workflow.py", ("--orders", "20")),
        ("long_running.py", ()),
        ("update_task_from_script.py", ()),
        ("legacy_service.py", ("--serve-seconds", "0.5")),
        ("time_limits.py", ()),
        ("tracing.py", ()),
    ],
)
def test_sample_on_embedded_server(name: str, args: "tuple[str, ...]") -> None:
    proc = run_sample(name, *args)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    assert "server: http://127.0.0.1:" in proc.stdout


@pytest.mark.real_server
def test_hello_world_on_real_server(real_server_url: str) -> None:
    proc = run_sample("hello_world.py", "--workflows", "20", server_url=real_server_url)
    assert proc.returncode == 0, f"hello_world failed on the real server:\n{proc.stdout}\n{proc.stderr}"
    assert "20/20 workflows completed" in proc.stdout


@pytest.mark.real_server
def test_order_workflow_on_real_server(real_server_url: str) -> None:
    """SWITCH, FORK_JOIN, DO_WHILE and SUB_WORKFLOW: the same definition on conductor-oss."""
    proc = run_sample("order_workflow.py", "--orders", "10", server_url=real_server_url)
    assert proc.returncode == 0, f"order_workflow failed on the real server:\n{proc.stdout}\n{proc.stderr}"
    assert "10/10 orders completed correctly" in proc.stdout
