"""Worker definitions: options, @worker_task argument binding, and turning results into TaskResults.

This module uses ``from __future__ import annotations`` on purpose: every annotation below is a
string, as in users' code on Python 3.9 with that import. Real (evaluated) annotations are made with
``_compile_plain`` instead.
"""
from __future__ import annotations

import dataclasses
import types
from typing import Any, Dict, Optional

import attrs
import pytest

import conductor_workers
from conductor_workers.errors import ConductorError, InvalidOptionError, NonRetryableError
from conductor_workers.models import Task, TaskDef, TaskExecLog, TaskResult, TaskResultStatus
from conductor_workers.worker import (
    FunctionWorker,
    Worker,
    add_log,
    current_task,
    run_task,
    to_task_result,
    worker_task,
)


def make_task(**input_data: Any) -> Task:
    return Task(task_id="t-1", workflow_instance_id="w-1", task_type="greet", input_data=input_data)


def _compile_plain(source: str) -> Dict[str, Any]:
    """Run ``source`` WITHOUT this module's ``from __future__ import annotations``."""
    namespace: Dict[str, Any] = {"Task": Task, "Dict": Dict, "Any": Any}
    exec(compile(source, "<plain>", "exec", dont_inherit=True), namespace)
    return namespace


# -- Worker subclasses -----------------------------------------------------------------------------


class ClassOptionsWorker(Worker):
    task_def_name = "class_task"
    concurrency = 4
    poll_interval = 250
    domain = "blue"

    def execute(self, task: Task) -> Dict[str, Any]:
        return {"echo": task.input_data.get("x")}


def test_class_attribute_options():
    w = ClassOptionsWorker()
    assert w.task_def_name == "class_task"
    assert w.own_options() == {"concurrency": 4, "poll_interval": 250, "domain": "blue"}
    assert w.execute(make_task(x=1)) == {"echo": 1}
    assert w.register_task_def is False and w.task_def is None
    assert "class_task" in repr(w)


def test_constructor_options_override_class_attributes():
    td = TaskDef(name="other_name", retry_count=0)
    w = ClassOptionsWorker("other_name", concurrency=9, paused=True, register_task_def=True, task_def=td)
    assert w.task_def_name == "other_name"
    assert w.own_options() == {"concurrency": 9, "poll_interval": 250, "domain": "blue", "paused": True}
    assert w.register_task_def is True and w.task_def is td
    # The class itself is untouched.
    assert ClassOptionsWorker.concurrency == 4
    assert ClassOptionsWorker().own_options()["concurrency"] == 4


def test_own_options_empty_and_false_values_are_kept():
    class Plain(Worker):
        def execute(self, task):
            return None

    assert Plain("plain").own_options() == {}
    # False and 0 are real settings, not "unset".
    explicit = Plain("plain", paused=False, poll_interval=0)
    assert explicit.own_options() == {"paused": False, "poll_interval": 0}


def test_worker_needs_a_name_and_known_options():
    class Nameless(Worker):
        def execute(self, task):
            return None

    with pytest.raises(InvalidOptionError, match="task_def_name"):
        Nameless()
    with pytest.raises(InvalidOptionError, match="task_def_name"):
        Nameless("")
    with pytest.raises(InvalidOptionError, match="thread_count"):
        Nameless("x", thread_count=3)


def test_base_execute_not_implemented():
    with pytest.raises(NotImplementedError, match="Bare"):
        type("Bare", (Worker,), {})("bare").execute(make_task())


def test_async_execute_subclass_rejected():
    class AsyncWorker(Worker):
        task_def_name = "async_task"

        async def execute(self, task):  # type: ignore[override]
            return {}

    with pytest.raises(InvalidOptionError) as info:
        AsyncWorker()
    assert "async def" in str(info.value)
    assert "AsyncWorker" in str(info.value)
    assert isinstance(info.value, ValueError)


# -- @worker_task: binding -------------------------------------------------------------------------


def test_single_param_named_task_gets_the_task():
    @worker_task("by_name")
    def fn(task):
        return {"id": task.task_id, "input": task.input_data}

    assert isinstance(fn, FunctionWorker) and isinstance(fn, Worker)
    assert fn.task_def_name == "by_name"
    t = make_task(task="not this")
    assert fn.execute(t) == {"id": "t-1", "input": {"task": "not this"}}


def test_single_param_annotated_task_string_annotation():
    @worker_task("annotated")
    def fn(incoming: Task) -> dict:
        return {"type": incoming.task_type}

    assert fn.__annotations__["incoming"] == "Task"  # really a string here
    assert fn.execute(make_task()) == {"type": "greet"}


def test_single_param_annotated_dotted_string():
    @worker_task("dotted")
    def fn(t: conductor_workers.Task):
        return {"type": t.task_type}

    assert fn.execute(make_task()) == {"type": "greet"}


def test_single_param_annotated_task_real_annotation():
    ns = _compile_plain("def fn(t: Task):\n    return {'id': t.task_id}\n")
    assert ns["fn"].__annotations__["t"] is Task
    w = worker_task("plain_annotated")(ns["fn"])
    assert w.execute(make_task()) == {"id": "t-1"}


def test_single_param_other_name_binds_from_input():
    @worker_task("greet")
    def greet(name: str) -> dict:
        return {"greeting": f"Hello {name}"}

    assert greet.execute(make_task(name="Ada", extra=1)) == {"greeting": "Hello Ada"}

    ns = _compile_plain("def greet2(name: str):\n    return {'greeting': name}\n")
    assert worker_task("greet2")(ns["greet2"]).execute(make_task(name="Bo")) == {"greeting": "Bo"}


def test_keyword_binding_defaults_and_keyword_only():
    @worker_task("kw")
    def fn(a, b=2, *, c, d="dd"):
        return {"a": a, "b": b, "c": c, "d": d}

    assert fn.execute(make_task(a=1, c=3, ignored=9)) == {"a": 1, "b": 2, "c": 3, "d": "dd"}
    assert fn.execute(make_task(a=1, b=None, c=3, d="x")) == {"a": 1, "b": None, "c": 3, "d": "x"}


def test_missing_required_key_is_non_retryable_and_names_the_key():
    @worker_task("needs")
    def fn(name, count=1):
        return {}

    with pytest.raises(NonRetryableError) as info:
        fn.execute(make_task(other=1, count=2))
    message = str(info.value)
    assert "'name'" in message
    assert "other" in message and "count" in message  # lists the keys that were there
    assert isinstance(info.value, ConductorError)
    with pytest.raises(NonRetryableError, match="none"):
        fn.execute(make_task())


def test_var_kwargs_receives_the_rest():
    @worker_task("rest")
    def fn(a, **rest):
        return {"a": a, "rest": rest}

    assert fn.execute(make_task(a=1, b=2, c=3)) == {"a": 1, "rest": {"b": 2, "c": 3}}

    @worker_task("only_rest")
    def only(**kwargs):
        return dict(kwargs)

    assert only.execute(make_task(x=1, task="t")) == {"x": 1, "task": "t"}


def test_no_parameters():
    @worker_task("noargs")
    def fn():
        return {"ok": True}

    assert fn.execute(make_task(x=1)) == {"ok": True}


def test_two_params_one_named_task_binds_from_input():
    @worker_task("two")
    def fn(task, other=None):
        return {"task": task, "other": other}

    assert fn.execute(make_task(task="from input", other=5)) == {"task": "from input", "other": 5}


def test_decorated_function_still_callable_and_wrapped():
    @worker_task("callable", concurrency=3, domain="d", register_task_def=True)
    def add(a: int, b: int = 1) -> int:
        """Add two numbers."""
        return a + b

    assert add(2, 3) == 5
    assert add(a=4) == 5
    assert add.__name__ == "add"
    assert add.__doc__ == "Add two numbers."
    assert add.__wrapped__(1, 1) == 2
    assert add.own_options() == {"concurrency": 3, "domain": "d"}
    assert add.register_task_def is True
    assert "callable" in repr(add) and "add" in repr(add)
    assert add.execute(make_task(a=10)) == 11


def test_worker_task_rejects_bad_options():
    with pytest.raises(InvalidOptionError, match="bogus"):
        worker_task("x", bogus=1)(lambda: None)


def test_async_function_rejected_at_registration():
    async def fetch(url):
        return {}

    with pytest.raises(InvalidOptionError) as info:
        worker_task("async_fn")(fetch)
    assert "async def" in str(info.value)
    assert "fetch" in str(info.value)


def test_async_function_with_task_param_rejected():
    with pytest.raises(InvalidOptionError):

        @worker_task("async_fn2")
        async def handle(task: Task):
            return None


# -- to_task_result ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Point:
    x: int
    y: int
    tags: list = dataclasses.field(default_factory=list)


@attrs.define
class Greeting:
    text: str
    inner: Optional[Dict[str, Any]] = None


def test_to_task_result_dict_and_mapping():
    result = to_task_result({"a": 1})
    assert result.status is TaskResultStatus.COMPLETED
    assert result.output_data == {"a": 1}
    assert result.task_id == "" and result.workflow_instance_id == ""
    proxy = types.MappingProxyType({"b": 2})
    assert to_task_result(proxy).output_data == {"b": 2}


def test_to_task_result_none():
    result = to_task_result(None)
    assert result.status is TaskResultStatus.COMPLETED and result.output_data == {}


def test_to_task_result_passes_task_result_through():
    given = TaskResult.in_progress(5, {"p": 1})
    assert to_task_result(given) is given


def test_to_task_result_dataclass_and_attrs():
    assert to_task_result(Point(1, 2, ["a"])).output_data == {"x": 1, "y": 2, "tags": ["a"]}
    assert to_task_result(Greeting("hi", {"k": 1})).output_data == {"text": "hi", "inner": {"k": 1}}


def test_dataclass_class_itself_is_not_an_instance():
    with pytest.raises(TypeError):
        to_task_result(Point)


@pytest.mark.parametrize("value", ["text", 3, 2.5, True, False, 0, ""])
def test_to_task_result_scalar(value):
    result = to_task_result(value)
    assert result.output_data == {"result": value}
    assert result.status is TaskResultStatus.COMPLETED


def test_to_task_result_list_and_tuple():
    assert to_task_result([1, {"a": 2}]).output_data == {"result": [1, {"a": 2}]}
    assert to_task_result((1, 2)).output_data["result"] == (1, 2)
    assert to_task_result([]).output_data == {"result": []}


@pytest.mark.parametrize("value", [object(), {1, 2}, b"bytes", Exception("x")])
def test_to_task_result_arbitrary_object_is_a_type_error(value):
    with pytest.raises(TypeError) as info:
        to_task_result(value)
    message = str(info.value)
    assert type(value).__name__ in message
    assert "return a dict" in message


# -- add_log / current_task -------------------------------------------------------------------------


def test_add_log_outside_execute_raises():
    assert current_task() is None
    with pytest.raises(RuntimeError, match="outside"):
        add_log("hello")
    with pytest.raises(RuntimeError):
        conductor_workers.add_log("hello")


def test_add_log_and_current_task_inside_execute():
    seen = []

    @worker_task("logs")
    def fn(task):
        seen.append(current_task())
        add_log("first")
        add_log(42)
        return TaskResult.complete({"ok": True}, logs=[TaskExecLog(log="own", task_id="t-1", created_time=1)])

    task = make_task()
    result, error = run_task(fn, task)
    assert error is None
    assert seen == [task]
    assert current_task() is None
    assert [entry.log for entry in result.logs] == ["first", "42", "own"]
    assert all(isinstance(entry, TaskExecLog) and entry.task_id == "t-1" for entry in result.logs)
    assert result.logs[0].created_time > 1_600_000_000_000
    assert (result.task_id, result.workflow_instance_id) == ("t-1", "w-1")
    with pytest.raises(RuntimeError):
        add_log("after")


def test_context_is_per_thread():
    import threading

    seen = []

    @worker_task("threads")
    def fn(task):
        thread = threading.Thread(target=lambda: seen.append(current_task()))
        thread.start()
        thread.join()
        seen.append(current_task())

    run_task(fn, make_task())
    assert seen[0] is None and seen[1] is not None


# -- run_task: what a runner reports -------------------------------------------------------------------


def test_run_task_missing_key_fails_terminally_naming_it():
    @worker_task("needs_name")
    def fn(name):
        return {}

    result, error = run_task(fn, make_task(other=1))
    assert isinstance(error, NonRetryableError)
    assert result.status is TaskResultStatus.FAILED_WITH_TERMINAL_ERROR
    assert "'name'" in result.reason_for_incompletion
    assert result.task_id == "t-1"


def test_run_task_exception_fails_with_reason_and_traceback():
    class Boom(Worker):
        task_def_name = "boom"

        def execute(self, task):
            add_log("before")
            raise KeyError("missing thing")

    result, error = run_task(Boom(), make_task())
    assert isinstance(error, KeyError)
    assert result.status is TaskResultStatus.FAILED
    assert "missing thing" in result.reason_for_incompletion
    assert result.logs[0].log == "before"
    assert "Traceback" in result.logs[1].log and "KeyError" in result.logs[1].log


def test_run_task_unreturnable_value_fails_with_reason():
    @worker_task("bad_return")
    def fn():
        return object()

    result, error = run_task(fn, make_task())
    assert isinstance(error, TypeError)
    assert result.status is TaskResultStatus.FAILED
    assert "object" in result.reason_for_incompletion


def test_run_task_keeps_ids_a_worker_set_itself():
    @worker_task("own_ids")
    def fn(task):
        return TaskResult.in_progress(5, task_id="explicit", workflow_instance_id="wf-x")

    result, error = run_task(fn, make_task())
    assert error is None
    assert (result.task_id, result.workflow_instance_id) == ("explicit", "wf-x")
    assert result.status is TaskResultStatus.IN_PROGRESS and result.callback_after_seconds == 5


def test_runner_status_is_a_frozen_value_with_json_ready_dict() -> None:
    import json

    import attrs
    import pytest

    from conductor_workers import ConductorClient, Configuration, PollingOptions, RunnerStatus, TaskRunner, Worker

    client = ConductorClient(Configuration(server_url="http://127.0.0.1:9/api"))
    try:
        runner = TaskRunner(Worker("never_started"), client, PollingOptions(concurrency=3, time_limit=2.5))
        status = runner.status()
    finally:
        client.close()
    assert isinstance(status, RunnerStatus)
    assert (status.polling, status.in_flight, status.overrunning, status.tasks_received) == (False, 0, (), 0)
    assert status.executions_completed == status.executions_failed == status.reports_failed == 0
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        status.in_flight = 1  # type: ignore[misc]
    data = json.loads(json.dumps(status.to_dict()))
    assert data["options"]["concurrency"] == 3 and data["options"]["time_limit"] == 2.5
    assert data["overrunning"] == [] and data["task_type"] == "never_started"


def test_task_def_takes_the_workers_name_or_must_match_it() -> None:
    import pytest

    from conductor_workers import InvalidOptionError, TaskDef, Worker, worker_task

    worker = Worker("resize", register_task_def=True, task_def=TaskDef(retry_count=5))
    assert worker.task_def is not None and worker.task_def.name == "resize" and worker.task_def.retry_count == 5
    assert Worker("resize", task_def=TaskDef(name="resize")).task_def.name == "resize"  # type: ignore[union-attr]
    with pytest.raises(InvalidOptionError, match="named 'other', but the worker polls 'resize'"):
        Worker("resize", task_def=TaskDef(name="other"))

    class Declared(Worker):
        task_def_name = "declared"
        task_def = TaskDef(timeout_seconds=60)

    assert Declared().task_def.name == "declared"  # type: ignore[union-attr]
    assert Declared.task_def.name == ""  # the class attribute itself is left alone

    @worker_task("fn_task", register_task_def=True, task_def=TaskDef(retry_count=1))
    def fn() -> None:
        return None

    assert fn.task_def is not None and fn.task_def.name == "fn_task"
