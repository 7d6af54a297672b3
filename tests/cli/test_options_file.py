"""``conductor-workers run --options-file``: one file changes polling options at runtime, in every
process of a fleet; entries sit on top of the start options, and a bad file changes nothing."""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
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


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[Tuple[TaskManager, Path]]:
    @worker_task("optfile_w", concurrency=3)
    def w() -> None:
        return None

    client = ConductorClient(Configuration(server_url="http://127.0.0.1:9/api"))  # never started
    try:
        yield TaskManager(client, [w]), tmp_path / "options.json"
    finally:
        client.close()


def _errors(caplog: pytest.LogCaptureFixture) -> List[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


BAD_FILES: List[Tuple[str, bytes]] = [
    ("latin-1", '{"optfile_w": {"domain": "caf\u00e9"}}'.encode("latin-1")),
    ("nested too deep", b"[" * 100_000 + b"]" * 100_000),
    ("nested object too deep", b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
    ("not an object", b"[1, 2]"),
    ("not JSON", b"{"),
    ("inf", b'{"all": {"time_limit": Infinity}}'),
    ("huge time limit", b'{"all": {"time_limit": 1e300}}'),
    ("huge interval", b'{"all": {"poll_interval": 100000000000000000000}}'),
    ("fraction", b'{"all": {"concurrency": 1.7}}'),
    ("NaN", b'{"optfile_w": {"batch_poll_timeout": NaN}}'),
]


@pytest.mark.parametrize("what, content", BAD_FILES, ids=[what for what, _ in BAD_FILES])
def test_a_bad_file_is_logged_once_and_ignored_then_applied_once_good(
    watched: Tuple[TaskManager, Path], caplog: pytest.LogCaptureFixture, what: str, content: bytes
) -> None:
    manager, path = watched
    start = manager.options_for("optfile_w")
    watcher = OptionsFile(str(path), manager)
    path.write_bytes(content)
    caplog.set_level(logging.INFO, logger="conductor_workers")
    for _ in range(3):  # the service checks every half second: one line, not one per check
        assert watcher.check() is False
    assert manager.options_for("optfile_w") == start
    errors = _errors(caplog)
    assert len(errors) == 1, errors
    assert str(path) in errors[0] and "\n" not in errors[0] and len(errors[0]) < 500, errors[0]
    path.write_text('{"optfile_w": {"concurrency": 5}}')  # fixed (same size or not): applied
    assert watcher.check() is True
    assert manager.options_for("optfile_w") == start.evolve(concurrency=5)
    assert len(_errors(caplog)) == 1


def test_a_path_that_cannot_be_stat_ed_is_logged_once(watched: Tuple[TaskManager, Path], caplog) -> None:
    manager, path = watched
    path.write_text("{}")
    below_a_file = path / "options.json"  # NotADirectoryError, not FileNotFoundError
    watcher = OptionsFile(str(below_a_file), manager)
    caplog.set_level(logging.INFO, logger="conductor_workers")
    for _ in range(3):
        assert watcher.check() is False
    assert len(_errors(caplog)) == 1, _errors(caplog)


def test_a_same_size_rewrite_within_one_clock_tick_is_seen(watched: Tuple[TaskManager, Path]) -> None:
    """A bad file fixed at once (an editor's save, same size) must not look unchanged."""
    manager, path = watched
    watcher = OptionsFile(str(path), manager)
    path.write_text('{"optfile_w": {"concurrency": 0}}')
    assert watcher.check() is False
    stat = os.stat(path)
    path.write_text('{"optfile_w": {"concurrency": 7}}')
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # what a coarse file-system clock gives
    assert watcher.check() is True
    assert manager.options_for("optfile_w").concurrency == 7


JSON_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10 ** 30), max_value=10 ** 30),
    st.text(max_size=5),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["poll_interval", "concurrency", "batch_poll_timeout", "time_limit"]), value=JSON_VALUES)
@example(name="time_limit", value=1e300)
@example(name="poll_interval", value=10 ** 20)
def test_any_value_in_the_file_is_refused_or_usable(watched: Tuple[TaskManager, Path], name: str, value: Any) -> None:
    manager, path = watched
    watcher = OptionsFile(str(path), manager)
    path.write_text(json.dumps({"all": {name: value}}))
    if watcher.check():
        options = manager.options_for("optfile_w")
        lock = threading.Lock()  # free: acquire returns at once, after checking the timeout as every wait does
        for seconds in (options.poll_interval / 1000, options.batch_poll_timeout / 1000, options.time_limit or 0):
            assert lock.acquire(timeout=seconds)
            lock.release()
        assert type(options.concurrency) is int and type(options.poll_interval) is int
    path.write_text("{}")
    watcher.check()
    assert manager.options_for("optfile_w").concurrency == 3


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


def test_a_service_survives_a_file_it_cannot_decode_or_parse(fleet: Tuple[str, Path, int]) -> None:
    """Before: a Latin-1 or deeply nested file raised out of the service's loop and ended the process."""
    task, options, port = fleet

    def worker_state() -> Optional[Dict[str, Any]]:
        report = _health(port)
        return report["workers"][task] if report and task in report.get("workers", {}) else None

    wait_until(lambda: (worker_state() or {}).get("polling"), timeout=30, message="polling")
    for content in ('{"all": {"domain": "caf\u00e9"}}'.encode("latin-1"), b"[" * 100_000):
        options.write_bytes(content)
        time.sleep(1.5)  # three of the service's checks
        assert (worker_state() or {}).get("polling") is True, "the service died on a bad options file"
    options.write_text(json.dumps({task: {"paused": True}}))
    wait_until(lambda: (worker_state() or {}).get("paused") is True, timeout=15, message="paused by the fixed file")
