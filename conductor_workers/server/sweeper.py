"""The sweeper, the thread that enforces timeouts: it decides every workflow whose deadline (its
own or one of its tasks') has passed, and the sub-workflows started too deep to be decided at once
(see :mod:`.subworkflows`), then sleeps until the next deadline, at most ``sweep_interval`` (the
engine's :class:`Sweeper` mixin; :meth:`Engine.start` starts it).

It also goes on with the decides that ran out of time (:data:`~.decider.DECIDE_SLICE_SECONDS`: an
endless loop of system tasks, say): one slice of one such workflow at a time, round robin, with the
engine's lock given back for :data:`CONTINUE_PAUSE_SECONDS` after each, so that every other call
(and a shutdown) gets its turn.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from .model import JSON, now_ms
from .store import _Store
from .task_list import TaskList

log = logging.getLogger(__name__)

#: How long the sweeper leaves the engine's lock free between two slices of unfinished decides.
CONTINUE_PAUSE_SECONDS = 0.005


class Sweeper:
    """The timeout sweeper (a mixin of the engine)."""

    # what the engine provides
    _lock: Any
    _closed: bool
    _store: _Store
    _sweep_interval: float
    _sweeper_next: float
    _sweeper_wakeup: threading.Condition
    _deferred_decides: Deque[str]
    _unfinished_decides: Deque[str]
    _kept_for_next_slice: Dict[str, Tuple[JSON, TaskList, int]]
    _decide: Callable[[JSON, List[JSON]], None]

    # The sweeper ----------------------------------------------------------------------------
    def _sweep_loop(self) -> None:
        """Enforce timeouts: wake at the next deadline (at most every ``sweep_interval``)."""
        with self._lock:
            while not self._closed:
                clean = self._sweep_once()
                next_deadline = self._store.next_deadline() if clean else None
                wait = self._sweep_interval
                if self._unfinished_decides:
                    wait = CONTINUE_PAUSE_SECONDS
                elif next_deadline is not None:
                    wait = max(0.0, min(wait, (next_deadline - now_ms()) / 1000.0 + 0.001))
                self._sweeper_next = now_ms() + wait * 1000
                self._sweeper_wakeup.wait(wait)
                self._sweeper_next = 0.0

    def _continue_later(self, workflow_id: str) -> None:
        """Have the sweeper go on with deciding ``workflow_id`` (its decide ran out of time)."""
        if workflow_id not in self._unfinished_decides:
            self._unfinished_decides.append(workflow_id)
            self._sweeper_wakeup.notify()

    def _sweep_once(self) -> bool:
        """Decide the children left for it, every workflow with a passed deadline and the next
        unfinished decide; False if one failed."""
        clean = True
        deferred = list(self._deferred_decides)  # those they defer in turn wait for the next round
        self._deferred_decides.clear()
        if self._unfinished_decides:  # one slice of one of them per round: it may ask for another
            deferred.append(self._unfinished_decides.popleft())
        due = self._store.due_workflow_ids(now_ms())
        for workflow_id in deferred + [workflow_id for workflow_id in due if workflow_id not in deferred]:
            kept = self._kept_for_next_slice.pop(workflow_id, None)
            workflow: Optional[JSON] = None
            tasks: Optional[TaskList] = None
            try:
                with self._store.transaction():
                    if kept is not None and kept[2] == self._store.changes():
                        workflow, tasks = kept[0], kept[1]  # nothing was written since its last slice
                    else:
                        workflow = self._store.get_workflow(workflow_id)
                        tasks = TaskList(self._store.workflow_tasks(workflow_id)) if workflow is not None else None
                    if workflow is not None and tasks is not None:
                        log.debug("sweeper deciding %s", workflow_id)
                        self._decide(workflow, tasks)
            except Exception:  # keep the sweeper alive whatever one workflow does
                log.exception("sweeper failed to decide workflow %s", workflow_id)
                clean = False
                continue
            if workflow is not None and tasks is not None and workflow_id in self._unfinished_decides:
                # its next slice starts from these (loading a large workflow again costs as much as a slice)
                self._kept_for_next_slice[workflow_id] = (workflow, tasks, self._store.changes())
        return clean

    def sweep(self) -> None:
        """Run one sweep now (tests and tools)."""
        with self._lock:
            self._sweep_once()
