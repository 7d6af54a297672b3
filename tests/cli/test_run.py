"""``conductor-workers run``: the worker service command, as a subprocess against LocalConductor."""
from __future__ import annotations

import decimal
import json
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

from support.proxy import LoopbackProxy
from support.waiting import wait_until

from conductor_workers import ConductorClient, Configuration, WorkflowDef, WorkflowExecutor, WorkflowStatus, WorkflowTask
from conductor_workers import PollingOptions
from conductor_workers.__main__ import _build_parser
from conductor_workers._run_args import RunSettings, settings_from_args
from conductor_workers.testing import LocalConductor

ROOT = Path(__file__).resolve().parents[2]

WORKERS = '''
import os, time
from conductor_workers import Worker, worker_task

@worker_task("{task}", concurrency=2, poll_interval=20)
def echo(n: int, sleep: float = 0.0) -> dict:
    time.sleep(sleep)
    return {{"n": n, "pid": os.getpid()}}

class Other(Worker):
    task_def_name = "{task}_other"
    def execute(self, task):
        return {{"other": True}}
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server() -> Iterator[LocalConductor]:
    with LocalConductor() as conductor:
        yield conductor


@pytest.fixture
def task() -> str:
    return f"cli_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def workdir(tmp_path: Path, task: str) -> Path:
    (tmp_path / "svc_workers.py").write_text(WORKERS.format(task=task))
    (tmp_path / "empty_mod.py").write_text("X = 1\n")
    return tmp_path


@pytest.fixture
def procs() -> Iterator[List["subprocess.Popen[str]"]]:
    started: List["subprocess.Popen[str]"] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def _env(**extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("CONDUCTOR_WORKER", "CONDUCTOR_AUTH"))}
    env.pop("CONDUCTOR_SERVER_URL", None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    # idle long polls of 500 ms: stops and health verdicts come quickly
    env["CONDUCTOR_WORKER_ALL_BATCH_POLL_TIMEOUT"] = "500"
    env.update(extra)
    return env


def run_cli(workdir: Path, *args: str, env: Optional[Dict[str, str]] = None, timeout: float = 30) -> Tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "conductor_workers", "run", *args], cwd=workdir,
                          env=env or _env(), capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stderr


def start_cli(procs: list, workdir: Path, *args: str, env: Optional[Dict[str, str]] = None) -> "subprocess.Popen[str]":
    proc = subprocess.Popen([sys.executable, "-m", "conductor_workers", "run", *args], cwd=workdir,
                            env=env or _env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    procs.append(proc)
    return proc


def health(port: int) -> Tuple[int, Dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, {}


def workflows(server: LocalConductor, task: str, count: int, sleep: float = 0.0) -> Tuple[WorkflowExecutor, List[str]]:
    executor = WorkflowExecutor(ConductorClient(Configuration(server_url=server.url)))
    executor.register_workflow(WorkflowDef(
        name=f"{task}_wf",
        tasks=[WorkflowTask(name=task, task_reference_name="e",
                            input_parameters={"n": "${workflow.input.n}", "sleep": sleep})],
        output_parameters={"n": "${e.output.n}", "pid": "${e.output.pid}"},
    ), overwrite=True)
    return executor, [executor.start_workflow(f"{task}_wf", {"n": n}) for n in range(count)]


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an orphan's zombie may wait for a lazy init)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def child_pids(port: int) -> List[int]:
    status, report = health(port)
    pids = [entry["pid"] for entry in report.get("processes", []) if entry.get("healthy")]
    return pids if status == 200 else []


def wait_for_children(proc: "subprocess.Popen[str]", port: int, exclude: Tuple[int, ...] = (),
                      timeout: float = 30) -> List[int]:
    """The pids of the supervisor's two children once both are healthy (and none is in ``exclude``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the supervisor exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        pids = child_pids(port)
        if len(pids) == 2 and not set(pids) & set(exclude):
            return pids
        time.sleep(0.1)
    pytest.fail(f"no two healthy children within {timeout}s; /health: {health(port)}")


# -- tests -----------------------------------------------------------------------------------------


def test_run_completes_workflows_and_exits_0_on_sigterm(server, workdir, task, procs) -> None:
    executor, ids = workflows(server, task, 10)
    proc = start_cli(procs, workdir, "svc_workers", "--server-url", server.url, "--log-format", "json")
    results = [executor.wait_for_workflow(wf, timeout=20) for wf in ids]
    assert [wf.status for wf in results] == [WorkflowStatus.COMPLETED] * 10
    assert [wf.output["n"] for wf in results] == list(range(10))
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    entries = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert any("drained" in entry["message"] for entry in entries)
    assert {entry["level"] for entry in entries} <= {"DEBUG", "INFO", "WARNING"}


def test_bad_module_is_a_one_line_error(workdir) -> None:
    (workdir / "broken_mod.py").write_text("import no_such_dependency_xyz\n")
    for target in ("no_such_module_xyz", "broken_mod", "svc_workers:missing"):
        code, stderr = run_cli(workdir, target, "--server-url", "http://127.0.0.1:9/api")
        assert code == 3, stderr
        assert len(stderr.strip().splitlines()) == 1, stderr
        assert stderr.startswith("conductor-workers run: error: ")


@pytest.mark.parametrize("source, line, words", [
    ("import os\n\nimport no_such_dependency_xyz\n", 3, ["ModuleNotFoundError", "no_such_dependency_xyz"]),
    ("X = 1\n\ndef f():\n    raise RuntimeError('boom')\n\nf()\n", 4, ["RuntimeError", "boom"]),
    ("X = 1\ndef broken(:\n", 2, ["SyntaxError"]),
    ("import json\njson.loads('{')\n", 2, ["JSONDecodeError"]),  # raised in the stdlib: the user's line
])
def test_import_failure_names_the_file_and_line(workdir, source: str, line: int, words: List[str]) -> None:
    (workdir / "broken_mod.py").write_text(source)
    code, stderr = run_cli(workdir, "broken_mod", "--server-url", "http://127.0.0.1:9/api")
    assert (code, len(stderr.strip().splitlines())) == (3, 1), stderr
    assert f"broken_mod.py:{line}" in stderr and all(word in stderr for word in words), stderr
    # at debug level the whole traceback is logged too, before the one-line error
    code, stderr = run_cli(workdir, "broken_mod", "--server-url", "http://127.0.0.1:9/api", "--log-level", "debug")
    assert code == 3, stderr
    assert "Traceback" in stderr and f'broken_mod.py", line {line}' in stderr, stderr
    assert stderr.strip().splitlines()[-1].startswith("conductor-workers run: error: ")


@pytest.mark.parametrize("statement, words", [
    ("raise KeyboardInterrupt", ["KeyboardInterrupt"]),
    ("raise SystemExit(5)", ["sys.exit(5)"]),
    ("import sys; sys.exit('bye')", ["sys.exit('bye')"]),
])
def test_module_that_interrupts_or_exits_at_import_is_one_line(workdir, statement: str, words: List[str]) -> None:
    (workdir / "stops_mod.py").write_text(f"X = 1\n{statement}\n")
    code, stderr = run_cli(workdir, "stops_mod", "--server-url", "http://127.0.0.1:9/api")
    assert (code, len(stderr.strip().splitlines())) == (3, 1), stderr
    assert "Traceback" not in stderr and "stops_mod.py:2" in stderr
    assert all(word in stderr for word in words), stderr


def test_a_path_to_a_py_file_runs_its_workers(server, workdir, task, procs) -> None:
    (workdir / "pkg").mkdir()
    (workdir / "pkg" / "__init__.py").write_text("")
    (workdir / "pkg" / "more.py").write_text(
        "from conductor_workers import worker_task\n"
        f"@worker_task('{task}_more')\n"
        "def more() -> dict:\n    return {'more': True}\n")
    executor, ids = workflows(server, task, 3)
    proc = start_cli(procs, workdir.parent, f"{workdir.name}/svc_workers.py", f"{workdir.name}/pkg/more.py:more",
                     "--server-url", server.url)
    results = [executor.wait_for_workflow(wf, timeout=20) for wf in ids]
    assert [wf.status for wf in results] == [WorkflowStatus.COMPLETED] * 3
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    assert f"{task}_more" in stderr  # "polling ..." names the worker found through the package path


def test_a_py_argument_that_is_not_a_file_gets_a_hint(workdir) -> None:
    code, stderr = run_cli(workdir, "myworkers.py", "--server-url", "http://127.0.0.1:9/api")
    assert (code, len(stderr.strip().splitlines())) == (3, 1), stderr
    assert "myworkers.py" in stderr and "'myworkers'" in stderr, stderr
    # its name is taken by a module the interpreter imported first (in a folder of its own: os.py beside the
    # working directory would shadow the standard library's at start-up on Python 3.9)
    (workdir / "elsewhere").mkdir()
    (workdir / "elsewhere" / "os.py").write_text("X = 1\n")
    code, stderr = run_cli(workdir, "elsewhere/os.py", "--server-url", "http://127.0.0.1:9/api")
    assert (code, len(stderr.strip().splitlines())) == (3, 1), stderr
    assert "os.py" in stderr and "rename" in stderr, stderr


def test_no_workers_and_bad_options_fail(workdir, task) -> None:
    code, stderr = run_cli(workdir, "empty_mod", "--server-url", "http://127.0.0.1:9/api")
    assert (code, len(stderr.strip().splitlines())) == (3, 1), stderr
    assert "no workers found" in stderr
    for args in (["--concurrency", "0"], ["--worker", "nope"], ["--log-format", "xml"], ["--server-url", "ftp://x"]):
        code, stderr = run_cli(workdir, "svc_workers", *args)
        assert (code, len(stderr.strip().splitlines())) == (2, 1), (args, stderr)
    code, stderr = run_cli(workdir, "svc_workers", "--server-url", "http://127.0.0.1:9/api",
                           env=_env(CONDUCTOR_WORKER_ALL_CONCURRENCY="many"))
    assert (code, len(stderr.strip().splitlines())) == (2, 1), stderr


# Numeric flags and what each must turn into: every value either is refused (exit 2, one line) or
# lands in the settings as a number the runtime can use.
NUMERIC_FLAGS = ("--concurrency", "--poll-interval", "--batch-poll-timeout", "--time-limit", "--shutdown-timeout",
                 "--processes", "--health-port", "--health-max-silence", "--metrics-port")
FLAG_TEXT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10 ** 30), max_value=10 ** 30).map(str),
    st.text(alphabet="0123456789.eE+- infaINFn", max_size=8),
    st.sampled_from(["inf", "nan", "1e10", "1e300", "1.7", "257", "65536", "99999999999999999999", "0", "-1"]),
)


def _wait_accepts(seconds: float) -> None:
    lock = threading.Lock()  # free: acquire returns at once, after checking the timeout as every wait does
    assert lock.acquire(timeout=seconds)
    lock.release()


def _parse_run(capsys, *argv: str) -> Optional[RunSettings]:
    """The settings ``conductor-workers run`` makes of ``argv``, or None when it refused them (after
    checking that it did so with exit code 2 and one line)."""
    parser = _build_parser()
    try:
        return settings_from_args(parser.parse_args(["run", "svc_workers", *argv]))
    except SystemExit as exc:
        err = capsys.readouterr().err
        assert exc.code == 2, err
        assert len(err.strip().splitlines()) == 1 and err.startswith("conductor-workers run: error: "), err
        return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flag=st.sampled_from(NUMERIC_FLAGS), text=FLAG_TEXT)
@example(flag="--shutdown-timeout", text="inf")
@example(flag="--shutdown-timeout", text="1e10")
@example(flag="--time-limit", text="1e300")
@example(flag="--poll-interval", text="99999999999999999999")
@example(flag="--processes", text="100000")
@example(flag="--health-max-silence", text="nan")
def test_any_numeric_flag_value_is_refused_in_one_line_or_usable(capsys, flag, text) -> None:
    run_settings = _parse_run(capsys, f"{flag}={text}")
    if run_settings is None:
        return
    options = PollingOptions(**dict(run_settings.options))  # a flag never lets through what the options refuse
    for name in ("poll_interval", "batch_poll_timeout"):
        _wait_accepts(getattr(options, name) / 1000.0)
    if options.time_limit is not None:
        _wait_accepts(options.time_limit)
    _wait_accepts(run_settings.shutdown_timeout)
    _wait_accepts(run_settings.health_max_silence)
    assert run_settings.health_max_silence > 0
    assert type(run_settings.processes) is int and 1 <= run_settings.processes <= 256
    for port in (run_settings.health_port, run_settings.metrics_port):
        assert port is None or (type(port) is int and 0 <= port <= 65535)
    if flag in ("--concurrency", "--poll-interval", "--batch-poll-timeout", "--processes", "--health-port",
                "--metrics-port"):
        assert decimal.Decimal(text.strip()) == decimal.Decimal(int(decimal.Decimal(text.strip()))), text


def test_batch_poll_timeout_flag(capsys) -> None:
    run_settings = _parse_run(capsys, "--batch-poll-timeout", "300", "--poll-interval", "0")
    assert run_settings is not None
    assert dict(run_settings.options) == {"batch_poll_timeout": 300, "poll_interval": 0}
    assert _parse_run(capsys, "--batch-poll-timeout", "5001") is None


@pytest.mark.parametrize("args", [
    ["--shutdown-timeout", "inf"],
    ["--shutdown-timeout", "1e10"],
    ["--time-limit", "1e300"],
    ["--poll-interval", "99999999999999999999"],
    ["--concurrency", "1.7"],
    ["--health-max-silence", "nan"],
])
def test_unusable_numeric_flags_are_refused_before_connecting(workdir, args) -> None:
    """Before: ``--shutdown-timeout inf`` started, and SIGTERM then crashed with OverflowError."""
    code, stderr = run_cli(workdir, "svc_workers", "--server-url", "http://127.0.0.1:9/api", *args, timeout=20)
    assert (code, len(stderr.strip().splitlines())) == (2, 1), (args, stderr)
    assert args[0] in stderr, stderr


@pytest.mark.parametrize("variable, raw", [
    ("CONDUCTOR_WORKER_CONCURRENCY", "1.7"),
    ("CONDUCTOR_WORKER_CONCURRENCY", "inf"),
    ("CONDUCTOR_WORKER_CONCURRENCY", "nan"),
    ("CONDUCTOR_WORKER_ALL_TIME_LIMIT", "1e300"),
    ("CONDUCTOR_WORKER_ALL_POLLING_INTERVAL", "1e20"),
])
@pytest.mark.parametrize("processes", ["1", "2"])
def test_unusable_environment_numbers_are_refused_in_one_line(workdir, variable, raw, processes) -> None:
    """Before: inf was an OverflowError traceback, nan a bare ValueError, 1.7 became 1. With
    ``--processes`` the supervisor refuses it once, before spawning anything."""
    code, stderr = run_cli(workdir, "svc_workers", "--server-url", "http://127.0.0.1:9/api", "--processes", processes,
                           env=_env(**{variable: raw}), timeout=20)
    assert (code, len(stderr.strip().splitlines())) == (2, 1), stderr
    assert variable in stderr, stderr


def test_rejected_credentials_fail_at_start(workdir) -> None:
    with LocalConductor(auth=("key", "right-secret")) as secured:
        env = _env(CONDUCTOR_AUTH_KEY="key", CONDUCTOR_AUTH_SECRET="wrong-secret")
        code, stderr = run_cli(workdir, "svc_workers", "--server-url", secured.url, env=env)
    assert code == 4, stderr
    assert "rejected the credentials" in stderr.strip().splitlines()[-1]


def test_processes_drain_on_sigterm_and_every_workflow_completes(server, workdir, task, procs) -> None:
    executor, ids = workflows(server, task, 16, sleep=0.5)
    port = free_port()
    proc = start_cli(procs, workdir, "svc_workers:echo", "--server-url", server.url, "--processes", "2",
                     "--health-port", str(port))
    wait_for_children(proc, port)
    wait_until(lambda: sum(executor.get_workflow(wf, include_tasks=False).status is WorkflowStatus.COMPLETED
                           for wf in ids) >= 2, timeout=20, message="some workflows completed")
    proc.send_signal(signal.SIGTERM)  # tasks are in flight in both processes
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    # Nothing in flight was lost: a second run finishes the rest at once (no response timeout to wait for).
    assert sum(executor.get_workflow(wf, include_tasks=False).status is WorkflowStatus.COMPLETED for wf in ids) < 16
    second = start_cli(procs, workdir, "svc_workers", "--server-url", server.url, "--concurrency", "8",
                       "--health-port", str(port))
    wait_until(lambda: health(port)[0] == 200, timeout=20, message="the second run polling")
    results = [executor.wait_for_workflow(wf, timeout=30) for wf in ids]
    assert [wf.status for wf in results] == [WorkflowStatus.COMPLETED] * len(ids)
    assert len({wf.output["pid"] for wf in results}) >= 2
    second.send_signal(signal.SIGTERM)
    _, stderr = second.communicate(timeout=20)
    assert second.returncode == 0, stderr


def test_a_killed_child_is_restarted(server, workdir, procs) -> None:
    port = free_port()
    proc = start_cli(procs, workdir, "svc_workers", "--server-url", server.url, "--processes", "2",
                     "--health-port", str(port))
    first = wait_for_children(proc, port)
    os.kill(first[0], signal.SIGKILL)
    after = wait_for_children(proc, port, exclude=(first[0],))
    assert first[1] in after
    report = health(port)[1]
    assert sum(entry["restarts"] for entry in report["processes"]) == 1


def test_sigkill_of_the_supervisor_stops_its_children(server, workdir, task, procs) -> None:
    executor, ids = workflows(server, task, 12, sleep=0.3)
    port = free_port()
    proc = start_cli(procs, workdir, "svc_workers", "--server-url", server.url, "--processes", "2",
                     "--health-port", str(port))
    pids = wait_for_children(proc, port)
    wait_until(lambda: any(executor.get_workflow(wf, include_tasks=False).status is WorkflowStatus.COMPLETED
                           for wf in ids), timeout=20, message="work under way")
    proc.send_signal(signal.SIGKILL)  # tasks are in flight in the children
    proc.wait(timeout=10)
    wait_until(lambda: not any(alive(pid) for pid in pids), timeout=8, message="orphaned children exit")
    # they drained what they held: another run finishes the rest at once (no response timeout to wait out)
    start_cli(procs, workdir, "svc_workers", "--server-url", server.url, "--concurrency", "8")
    results = [executor.wait_for_workflow(wf, timeout=30) for wf in ids]
    assert [wf.status for wf in results] == [WorkflowStatus.COMPLETED] * len(ids)


def test_health_is_200_then_503_once_the_server_is_gone(workdir, task, procs) -> None:
    port = free_port()
    conductor = LocalConductor().start()
    try:
        start_cli(procs, workdir, "svc_workers", "--server-url", conductor.url, "--health-port", str(port),
                  "--health-max-silence", "1")
        status, report = wait_until(lambda: (lambda r: r if r[0] == 200 else None)(health(port)), timeout=20)
        worker = report["workers"][task]
        assert worker["polling"] and not worker["paused"] and worker["in_flight"] == 0
        assert worker["last_contact"] is not None and worker["last_error"] is None
    finally:
        conductor.stop()
    status, report = wait_until(
        lambda: (lambda r: r if r[0] == 503 and r[1]["workers"][task]["problems"] else None)(health(port)),
        timeout=15,
    )
    assert report["workers"][task]["last_error"]
    assert not report["healthy"]


def test_metrics_endpoint(server, workdir, task, procs) -> None:
    pytest.importorskip("prometheus_client")
    port = free_port()
    executor, ids = workflows(server, task, 3)
    start_cli(procs, workdir, "svc_workers", "--server-url", server.url, "--metrics-port", str(port))
    for wf in ids:
        assert executor.wait_for_workflow(wf, timeout=20).status is WorkflowStatus.COMPLETED

    def scrape() -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                return resp.read().decode()
        except OSError:
            return ""

    text = wait_until(lambda: (lambda t: t if f'task_execute_total{{status="COMPLETED",taskType="{task}"}} 3.0' in t
                               else None)(scrape()), timeout=10)
    assert f'task_poll_total{{taskType="{task}"}}' in text
    assert f'task_execute_time_bucket{{le="+Inf",taskType="{task}"}} 3.0' in text


def test_serve_health_in_process(server, task) -> None:
    from conductor_workers import TaskManager, worker_task

    @worker_task(task, batch_poll_timeout=200)
    def noop() -> None:
        return None

    client = ConductorClient(Configuration(server_url=server.url))
    manager = TaskManager(client, [noop])
    health_server = manager.serve_health(0)
    try:
        assert health(health_server.port)[0] == 503  # not polling yet
        manager.start_polling()
        status, report = wait_until(lambda: (lambda r: r if r[0] == 200 else None)(health(health_server.port)))
        assert report["workers"][task]["polling"] is True
        manager.stop_polling(5)
        assert health(health_server.port)[0] == 503
    finally:
        health_server.close()
        manager.stop_polling(5)
        client.close()


def test_health_turns_503_when_the_server_is_cut_and_200_when_it_is_back(server, workdir, task, procs) -> None:
    proxy = LoopbackProxy(server.url)
    port = free_port()
    start_cli(procs, workdir, "svc_workers", "--server-url", proxy.url, "--health-port", str(port),
              "--health-max-silence", "1")
    wait_until(lambda: health(port)[0] == 200, timeout=20)
    proxy.cut()
    status, report = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(health(port)), timeout=15)
    assert report["workers"][task]["problems"]
    proxy.restore()
    status, report = wait_until(lambda: (lambda r: r if r[0] == 200 else None)(health(port)), timeout=20)
    assert report["healthy"]


def test_metrics_of_two_processes_add_up_to_the_workflows_completed(server, workdir, task, procs) -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    port, health_port = free_port(), free_port()
    start_cli(procs, workdir, "svc_workers", "--server-url", server.url, "--processes", "2",
              "--metrics-port", str(port), "--health-port", str(health_port))
    wait_for_children(procs[-1], health_port)
    executor, ids = workflows(server, task, 20, sleep=0.1)
    done = [executor.wait_for_workflow(wf, timeout=30) for wf in ids]
    assert all(wf.status is WorkflowStatus.COMPLETED for wf in done)
    assert len({wf.output["pid"] for wf in done}) == 2  # both children worked: the sum covers both

    def completed() -> Optional[float]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            return None
        total = sum(sample.value for family in parser.text_string_to_metric_families(text)
                    for sample in family.samples
                    if sample.name == "task_execute_total" and sample.labels.get("taskType") == task
                    and sample.labels.get("status") == "COMPLETED")
        return total if total == len(ids) else None

    assert wait_until(completed, timeout=10) == len(ids)


@pytest.mark.real_server
def test_run_with_two_processes_on_the_real_server(real_server_url, workdir, task, procs) -> None:
    """The same command against conductor-oss: every workflow completes, SIGTERM drains to exit 0."""

    class Real:
        url = real_server_url

    health_port = free_port()
    executor, ids = workflows(Real(), task, 20)  # type: ignore[arg-type]
    proc = start_cli(procs, workdir, "svc_workers", "--server-url", real_server_url, "--processes", "2",
                     "--health-port", str(health_port))
    results = [executor.wait_for_workflow(wf, timeout=60) for wf in ids]
    assert [wf.status for wf in results] == [WorkflowStatus.COMPLETED] * 20
    wait_until(lambda: health(health_port)[0] == 200, timeout=20)  # children report once a second
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr


def test_each_process_reports_a_worker_id_of_its_own(server, workdir, task, procs) -> None:
    """``--processes 2``: each child's results (and polls) carry ``host:pid``, not one shared host name."""
    port = free_port()
    start_cli(procs, workdir, "svc_workers:echo", "--server-url", server.url, "--processes", "2",
              "--health-port", str(port))
    pids = wait_for_children(procs[-1], port)
    executor, ids = workflows(server, task, 12, sleep=0.1)
    done = [executor.wait_for_workflow(wf, timeout=30) for wf in ids]
    assert all(wf.status is WorkflowStatus.COMPLETED for wf in done)
    host = socket.gethostname()
    by_pid = {wf.output["pid"]: wf.tasks[0].worker_id for wf in done}
    assert set(by_pid) <= set(pids)
    assert all(worker_id == f"{host}:{pid}" for pid, worker_id in by_pid.items()), by_pid
    with ConductorClient(Configuration(server_url=server.url)) as client:
        polled_by = {entry.worker_id for entry in client.tasks.poll_data(task)}
    assert polled_by and polled_by <= {f"{host}:{pid}" for pid in pids}, polled_by
