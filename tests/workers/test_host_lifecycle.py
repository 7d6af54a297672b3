"""How a ``TaskManager`` ends with its host process: interpreter exit, ``serve_forever``, ``atexit``,
``stop_polling`` from inside a task, and an honest ``stop_polling`` timeout.

Each host is a real child process (``sys.executable`` running a small script written to ``tmp_path``)
polling the session's in-process ``LocalConductor``. The child prints one line per task it starts
(``started <workflow id> <i>``), so the parent knows which tasks were in flight. After the child has
exited, the parent checks that nothing was left ``IN_PROGRESS`` on the server, then runs a worker of
its own for the same task type: every workflow must complete with the right output, and every task the
child started must have been reported by the child. The task definition has
``responseTimeoutSeconds=3600``, so a stranded task cannot be rescued by the server's sweeper and makes
the final wait fail.

A child that does not exit in time gets SIGUSR1 (``faulthandler`` dumps every thread's stack into its
stderr, shown in the failure), then SIGKILL: a hang is a clean failure, never a stuck suite.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import pytest
from support.workers import Env, Flow

from conductor_workers import Task, TaskStatus, WorkflowStatus, WorkflowTimeoutError, worker_task

pytestmark = pytest.mark.slow

WORKFLOWS = 12
CONCURRENCY = 4
EXIT_TIMEOUT = 15.0  # from "the host is done" to the child's exit
LINE_TIMEOUT = 15.0  # for the child to start and print what we wait for
DRAIN_TIMEOUT = 20.0  # for the parent's own worker to finish what the child left
SHUTDOWN_TIMEOUT = 10  # given to the children that set one

# -- the child scripts -------------------------------------------------------------------------------

CHILD_COMMON = r'''
import faulthandler, logging, os, signal, sys, threading, time
faulthandler.register(signal.SIGUSR1, all_threads=True)
logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                    format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s")

from conductor_workers import ConductorClient, Configuration, TaskManager, worker_task

URL, TASK, MODE = sys.argv[1], sys.argv[2], sys.argv[3]
WORK_SECONDS = 1.0
client = ConductorClient(Configuration(server_url=URL))
_out = threading.Lock()
_started = []
enough = threading.Event()  # set once CONCURRENCY tasks have started


def say(*parts):
    with _out:
        sys.stdout.write(" ".join(str(part) for part in parts) + "\n")
        sys.stdout.flush()


def hook(task, n):  # a child script may redefine it
    pass


@worker_task(TASK, concurrency=CONCURRENCY)
def work(task):
    i = task.input_data.get("i")
    with _out:
        _started.append(task.task_id)
        n = len(_started)
    say("started", task.workflow_instance_id, i)
    if n >= CONCURRENCY:
        enough.set()
    hook(task, n)
    time.sleep(WORK_SECONDS)
    return {"i": i, "by": "child"}
'''.replace("CONCURRENCY", str(CONCURRENCY))

# main returns, or raises, while CONCURRENCY tasks are in flight; nothing else stops the manager
CHILD_MAIN_ENDS = r'''
manager = TaskManager(client, [work])
manager.start_polling()
if not enough.wait(30):
    say("never started enough tasks")
    os._exit(3)
say("main ending", MODE)
if MODE == "raise":
    raise RuntimeError("the host's main failed on purpose")
if MODE == "interrupt":
    raise KeyboardInterrupt
'''

# the only shutdown mechanism is the user's atexit hook
CHILD_ATEXIT = r'''
import atexit
manager = TaskManager(client, [work])
manager.start_polling()
atexit.register(lambda: say("atexit stop_polling returned", manager.stop_polling(timeout=10)))
if not enough.wait(30):
    say("never started enough tasks")
    os._exit(3)
say("main ending", MODE)
'''

# blocked in serve_forever() until the parent signals it
CHILD_SERVE = r'''
SIGNUM = {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM}[MODE]
before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}


def watch_handlers():  # tells the parent when it is safe to signal
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if signal.getsignal(SIGNUM) is not before[SIGNUM]:
            say("handler installed")
            return
        time.sleep(0.01)


threading.Thread(target=watch_handlers, daemon=True).start()
if MODE == "sigint":  # the manager's own shutdown_timeout; serve_forever starts polling itself
    manager = TaskManager(client, [work], shutdown_timeout=SHUTDOWN_TIMEOUT)
    ok = manager.serve_forever()
else:  # already polling; the timeout given to serve_forever
    manager = TaskManager(client, [work])
    manager.start_polling()
    ok = manager.serve_forever(shutdown_timeout=SHUTDOWN_TIMEOUT)
after = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
say("serve_forever returned", ok)
say("handlers restored", after == before)
say("is_polling", manager.is_polling)
'''.replace("SHUTDOWN_TIMEOUT", str(SHUTDOWN_TIMEOUT))

# a worker stops the manager from inside execute (once), waiting forever
CHILD_STOP_INSIDE = r'''
once = threading.Event()
stopped = threading.Event()


def hook(task, n):
    if n != 2 or once.is_set():
        return
    once.set()
    say("stopper", task.workflow_instance_id)
    try:
        say("stop_polling returned", manager.stop_polling(timeout=None))
    except BaseException as exc:
        say("stop_polling raised", type(exc).__name__, exc)
        raise
    finally:
        stopped.set()


manager = TaskManager(client, [work])
manager.start_polling()
stopped.wait()
say("is_polling", manager.is_polling)
say("main ending", MODE)
'''


# -- the parent side -----------------------------------------------------------------------------------


class Child:
    """A child process whose stdout lines are collected by a thread; stderr goes to a file."""

    def __init__(self, tmp_path: Path, name: str, script: str, args: Sequence[str]) -> None:
        path = tmp_path / f"{name}.py"
        path.write_text(script)
        self.stderr_path = tmp_path / f"{name}.stderr"
        env = {key: value for key, value in os.environ.items() if not key.lower().startswith("conductor")}
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.stderr_path, "w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, str(path), *args],
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                text=True,
                env=env,
                cwd=tmp_path,
            )
        self.lines: List[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, name="child-stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def snapshot(self) -> List[str]:
        with self._cond:
            return list(self.lines)

    def started(self) -> Dict[str, int]:
        """Workflow id -> i of every task the child started."""
        return {line.split()[1]: int(line.split()[2]) for line in self.snapshot() if line.startswith("started ")}

    def wait_for(self, predicate: Callable[[List[str]], bool], what: str, timeout: float = LINE_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.lines):
                left = deadline - time.monotonic()
                if self._eof:
                    break
                if left <= 0:
                    break
                self._cond.wait(left)
            ok = predicate(self.lines)
        if not ok:
            if self.proc.poll() is None:
                self._dump_and_kill()
                pytest.fail(f"the child printed no {what} within {timeout:.0f}s (killed)\n{self.describe()}")
            self.proc.wait()
            pytest.fail(f"the child exited (rc {self.proc.returncode}) before printing {what}\n{self.describe()}")

    def wait_exit(self, timeout: float = EXIT_TIMEOUT) -> float:
        """Wait for the child to exit on its own; how long it took. A hang fails the test."""
        started = time.monotonic()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._dump_and_kill()
            pytest.fail(f"the child did not exit on its own within {timeout:.0f}s (hang; killed)\n{self.describe()}")
        self._reader.join(5)
        return time.monotonic() - started

    def _dump_and_kill(self) -> None:
        try:
            self.proc.send_signal(signal.SIGUSR1)  # faulthandler: every thread's stack into stderr
            time.sleep(0.5)
        except ProcessLookupError:
            pass
        self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(5)

    def describe(self) -> str:
        stderr = self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""
        return (
            "---- child stdout ----\n" + "\n".join(self.snapshot())
            + "\n---- child stderr (tail) ----\n" + stderr[-6000:]
        )


@pytest.fixture
def spawn(tmp_path: Path, local_server: object) -> Iterator[Callable[..., Child]]:
    children: List[Child] = []

    def start(name: str, script: str, flow: Flow, mode: str) -> Child:
        child = Child(tmp_path, name, script, [flow.env.url, flow.task_name, mode])
        children.append(child)
        return child

    yield start
    for child in children:
        child.kill()


def lifecycle_flow(env: Env, prefix: str) -> Flow:
    # responseTimeoutSeconds=3600: a task stranded IN_PROGRESS stays stranded for the whole test
    return env.flow(prefix, response_timeout_seconds=3600)


def started_count(count: int) -> Callable[[List[str]], bool]:
    return lambda lines: sum(line.startswith("started ") for line in lines) >= count


def has_line(text: str) -> Callable[[List[str]], bool]:
    return lambda lines: text in lines


def check_nothing_stranded(env: Env, flow: Flow, ids: Sequence[str], child: Child) -> None:
    """After the child exited: nothing IN_PROGRESS; then our own worker finishes the rest."""
    child_started = child.started()
    assert child_started, f"the child started no task\n{child.describe()}"
    stranded = [
        (wf_id, task.task_id, task.status)
        for wf_id in ids
        for task in env.executor.get_workflow(wf_id).tasks
        if task.status is TaskStatus.IN_PROGRESS
    ]
    assert not stranded, f"the child's shutdown left tasks IN_PROGRESS on the server: {stranded}\n{child.describe()}"

    @worker_task(flow.task_name, concurrency=CONCURRENCY, poll_interval=50)
    def finish(task: Task) -> Dict[str, object]:
        return {"i": task.input_data.get("i"), "by": "parent"}

    env.manager([finish]).start_polling()
    try:
        workflows = env.wait_all(ids, timeout=DRAIN_TIMEOUT)
    except WorkflowTimeoutError as exc:
        states = {wf_id: [(t.task_id, t.status) for t in env.executor.get_workflow(wf_id).tasks] for wf_id in ids}
        pytest.fail(f"a workflow did not complete (a task stranded?): {exc}\n{states}\n{child.describe()}")
    for i, workflow in enumerate(workflows):
        assert workflow.status is WorkflowStatus.COMPLETED, (i, workflow.reason_for_incompletion)
        assert workflow.output["out"]["i"] == i, workflow.output
        assert [task.status for task in workflow.tasks] == [TaskStatus.COMPLETED], workflow.tasks
        if workflow.workflow_id in child_started:  # started by the child: reported by the child
            assert workflow.output["out"]["by"] == "child", (i, workflow.output, child.describe())


# -- the tests -------------------------------------------------------------------------------------------


def test_main_returning_drains_in_flight_tasks_and_exits(env: Env, spawn: Callable[..., Child]) -> None:
    flow = lifecycle_flow(env, "exit_return")
    ids = flow.start_many(WORKFLOWS)
    child = spawn("main_returns", CHILD_COMMON + CHILD_MAIN_ENDS, flow, "return")
    child.wait_for(has_line("main ending return"), "'main ending'")
    child.wait_exit()
    assert child.proc.returncode == 0, child.describe()
    check_nothing_stranded(env, flow, ids, child)


@pytest.mark.parametrize(
    "mode, returncodes",
    [("raise", (1,)), ("interrupt", (-signal.SIGINT, 128 + signal.SIGINT))],
    ids=["RuntimeError", "KeyboardInterrupt"],
)
def test_main_raising_drains_in_flight_tasks_and_exits(
    env: Env, spawn: Callable[..., Child], mode: str, returncodes: Sequence[int]
) -> None:
    flow = lifecycle_flow(env, f"exit_{mode}")
    ids = flow.start_many(WORKFLOWS)
    child = spawn(f"main_{mode}", CHILD_COMMON + CHILD_MAIN_ENDS, flow, mode)
    child.wait_for(has_line(f"main ending {mode}"), "'main ending'")
    child.wait_exit()
    # the exception still decides the exit status, as with no manager at all
    assert child.proc.returncode in returncodes, child.describe()
    expected = "RuntimeError: the host's main failed on purpose" if mode == "raise" else "KeyboardInterrupt"
    assert expected in child.stderr_path.read_text(), child.describe()
    check_nothing_stranded(env, flow, ids, child)


@pytest.mark.parametrize("mode", ["sigint", "sigterm"])
def test_serve_forever_drains_and_returns_true_on_a_signal(
    env: Env, spawn: Callable[..., Child], mode: str
) -> None:
    flow = lifecycle_flow(env, f"serve_{mode}")
    ids = flow.start_many(WORKFLOWS)
    child = spawn(f"serve_{mode}", CHILD_COMMON + CHILD_SERVE, flow, mode)
    child.wait_for(lambda lines: started_count(2)(lines) and "handler installed" in lines,
                   "'handler installed' and two started tasks")
    child.proc.send_signal(signal.SIGINT if mode == "sigint" else signal.SIGTERM)
    took = child.wait_exit(timeout=SHUTDOWN_TIMEOUT + 5)
    lines = child.snapshot()
    assert child.proc.returncode == 0, child.describe()
    assert "serve_forever returned True" in lines, child.describe()
    assert "handlers restored True" in lines, child.describe()
    assert "is_polling False" in lines, child.describe()
    assert took < SHUTDOWN_TIMEOUT, f"took {took:.1f}s to drain ~1 s tasks\n{child.describe()}"
    check_nothing_stranded(env, flow, ids, child)


def test_user_atexit_hook_stopping_the_manager_exits_cleanly(env: Env, spawn: Callable[..., Child]) -> None:
    flow = lifecycle_flow(env, "atexit")
    ids = flow.start_many(WORKFLOWS)
    child = spawn("atexit", CHILD_COMMON + CHILD_ATEXIT, flow, "atexit")
    child.wait_for(has_line("main ending atexit"), "'main ending'")
    child.wait_exit()
    assert child.proc.returncode == 0, child.describe()
    assert "atexit stop_polling returned True" in child.snapshot(), child.describe()
    check_nothing_stranded(env, flow, ids, child)


def test_stop_polling_from_inside_a_task_returns_and_reports_that_task(
    env: Env, spawn: Callable[..., Child]
) -> None:
    flow = lifecycle_flow(env, "stop_inside")
    ids = flow.start_many(WORKFLOWS)
    child = spawn("stop_inside", CHILD_COMMON + CHILD_STOP_INSIDE, flow, "inside")
    child.wait_for(lambda lines: any(line.startswith("stopper ") for line in lines), "'stopper'")
    child.wait_for(lambda lines: any(line.startswith("stop_polling ") for line in lines),
                   "the result of stop_polling(timeout=None) (deadlock?)")
    child.wait_exit()
    lines = child.snapshot()
    assert "stop_polling returned True" in lines, child.describe()
    assert "is_polling False" in lines, child.describe()
    assert child.proc.returncode == 0, child.describe()
    (stopper,) = [line.split()[1] for line in lines if line.startswith("stopper ")]
    workflow = env.executor.get_workflow(stopper)
    assert workflow.status is WorkflowStatus.COMPLETED, (workflow.status, workflow.tasks, child.describe())
    assert workflow.output["out"]["by"] == "child", workflow.output
    check_nothing_stranded(env, flow, ids, child)


def test_stop_polling_timeout_is_reported_truthfully(env: Env) -> None:
    flow = lifecycle_flow(env, "stop_timeout")
    entered, release = threading.Event(), threading.Event()

    @worker_task(flow.task_name, concurrency=1, poll_interval=50)
    def blocked(task: Task) -> Dict[str, object]:
        entered.set()
        release.wait(30)
        return {"i": task.input_data.get("i")}

    manager = env.manager([blocked])
    manager.start_polling()
    try:
        flow.start({"i": 0})
        assert entered.wait(10), "the worker never started the task"
        started = time.monotonic()
        drained: Optional[bool] = manager.stop_polling(timeout=1.0)
        took = time.monotonic() - started
        assert drained is False, "stop_polling claimed a drain while the task was still running"
        # it waited out its timeout, then returned, well before the task ends (at 30 s); a generous
        # upper bound, as a loaded machine can be slow to wake the caller
        assert 0.9 <= took < 10.0, f"stop_polling(timeout=1.0) took {took:.2f}s"
        assert manager.is_polling is False
    finally:
        release.set()
