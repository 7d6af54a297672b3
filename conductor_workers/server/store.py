"""SQLite persistence: the schema and :class:`_Store`, where every piece of state lives (task and
workflow definitions, workflows, tasks, queue entries with their due times, poll data, task logs
and external payloads)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from .model import JSON, clamp_ms

_SCHEMA = """
CREATE TABLE IF NOT EXISTS task_defs (name TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS workflow_defs (
    name TEXT NOT NULL, version INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS workflows (
    workflow_id TEXT PRIMARY KEY, name TEXT NOT NULL, version INTEGER NOT NULL,
    status TEXT NOT NULL, deadline INTEGER, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS workflows_by_name ON workflows (name, version, status);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY, workflow_id TEXT NOT NULL, seq INTEGER NOT NULL,
    status TEXT NOT NULL, deadline INTEGER, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS tasks_by_workflow ON tasks (workflow_id, seq);
CREATE INDEX IF NOT EXISTS tasks_by_deadline ON tasks (deadline) WHERE deadline IS NOT NULL;
CREATE TABLE IF NOT EXISTS queue (
    task_id TEXT PRIMARY KEY, queue_name TEXT NOT NULL, priority INTEGER NOT NULL,
    due INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS queue_by_priority ON queue (queue_name, priority DESC, due);
CREATE TABLE IF NOT EXISTS poll_data (
    queue_name TEXT NOT NULL, domain TEXT NOT NULL, worker_id TEXT, last_poll_time INTEGER NOT NULL,
    PRIMARY KEY (queue_name, domain));
CREATE TABLE IF NOT EXISTS task_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL, log TEXT NOT NULL,
    created_time INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS task_logs_by_task ON task_logs (task_id);
CREATE TABLE IF NOT EXISTS payloads (key TEXT PRIMARY KEY, body TEXT NOT NULL);
"""


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


class _Store:
    """SQLite persistence: JSON documents plus the few columns the engine queries on.

    Not thread-safe by itself: the :class:`Engine` serialises access with its lock.
    """

    def __init__(self, db_path: Optional[str]) -> None:
        self._db = sqlite3.connect(db_path or ":memory:", check_same_thread=False, isolation_level=None)
        if db_path:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._depth = 0

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction; nested uses join the outer one."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            self._db.execute("ROLLBACK")
            raise
        self._depth = 0
        self._db.execute("COMMIT")

    def changes(self) -> int:
        """How many rows were written since the store was opened (a write anywhere changes it)."""
        return self._db.total_changes

    def _one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        row = self._db.execute(sql, args).fetchone()
        return None if row is None else row[0]

    def _bodies(self, sql: str, args: Sequence[Any] = ()) -> List[JSON]:
        return [json.loads(row[0]) for row in self._db.execute(sql, args)]

    # Task definitions -----------------------------------------------------------------------
    def put_task_def(self, task_def: JSON) -> None:
        self._db.execute("INSERT OR REPLACE INTO task_defs VALUES (?, ?)",
                         (task_def["name"], _dumps(task_def)))

    def get_task_def(self, name: str) -> Optional[JSON]:
        body = self._one("SELECT body FROM task_defs WHERE name = ?", (name,))
        return None if body is None else json.loads(body)

    def task_defs(self) -> List[JSON]:
        return self._bodies("SELECT body FROM task_defs ORDER BY name")

    def delete_task_def(self, name: str) -> bool:
        return self._db.execute("DELETE FROM task_defs WHERE name = ?", (name,)).rowcount > 0

    # Workflow definitions -------------------------------------------------------------------
    def put_workflow_def(self, wf_def: JSON) -> None:
        self._db.execute("INSERT OR REPLACE INTO workflow_defs VALUES (?, ?, ?)",
                         (wf_def["name"], wf_def["version"], _dumps(wf_def)))

    def get_workflow_def(self, name: str, version: Optional[int]) -> Optional[JSON]:
        if version is None:
            body = self._one("SELECT body FROM workflow_defs WHERE name = ? ORDER BY version DESC LIMIT 1",
                             (name,))
        else:
            body = self._one("SELECT body FROM workflow_defs WHERE name = ? AND version = ?", (name, version))
        return None if body is None else json.loads(body)

    def workflow_defs(self) -> List[JSON]:
        return self._bodies("SELECT body FROM workflow_defs ORDER BY name, version")

    def delete_workflow_def(self, name: str, version: int) -> bool:
        cursor = self._db.execute("DELETE FROM workflow_defs WHERE name = ? AND version = ?", (name, version))
        return cursor.rowcount > 0

    # Workflows and tasks --------------------------------------------------------------------
    def put_workflow(self, workflow: JSON, deadline: Optional[int]) -> None:
        wf_def = workflow["workflowDefinition"]
        self._db.execute(
            "INSERT OR REPLACE INTO workflows VALUES (?, ?, ?, ?, ?, ?)",
            (workflow["workflowId"], wf_def["name"], wf_def["version"], workflow["status"], clamp_ms(deadline),
             _dumps(workflow)),
        )

    def get_workflow(self, workflow_id: str) -> Optional[JSON]:
        body = self._one("SELECT body FROM workflows WHERE workflow_id = ?", (workflow_id,))
        return None if body is None else json.loads(body)

    def delete_workflow(self, workflow_id: str) -> None:
        task_ids = [row[0] for row in self._db.execute(
            "SELECT task_id FROM tasks WHERE workflow_id = ?", (workflow_id,))]
        for task_id in task_ids:
            self.remove_from_queue(task_id)
            self._db.execute("DELETE FROM task_logs WHERE task_id = ?", (task_id,))
        self._db.execute("DELETE FROM tasks WHERE workflow_id = ?", (workflow_id,))
        self._db.execute("DELETE FROM workflows WHERE workflow_id = ?", (workflow_id,))

    def pending_workflow_ids(self, name: str) -> List[str]:
        rows = self._db.execute(
            "SELECT workflow_id FROM workflows WHERE name = ? "
            "AND status IN ('RUNNING', 'PAUSED') ORDER BY rowid", (name,))
        return [row[0] for row in rows]

    def put_task(self, task: JSON, deadline: Optional[int]) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO tasks VALUES (?, ?, ?, ?, ?, ?)",
            (task["taskId"], task["workflowInstanceId"], task["seq"], task["status"], clamp_ms(deadline),
             _dumps(task)),
        )

    def get_task(self, task_id: str) -> Optional[JSON]:
        body = self._one("SELECT body FROM tasks WHERE task_id = ?", (task_id,))
        return None if body is None else json.loads(body)

    def workflow_tasks(self, workflow_id: str) -> List[JSON]:
        return self._bodies("SELECT body FROM tasks WHERE workflow_id = ? ORDER BY seq", (workflow_id,))

    def delete_workflow_tasks(self, workflow_id: str) -> None:
        for (task_id,) in self._db.execute("SELECT task_id FROM tasks WHERE workflow_id = ?", (workflow_id,)):
            self.remove_from_queue(task_id)
        self._db.execute("DELETE FROM tasks WHERE workflow_id = ?", (workflow_id,))

    def delete_task(self, task_id: str) -> None:
        self.remove_from_queue(task_id)
        self._db.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))

    def due_workflow_ids(self, now: int) -> List[str]:
        """Workflows with a deadline (their own or one of their tasks') that has passed."""
        rows = self._db.execute(
            "SELECT workflow_id FROM workflows WHERE deadline IS NOT NULL AND deadline <= ? "
            "UNION SELECT t.workflow_id FROM tasks t JOIN workflows w USING (workflow_id) "
            "WHERE t.deadline IS NOT NULL AND t.deadline <= ? AND w.status = 'RUNNING'",
            (now, now))
        return [row[0] for row in rows]

    def next_deadline(self) -> Optional[int]:
        first = self._one("SELECT MIN(deadline) FROM workflows WHERE deadline IS NOT NULL")
        second = self._one(
            "SELECT MIN(t.deadline) FROM tasks t JOIN workflows w USING (workflow_id) "
            "WHERE t.deadline IS NOT NULL AND w.status = 'RUNNING'")
        candidates = [value for value in (first, second) if value is not None]
        return min(candidates) if candidates else None

    # Queues ---------------------------------------------------------------------------------
    def push(self, task_id: str, queue: str, priority: int, due: int) -> None:
        # Delete first so that a postponed entry goes to the back of its priority class.
        self._db.execute("DELETE FROM queue WHERE task_id = ?", (task_id,))
        self._db.execute("INSERT INTO queue VALUES (?, ?, ?, ?)", (task_id, queue, priority, clamp_ms(due)))

    def remove_from_queue(self, task_id: str) -> None:
        self._db.execute("DELETE FROM queue WHERE task_id = ?", (task_id,))

    def pop(self, queue: str, count: int, now: int) -> List[str]:
        rows = self._db.execute(
            "SELECT task_id FROM queue WHERE queue_name = ? AND due <= ? "
            "ORDER BY priority DESC, due, rowid LIMIT ?", (queue, now, count)).fetchall()
        for (task_id,) in rows:
            self._db.execute("DELETE FROM queue WHERE task_id = ?", (task_id,))
        return [row[0] for row in rows]

    def next_due(self, queue: str) -> Optional[int]:
        return self._one("SELECT MIN(due) FROM queue WHERE queue_name = ?", (queue,))

    def queue_size(self, queue: str) -> int:
        return int(self._one("SELECT COUNT(*) FROM queue WHERE queue_name = ?", (queue,)))

    def queue_sizes(self) -> Dict[str, int]:
        rows = self._db.execute("SELECT queue_name, COUNT(*) FROM queue GROUP BY queue_name ORDER BY 1")
        return {name: count for name, count in rows}

    # Poll data and logs ---------------------------------------------------------------------
    def put_poll_data(self, task_type: str, domain: str, worker_id: Optional[str], when: int) -> None:
        self._db.execute("INSERT OR REPLACE INTO poll_data VALUES (?, ?, ?, ?)",
                         (task_type, domain, worker_id, when))

    def poll_data(self, task_type: Optional[str]) -> List[Tuple[str, str, Optional[str], int]]:
        if task_type is None:
            return list(self._db.execute("SELECT * FROM poll_data ORDER BY queue_name, domain"))
        return list(self._db.execute("SELECT * FROM poll_data WHERE queue_name = ? ORDER BY domain",
                                     (task_type,)))

    def add_log(self, task_id: str, text: str, created: int) -> None:
        self._db.execute("INSERT INTO task_logs (task_id, log, created_time) VALUES (?, ?, ?)",
                         (task_id, text, created))

    def put_payload(self, key: str, body: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO payloads (key, body) VALUES (?, ?)", (key, body))

    def get_payload(self, key: str) -> Optional[str]:
        return self._one("SELECT body FROM payloads WHERE key = ?", (key,))

    def logs(self, task_id: str) -> List[JSON]:
        rows = self._db.execute(
            "SELECT log, created_time FROM task_logs WHERE task_id = ? ORDER BY id", (task_id,))
        return [{"log": text, "taskId": task_id, "createdTime": created} for text, created in rows]
