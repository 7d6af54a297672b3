"""A workflow's tasks as the decider works on them: a list in schedule order with an index by
reference name, so that "which tasks have this name", "the latest task of this name" and "the
highest ``seq``" cost the same whatever the workflow's size.

The decider asks those questions for every task it schedules (a fork's thousands of branches, a
loop's every iteration); answered by scanning the list, each scheduled task cost more than the one
before it. The index follows the list lazily: appended tasks are indexed when the next question
comes, and any other change to the list (insert, remove, ...) rebuilds it then.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from .definitions import strip_iteration
from .model import JSON


class TaskList(List[JSON]):
    """A list of task documents, indexed by reference name.

    A task's ``referenceTaskName``, ``retryCount`` and ``seq`` must not change once it is in
    the list (the decider sets them before it appends a task); its other fields may.
    """

    def __init__(self, tasks: Iterable[JSON] = ()) -> None:
        super().__init__(tasks)
        self._indexed = 0
        self._by_ref: Dict[str, List[JSON]] = {}
        self._latest: Dict[str, JSON] = {}
        self._attempts: Set[Tuple[str, int]] = set()
        self._max_seq = 0

    # Questions ------------------------------------------------------------------------------
    def with_ref(self, ref: str) -> List[JSON]:
        """Every task named ``ref`` (its attempts), in list order."""
        self._catch_up()
        return self._by_ref.get(ref, [])

    def latest(self, name: str) -> Optional[JSON]:
        """What ``${name...}`` refers to: the task with the highest ``seq`` named ``name``, or a
        loop task of an iteration (``name__N``) when ``name`` has no ``__N`` suffix; at equal
        ``seq`` the later one in the list."""
        self._catch_up()
        return self._latest.get(name)

    def has_attempt(self, ref: str, retry_count: int) -> bool:
        self._catch_up()
        return (ref, retry_count) in self._attempts

    def max_seq(self) -> int:
        self._catch_up()
        return self._max_seq

    # The index ------------------------------------------------------------------------------
    def _catch_up(self) -> None:
        if self._indexed > len(self):
            self._forget()
        for task in self[self._indexed:]:
            ref = task["referenceTaskName"]
            self._by_ref.setdefault(ref, []).append(task)
            self._attempts.add((ref, task.get("retryCount") or 0))
            seq = task.get("seq") or 0
            self._max_seq = max(self._max_seq, seq)
            self._set_latest(ref, task, seq)
            if task.get("iteration"):
                self._set_latest(strip_iteration(ref), task, seq)
        self._indexed = len(self)

    def _set_latest(self, name: str, task: JSON, seq: int) -> None:
        current = self._latest.get(name)
        if current is None or seq >= (current.get("seq") or 0):
            self._latest[name] = task

    def _forget(self) -> None:
        self._indexed = 0
        self._by_ref.clear()
        self._latest.clear()
        self._attempts.clear()
        self._max_seq = 0

    # Changes other than appending rebuild the index on the next question.
    def insert(self, index: Any, task: JSON) -> None:
        super().insert(index, task)
        self._forget()

    def remove(self, task: JSON) -> None:
        super().remove(task)
        self._forget()

    def pop(self, index: Any = -1) -> JSON:
        task = super().pop(index)
        self._forget()
        return task

    def clear(self) -> None:
        super().clear()
        self._forget()

    def sort(self, *args: Any, **kwargs: Any) -> None:
        super().sort(*args, **kwargs)
        self._forget()

    def reverse(self) -> None:
        super().reverse()
        self._forget()

    def __setitem__(self, index: Any, value: Any) -> None:
        super().__setitem__(index, value)
        self._forget()

    def __delitem__(self, index: Any) -> None:
        super().__delitem__(index)
        self._forget()


def as_task_list(tasks: List[JSON]) -> TaskList:
    """``tasks`` itself if it is a :class:`TaskList`, else an indexed copy of it."""
    return tasks if isinstance(tasks, TaskList) else TaskList(tasks)


__all__ = ["TaskList", "as_task_list"]
