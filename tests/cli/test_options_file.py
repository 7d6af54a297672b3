"""``conductor-workers run --options-file``: one file changes polling options at runtime, in every
process of a fleet; entries sit on top of the start options, and a bad file changes nothing."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import pytest
from support.waiting import wait_until

from conductor_workers import ConductorClient, Configuration, PollingOptions, TaskManager, worker_task
from conductor_workers._options_file import OptionsFile, parse
from conductor_workers.errors import InvalidOptionError
from conductor_workers.testing import LocalConductor


def test_parse_merges_all_under_each_task_type_and_rejects_bad_entries() -> None:
    assert parse('{"all": {"concurrency": 4}, "a": {"paused": true, "concurrency": 2}}', ["a", "b"]) == {
        "a": {"concurrency": 2, "paused": True},
        "b": {"concurrency": 4},
    }
    assert parse("", ["a"]) == {"a": {}}
    for text, fragment in [
        ("[1]", "expected a JSON object"),
        ("{", "not JSON"),
        ('{"zzz": {}}', "no worker for zzz"),
        ('{"a": 3}', "expected an object of options"),
        ('{"a": {"colour": 1}}', "unknown polling option"),
    ]:
        with pytest.raises(InvalidOptionError, match=fragment):
            parse(text, ["a"])


def test_the_file_sits_on_top_of_the_start_options_and_a_bad_one_changes_nothing(tmp_path: Path) -> None:
    @worker_task("optfile_a", concurrency=3)
    def a() -> None:
        return None

    @worker_task("optfile_b")
    def b() -> None:
        return None

    client = ConductorClient(Configuration(server_url="http://127.0.0.1:9/api"))  # never started
    try:
        manager = TaskManager(client, [a, b], options=PollingOptions(poll_interval=50))
        path = tmp_path / "options.json"
        watcher = OptionsFile(str(path), manager)
        assert watcher.check() is False  # no file: no overrides
        path.write_text('{"all": {"concurrency": 5}, "optfile_a": {"paused": true}}')
        assert watcher.check() is True
        assert manager.options_for("optfile_a") == PollingOptions(poll_interval=50, concurrency=5, paused=True)
        assert manager.options_for("optfile_b").concurrency == 5
        assert watcher.check() is False  # unchanged file: nothing to do
        path.write_text('{"optfile_a": {"concurrency": 0}}')  # invalid: everything stays
        assert watcher.check() is False
        assert manager.options_for("optfile_a").paused is True
        path.write_text("{}")  # entries removed: the start options come back
        assert watcher.check() is True
        assert manager.options_for("optfile_a") == PollingOptions(poll_interval=50, concurrency=3)
        assert manager.options_for("optfile_b") == PollingOptions(poll_interval=50)
    finally:
        client.close()


WORKERS = """
from conductor_workers import worker_task

@worker_task({task!r}, batch_poll_timeout=200)
def noop() -> None:
    return None
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _health(port: int) -> Optional[Dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())
    except OSError:
        return None


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Tuple[str, Path, int]]:
    task = f"cw_optfile_{uuid.uuid4().hex[:8]}"
    (tmp_path / "optfile_workers.py").write_text(WORKERS.format(task=task))
    options = tmp_path / "options.json"
    port = _free_port()
    with LocalConductor() as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUCTOR_")}
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), *sys.path])
        proc = subprocess.Popen(
            [sys.executable, "-m", "conductor_workers", "run", "optfile_workers", "--server-url", server.url,
             "--options-file", str(options), "--health-port", str(port), "--log-level", "warning"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        try:
            yield task, options, port
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def test_a_running_service_follows_the_file(fleet: Tuple[str, Path, int]) -> None:
    task, options, port = fleet

    def worker_state() -> Optional[Dict[str, Any]]:
        report = _health(port)
        return report["workers"][task] if report and task in report.get("workers", {}) else None

    assert wait_until(lambda: (lambda w: w if w and w["polling"] else None)(worker_state()), timeout=30)
    options.write_text(json.dumps({task: {"paused": True}}))
    wait_until(lambda: (worker_state() or {}).get("paused") is True, timeout=15, message="paused by the file")
    options.write_text("not json")  # logged, nothing changes
    options.write_text(json.dumps({"all": {}}))
    wait_until(lambda: (worker_state() or {}).get("paused") is False, timeout=15, message="resumed by the file")
