"""The engine behind :class:`~conductor_workers.server.LocalConductor`: the Conductor state machine.

The engine implements the Conductor server (conductor-oss 3.32.x) for workers and tests:
metadata (task and workflow definitions), workflow execution (start, decide, retry, timeouts,
terminate, pause/resume, retry/restart, remove), the task API (poll, long poll, update,
update-v2, update by reference name, logs, queue sizes, poll data), and the system tasks
(``SWITCH``, ``FORK_JOIN``, ``DO_WHILE``, ``SUB_WORKFLOW``, ... in :mod:`.system_tasks`; the
definition tree they walk is in :mod:`.definitions`).

:class:`Engine` is put together from one mixin per concern (:mod:`.metadata`, :mod:`.workflows`,
:mod:`.tasks`, :mod:`.decider`, :mod:`.timeouts`, :mod:`.retries`, :mod:`.sweeper`,
:mod:`.payloads`, :mod:`.system_tasks`, :mod:`.workflow_ops`, :mod:`.signals`,
:mod:`.mock_runs`) and has two collaborators of its own, :class:`~.search.Search` and
:class:`~.events.EventHandlers`; this module owns its state and life cycle, its transactions and the
persistence helpers that every operation uses.

Concurrency: one re-entrant lock guards the store; every public operation runs inside one
transaction while holding it. Long-poll waiters wait on a :class:`threading.Condition` per queue
(all built on that lock) and are notified the moment a task is pushed to their queue; delayed
entries are handled by the waiter itself, which sleeps until the next entry of its queue is due.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from typing import Deque, Dict, Iterable, Iterator, Optional, Set, Tuple

from .decider import Decider
from .definitions import SYSTEM_TASK_TYPES
from .events import EventHandlers
from .http_task import HTTP_POOL_THREADS, HttpCaller, HttpCallPool
from .metadata import Metadata
from .mock_runs import MockRuns
from .model import JSON, TASK_TERMINAL, WORKFLOW_TERMINAL, now_ms, queue_name
from .payloads import TASK_PAYLOADS, WORKFLOW_PAYLOADS, PayloadLimits, PayloadStorage
from .retries import Retries
from .scripts import ScriptLimits, Scripts
from .search import Search
from .signals import Signals
from .store import _Store
from .subworkflows import Trampoline
from .sweeper import Sweeper
from .task_list import TaskList
from .system_tasks import SystemTasks
from .tasks import Tasks
from .timeouts import Timeouts, _task_deadline, _workflow_deadline
from .workflow_ops import WorkflowOps
from .views import task_view
from .workflows import Workflows


class Engine(Metadata, Workflows, Tasks, Decider, Timeouts, Retries, Sweeper, PayloadStorage, SystemTasks,
             WorkflowOps, Signals, MockRuns):
    """The Conductor state machine. Every public method is thread-safe.

    Methods raise :class:`EngineError` subclasses for client errors; the HTTP layer maps them.
    ``http_allowed_hosts``: hosts HTTP tasks may call besides loopback ones (``"*"``: any).
    """

    def __init__(self, db_path: Optional[str] = None, sweep_interval: float = 0.5,
                 payload_limits: Optional[PayloadLimits] = None,
                 http_allowed_hosts: Iterable[str] = (), script_limits: Optional[ScriptLimits] = None) -> None:
        self.http_allowed_hosts = tuple(host.lower() for host in http_allowed_hosts)
        self._scripts = Scripts(script_limits)
        self._deciding: Set[str] = set()  # workflows being decided now (a child must not re-enter)
        self._deferred_decides: Deque[str] = deque()  # children too deep to decide at once (the sweeper does)
        self._unfinished_decides: Deque[str] = deque()  # decides that ran out of time (the sweeper goes on)
        self._kept_for_next_slice: Dict[str, Tuple[JSON, TaskList, int]] = {}  # their state, if unchanged
        self._parents_to_decide: Trampoline[str] = Trampoline(self._decide_parent)
        self._children_to_end: Trampoline[Tuple[str, str]] = Trampoline(self._end_child)
        self._lock = threading.RLock()
        self._store = _Store(db_path)
        self._sweep_interval = sweep_interval
        self._limits = payload_limits or PayloadLimits()
        # HTTP tasks: called on a bounded pool, reading no more than a task output may hold
        self._http_caller = HttpCaller(self.http_allowed_hosts, self._limits.task_max)
        self._http_pool = HttpCallPool(HTTP_POOL_THREADS, self._call_http)
        self._queue_waiters: Dict[str, threading.Condition] = {}
        self._sweeper_wakeup = threading.Condition(self._lock)
        self._sweeper_next = 0.0  # epoch ms the sweeper sleeps until
        self._sweeper: Optional[threading.Thread] = None
        self._closed = False
        # collaborators of their own: search on the index tables, the event-handler API
        self.search = Search(self._tx, lambda workflow: self._workflow_view(workflow, []), task_view)
        self.event_handlers = EventHandlers(self._tx)

    # Life cycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the sweeper thread."""
        self._sweeper = threading.Thread(target=self._sweep_loop, name="local-conductor-sweeper", daemon=True)
        self._sweeper.start()

    def wake_all(self) -> None:
        """Stop accepting long polls and release every waiting poller (used by shutdown)."""
        with self._lock:
            self._closed = True
            for condition in self._queue_waiters.values():
                condition.notify_all()
            self._sweeper_wakeup.notify_all()

    def stop_scripts(self) -> None:
        """Kill every script runner: a script under way ends now and its decide is rolled back, so
        that the engine's lock is free for the shutdown (the first step of stopping)."""
        self._scripts.close()

    def close(self) -> None:
        """Stop the scripts, the HTTP task pool and the sweeper, wake every waiter and close the database."""
        self.stop_scripts()
        self._http_pool.close()
        self.wake_all()
        if self._sweeper is not None:
            self._sweeper.join()
            self._sweeper = None
        with self._lock:
            self._store.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[_Store]:
        with self._lock, self._store.transaction():
            yield self._store

    # Persistence helpers --------------------------------------------------------------------
    def _save_task(self, task: JSON) -> None:
        """Persist ``task`` the way ExecutionDAOFacade.updateTask does (updateTime / endTime).

        A system task's output above the payload maximum fails the task here, whichever task
        produced it (INLINE, JSON_JQ_TRANSFORM, HTTP, ...); a worker's result is checked as it
        arrives (:meth:`~.tasks.Tasks.update_task`).
        """
        if task["taskType"] in SYSTEM_TASK_TYPES:
            self._fail_oversized_output(task)
        now = now_ms()
        terminal = task["status"] in TASK_TERMINAL
        if not terminal or not task.get("updateTime"):
            task["updateTime"] = now
        if terminal and not task.get("endTime"):
            task["endTime"] = now
        self._persist_task(task)

    def _persist_task(self, task: JSON) -> None:
        self._externalize(task, TASK_PAYLOADS, self._limits.task_threshold)
        deadline = _task_deadline(task)
        self._store.put_task(task, deadline)
        if deadline is not None and deadline < self._sweeper_next:
            self._sweeper_wakeup.notify()

    def _save_workflow(self, workflow: JSON) -> None:
        self._externalize(workflow, WORKFLOW_PAYLOADS, self._limits.workflow_threshold)
        workflow["updateTime"] = now_ms()
        if workflow["status"] in WORKFLOW_TERMINAL:
            workflow["endTime"] = now_ms()
        deadline = _workflow_deadline(workflow)
        self._store.put_workflow(workflow, deadline)
        if deadline is not None and deadline < self._sweeper_next:
            self._sweeper_wakeup.notify()

    def _push(self, task: JSON, delay_ms: int) -> None:
        queue = queue_name(task["taskType"], task.get("domain"))
        self._store.push(task["taskId"], queue, task.get("workflowPriority") or 0, now_ms() + delay_ms)
        condition = self._queue_waiters.get(queue)
        if condition is not None:
            condition.notify_all()


__all__ = ["Engine"]
