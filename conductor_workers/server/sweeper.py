"""The sweeper, the thread that enforces timeouts: it decides every workflow whose deadline (its
own or one of its tasks') has passed, and the sub-workflows started too deep to be decided at once
(see :mod:`.subworkflows`), then sleeps until the next deadline, at most ``sweep_interval`` (the
engine's :class:`Sweeper` mixin; :meth:`Engine.start` starts it)."""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Deque, List

from .model import JSON, now_ms
from .store import _Store

log = logging.getLogger(__name__)


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
    _decide: Callable[[JSON, List[JSON]], None]

    # The sweeper ----------------------------------------------------------------------------
    def _sweep_loop(self) -> None:
        """Enforce timeouts: wake at the next deadline (at most every ``sweep_interval``)."""
        with self._lock:
            while not self._closed:
                clean = self._sweep_once()
                next_deadline = self._store.next_deadline() if clean else None
                wait = self._sweep_interval
                if next_deadline is not None:
                    wait = max(0.0, min(wait, (next_deadline - now_ms()) / 1000.0 + 0.001))
                self._sweeper_next = now_ms() + wait * 1000
                self._sweeper_wakeup.wait(wait)
                self._sweeper_next = 0.0

    def _sweep_once(self) -> bool:
        """Decide the children left for it and every workflow with a passed deadline; False if one failed."""
        clean = True
        deferred = list(self._deferred_decides)  # those they defer in turn wait for the next round
        self._deferred_decides.clear()
        due = self._store.due_workflow_ids(now_ms())
        for workflow_id in deferred + [workflow_id for workflow_id in due if workflow_id not in deferred]:
            try:
                with self._store.transaction():
                    workflow = self._store.get_workflow(workflow_id)
                    if workflow is not None:
                        log.debug("sweeper deciding %s", workflow_id)
                        self._decide(workflow, self._store.workflow_tasks(workflow_id))
            except Exception:  # keep the sweeper alive whatever one workflow does
                log.exception("sweeper failed to decide workflow %s", workflow_id)
                clean = False
        return clean

    def sweep(self) -> None:
        """Run one sweep now (tests and tools)."""
        with self._lock:
            self._sweep_once()
