"""Defining workers: subclass :class:`Worker`, or decorate a function with :func:`worker_task`.

Inside ``execute`` the current task is available from :func:`current_task`, and :func:`add_log`
appends lines to the task's execution log; they travel with the result, whatever it is.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import threading
import time
import traceback
from collections import abc
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import attrs

from .errors import InvalidOptionError, NonRetryableError, TimeLimitExceeded
from .models import Task, TaskDef, TaskExecLog, TaskResult, TaskResultStatus
from .options import OPTION_NAMES, check_option_names

WorkerResult = Union[TaskResult, Mapping[str, Any], None, Any]

_local = threading.local()


class TaskContext:
    """What the runner knows about the task a thread is executing (see :func:`current_context`).

    ``time_limit`` is the limit in force when the task started (seconds, None without one) and
    ``deadline`` the ``time.monotonic()`` it ends at; :meth:`time_remaining` is what a worker that
    checks cooperatively reads. :meth:`report_now` settles the task's result early, from any thread.

    Past the deadline, :meth:`expire` (the time-limit watchdog) settles the task FAILED, and the next
    *safe point* the worker's own thread reaches (:meth:`check_time_limit`, :meth:`add_log`) raises
    :class:`~conductor_workers.TimeLimitExceeded`, once. Nothing is ever raised into the thread from
    outside: an interruption can then never land inside a lock, ours or the standard library's.
    """

    __slots__ = (
        "task", "logs", "time_limit", "time_limit_terminal", "deadline", "_lock", "_settled", "_reporter",
        "early_result", "reported_at", "_interrupted",
    )

    def __init__(
        self,
        task: Task,
        time_limit: Optional[float] = None,
        reporter: Optional[Callable[[TaskResult], None]] = None,
        *,
        time_limit_terminal: bool = False,
    ) -> None:
        self.task = task
        self.logs: List[TaskExecLog] = []
        self.time_limit = time_limit
        self.time_limit_terminal = time_limit_terminal
        self.deadline = None if time_limit is None else time.monotonic() + time_limit
        self._lock = threading.Lock()  # guards _settled and early_result
        self._settled = False
        self._reporter = reporter
        #: the result :meth:`report_now` settled the task with, None until then
        self.early_result: Optional[TaskResult] = None
        #: ``time.time()`` when :meth:`report_now` settled the task, None until then
        self.reported_at: Optional[float] = None
        self._interrupted = False  # TimeLimitExceeded was raised at a safe point (only the task's thread)

    def add_log(self, message: str) -> None:
        """Append a line to the task's execution log; a safe point (see :meth:`check_time_limit`)."""
        self.append_log(message)
        self.check_time_limit()

    def append_log(self, message: str) -> None:
        """Append a line to the task's execution log; never raises (what the runner itself uses)."""
        self.logs.append(
            TaskExecLog(log=str(message), task_id=self.task.task_id, created_time=int(time.time() * 1000))
        )

    def time_remaining(self) -> Optional[float]:
        """Seconds left before the task's time limit (negative once past it); None without a limit."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def check_time_limit(self) -> None:
        """A safe point: raise :class:`~conductor_workers.TimeLimitExceeded` once the time limit has passed.

        Raised once per task (a worker may clean up, log and return after catching it); the task is
        reported FAILED first, if the watchdog has not done so already. Call it from the worker's own
        thread, in loops that may run long.
        """
        deadline = self.deadline
        if deadline is None or self._interrupted or time.monotonic() < deadline:
            return
        self._interrupted = True
        self.expire()
        raise TimeLimitExceeded(self.exceeded_message())

    def exceeded_message(self) -> str:
        return f"the task ran longer than its time_limit of {self.time_limit:g} s"

    def expire(self) -> bool:
        """Settle the task FAILED over its time limit and report it now; False when already settled."""
        reason = f"time limit exceeded: {self.exceeded_message()}"
        return self.report_now(TaskResult.failed(reason, terminal=self.time_limit_terminal))

    @property
    def expired(self) -> bool:
        """The task was settled early (over its time limit): whatever ``execute`` returns is discarded."""
        return self.early_result is not None

    def report_now(self, result: TaskResult) -> bool:
        """Settle the task with ``result`` now, from any thread, while ``execute`` may still run.

        The runner reports it at once; whatever ``execute`` returns later is discarded (and the
        task's slot stays taken until it does return). The lines logged so far travel with it.
        False, and nothing happens, when the task's result was settled already.
        """
        with self._lock:
            if self._settled:
                return False
            self._settled = True
            result = attrs.evolve(
                result,
                task_id=result.task_id or self.task.task_id,
                workflow_instance_id=result.workflow_instance_id or self.task.workflow_instance_id,
                logs=list(self.logs) + list(result.logs),
            )
            self.early_result = result
            self.reported_at = time.time()
        if self._reporter is not None:
            self._reporter(result)
        return True

    def _claim(self) -> bool:
        """Settle the task with what ``execute`` returned (see :func:`run_task`); False when
        :meth:`report_now` settled it first."""
        with self._lock:
            if self._settled:
                return False
            self._settled = True
            return True


def current_context() -> Optional[TaskContext]:
    """The :class:`TaskContext` of the task this thread is executing, or None outside ``execute``."""
    return getattr(_local, "context", None)


def time_remaining() -> Optional[float]:
    """Seconds left before the current task's ``time_limit``; None without a limit or outside ``execute``."""
    context: Optional[TaskContext] = getattr(_local, "context", None)
    return context.time_remaining() if context is not None else None


def check_time_limit() -> None:
    """A safe point for the current task's ``time_limit``: raises
    :class:`~conductor_workers.TimeLimitExceeded` (once) when it has passed; a no-op without a limit or
    outside ``execute``. Call it in loops that may run long."""
    context: Optional[TaskContext] = getattr(_local, "context", None)
    if context is not None:
        context.check_time_limit()


def current_task() -> Optional[Task]:
    """The task this thread is executing, or None outside ``execute``."""
    context: Optional[TaskContext] = getattr(_local, "context", None)
    return context.task if context is not None else None


def add_log(message: str) -> None:
    """Append a line to the current task's execution log (sent with its result).

    Outside ``execute`` this raises ``RuntimeError``: there is no task to attach the line to. Inside,
    it is a safe point for the task's time limit (see :func:`check_time_limit`).
    """
    context: Optional[TaskContext] = getattr(_local, "context", None)
    if context is None:
        raise RuntimeError("add_log() called outside a worker's execute()")
    context.add_log(message)


class Worker:
    """A worker for one task type. Subclass it and implement :meth:`execute`.

    Polling options (the fields of :class:`~conductor_workers.PollingOptions`: ``poll_interval`` in
    ms, ``concurrency``, ``domain``, ``worker_id``, ``batch_poll_timeout`` in ms, ``paused``,
    ``lease_extend``, ``time_limit`` in s, ``time_limit_terminal``) may be class attributes or
    constructor keywords; unset ones come from the manager's options, the environment, or defaults.
    ``register_task_def=True`` registers ``task_def`` (or a default definition) when polling starts;
    a ``task_def`` without a name gets the worker's task type, one with another name is refused.
    A definition the server already has is replaced only when ``overwrite_task_def`` is True, or is
    left unset (None) while a ``task_def`` is given: the definition in code is then the source. A
    bare ``register_task_def=True`` (no ``task_def``) keeps the server's definition as it is.
    """

    task_def_name: str = ""
    register_task_def: bool = False
    task_def: Optional[TaskDef] = None
    overwrite_task_def: Optional[bool] = None

    def __init__(
        self,
        task_def_name: Optional[str] = None,
        *,
        register_task_def: Optional[bool] = None,
        task_def: Optional[TaskDef] = None,
        overwrite_task_def: Optional[bool] = None,
        **options: Any,
    ) -> None:
        check_option_names(options)
        if task_def_name is not None:
            self.task_def_name = task_def_name
        if not self.task_def_name or not isinstance(self.task_def_name, str):
            raise InvalidOptionError(f"{type(self).__name__} needs a task_def_name (a non-empty string)")
        for name, value in options.items():
            setattr(self, name, value)
        if register_task_def is not None:
            self.register_task_def = register_task_def
        if task_def is not None:
            self.task_def = task_def
        if overwrite_task_def is not None:
            self.overwrite_task_def = overwrite_task_def
        if self.overwrite_task_def is not None and not isinstance(self.overwrite_task_def, bool):
            raise InvalidOptionError(f"overwrite_task_def must be True, False or None, got {self.overwrite_task_def!r}")
        if self.task_def is not None:  # given here or as a class attribute
            if not isinstance(self.task_def, TaskDef):
                raise InvalidOptionError(f"task_def must be a TaskDef, got {type(self.task_def).__name__}")
            if not self.task_def.name:
                self.task_def = attrs.evolve(self.task_def, name=self.task_def_name)
            elif self.task_def.name != self.task_def_name:
                raise InvalidOptionError(
                    f"task_def is named {self.task_def.name!r}, but the worker polls {self.task_def_name!r}; "
                    "give it the worker's task type (or no name)"
                )
        if inspect.iscoroutinefunction(type(self).execute):
            raise InvalidOptionError(
                f"{type(self).__name__}.execute is 'async def'; conductor_workers runs workers on threads: "
                "make it a plain function (call asyncio.run() inside it if you must)"
            )

    def execute(self, task: Task) -> WorkerResult:
        """Run the task. Return a dict (COMPLETED with that output), None, or a TaskResult; raise to fail."""
        raise NotImplementedError(f"{type(self).__name__} must implement execute(task)")

    def own_options(self) -> Dict[str, Any]:
        """The polling options this worker sets itself (class attributes or constructor keywords)."""
        found = {name: getattr(self, name, None) for name in OPTION_NAMES}
        return {name: value for name, value in found.items() if value is not None}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.task_def_name!r}>"


def _wants_task(fn: Callable[..., Any]) -> bool:
    params = [p for p in inspect.signature(fn).parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if len(params) != 1:
        return False
    only = params[0]
    annotation = only.annotation
    # Annotations are strings under ``from __future__ import annotations``; never evaluate them.
    if isinstance(annotation, str):
        return only.name == "task" or annotation.split(".")[-1].strip("'\"") == "Task"
    return only.name == "task" or annotation is Task


class FunctionWorker(Worker):
    """A :class:`Worker` made from a plain function by :func:`worker_task`. Calling it calls the function."""

    def __init__(self, fn: Callable[..., Any], task_def_name: str, **options: Any) -> None:
        if inspect.iscoroutinefunction(fn):
            raise InvalidOptionError(
                f"{fn.__qualname__} is 'async def'; conductor_workers runs workers on threads: "
                "make it a plain function"
            )
        super().__init__(task_def_name, **options)
        self.fn = fn
        self._pass_task = _wants_task(fn)
        signature = inspect.signature(fn)
        self._params = [
            p for p in signature.parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        self._takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def execute(self, task: Task) -> WorkerResult:
        if self._pass_task:
            return self.fn(task)
        return self.fn(**self._bind(task.input_data))

    def _bind(self, input_data: Mapping[str, Any]) -> Dict[str, Any]:
        kwargs: Dict[str, Any] = {}
        for param in self._params:
            if param.name in input_data:
                kwargs[param.name] = input_data[param.name]
            elif param.default is param.empty:
                raise NonRetryableError(
                    f"task input has no {param.name!r}, which {self.fn.__qualname__}() requires"
                    f" (input keys: {', '.join(sorted(input_data)) or 'none'})"
                )
        if self._takes_kwargs:
            kwargs.update({key: value for key, value in input_data.items() if key not in kwargs})
        return kwargs

    def __repr__(self) -> str:
        return f"<worker_task {self.task_def_name!r} -> {self.fn.__qualname__}>"


def worker_task(task_def_name: str, **options: Any) -> Callable[[Callable[..., Any]], FunctionWorker]:
    """Turn a function into a :class:`Worker` for ``task_def_name``.

    ``def greet(task)`` (or one parameter annotated ``Task``) receives the :class:`Task`; any other
    signature receives the task's input keys as keyword arguments. Options are those of
    :class:`Worker` (``concurrency=4``, ``poll_interval=100``, ``register_task_def=True``, ...).
    """

    def decorate(fn: Callable[..., Any]) -> FunctionWorker:
        return FunctionWorker(fn, task_def_name, **options)

    return decorate


# -- turning what execute() returned into a TaskResult ------------------------------------------


def _as_output(value: Any) -> Dict[str, Any]:
    if type(value) is dict:
        return value  # the common case; the runner never mutates it
    if isinstance(value, abc.Mapping):
        return dict(value)
    if attrs.has(type(value)):
        return attrs.asdict(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (str, int, float, bool, list, tuple)):
        return {"result": value}  # the official Python SDK's convention for scalars
    raise TypeError(
        f"a worker returned {type(value).__name__}; return a dict, a dataclass/attrs instance, "
        "a JSON scalar or list, None, or a TaskResult"
    )


def to_task_result(value: WorkerResult) -> TaskResult:
    """What ``execute`` returned, as a TaskResult (ids not filled in yet)."""
    if isinstance(value, TaskResult):
        return value
    if value is None:
        return TaskResult.complete()
    return TaskResult(status=TaskResultStatus.COMPLETED, output_data=_as_output(value))  # no second copy


Handler = Callable[[Task], TaskResult]


def run_task(
    worker: Worker,
    task: Task,
    *,
    worker_id: Optional[str] = None,
    handler: Optional[Handler] = None,
    context: Optional[TaskContext] = None,
) -> Tuple[TaskResult, Optional[BaseException]]:
    """Execute ``task`` with ``worker`` exactly as a runner does; never raises.

    Returns the result addressed to the task (ids filled in, ``worker_id`` unless the worker set
    one, context logs attached) and the exception that escaped, if any: ``NonRetryableError``
    gives FAILED_WITH_TERMINAL_ERROR, anything else FAILED with the message as reason and the
    traceback in the logs. ``handler`` is what to call instead of ``worker.execute`` (the worker
    wrapped in middleware, see :func:`conductor_workers.middleware.chain`).

    The ``context`` is settled here, with the returned result: a :meth:`TaskContext.report_now`
    (or the time limit) can no longer happen afterwards. When one happened first,
    ``context.expired`` is true and the result returned is not to be reported (the early one was).
    """
    if context is None:
        context = TaskContext(task)
    _local.context = context
    error: Optional[BaseException] = None
    try:
        result = handler(task) if handler is not None else to_task_result(worker.execute(task))
    except NonRetryableError as exc:
        error = exc
        result = TaskResult.failed(str(exc) or type(exc).__name__, terminal=True)
    except BaseException as exc:  # noqa: BLE001 - whatever the worker raises fails its task
        error = exc
        context.append_log("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        result = TaskResult.failed(str(exc) or type(exc).__name__)
    finally:
        _local.context = None
    result = attrs.evolve(
        result,
        task_id=result.task_id or task.task_id,
        workflow_instance_id=result.workflow_instance_id or task.workflow_instance_id,
        worker_id=result.worker_id or worker_id,
        logs=context.logs + list(result.logs) if context.logs else result.logs,
    )
    context._claim()  # False when settled early: context.expired tells the caller
    return result, error


# run_task(): the runtime's (and conductor_workers.testing's), not exported
__all__ = [
    "FunctionWorker",
    "TaskContext",
    "Worker",
    "add_log",
    "check_time_limit",
    "current_context",
    "current_task",
    "time_remaining",
    "to_task_result",
    "worker_task",
]
