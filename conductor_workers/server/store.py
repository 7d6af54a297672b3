"""SQLite persistence: the schema and :class:`_Store`, where every piece of state lives (task and
workflow definitions, event handlers, workflows, tasks and their search index, queue entries with
their due times, poll data, task logs and external payloads)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from .model import JSON, clamp_ms, queue_wait_time
from .search import summary_json, task_summary, workflow_summary

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
CREATE TABLE IF NOT EXISTS event_handlers (
    name TEXT PRIMARY KEY, event TEXT NOT NULL, active INTEGER NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS event_handlers_by_event ON event_handlers (event);
CREATE TABLE IF NOT EXISTS workflow_index (
    workflow_id TEXT PRIMARY KEY, correlation_id TEXT, workflow_type TEXT NOT NULL, start_time INTEGER,
    update_time INTEGER, end_time INTEGER NOT NULL, status TEXT NOT NULL, parent_workflow_id TEXT NOT NULL,
    classifier TEXT NOT NULL, json_data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS workflow_index_type ON workflow_index (workflow_type, start_time);
CREATE INDEX IF NOT EXISTS workflow_index_type_status ON workflow_index (workflow_type, status, start_time);
CREATE INDEX IF NOT EXISTS workflow_index_status ON workflow_index (status, start_time);
CREATE INDEX IF NOT EXISTS workflow_index_correlation ON workflow_index (correlation_id);
CREATE INDEX IF NOT EXISTS workflow_index_start ON workflow_index (start_time);
CREATE INDEX IF NOT EXISTS workflow_index_update ON workflow_index (update_time);
CREATE INDEX IF NOT EXISTS workflow_index_end ON workflow_index (end_time);
CREATE INDEX IF NOT EXISTS workflow_index_parent ON workflow_index (parent_workflow_id);
CREATE TABLE IF NOT EXISTS task_index (
    task_id TEXT PRIMARY KEY, workflow_id TEXT NOT NULL, correlation_id TEXT, task_type TEXT,
    task_def_name TEXT, status TEXT NOT NULL, start_time INTEGER NOT NULL, end_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL, workflow_type TEXT, json_data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS task_index_type ON task_index (task_type, status);
CREATE INDEX IF NOT EXISTS task_index_def_name ON task_index (task_def_name, status);
CREATE INDEX IF NOT EXISTS task_index_workflow ON task_index (workflow_id);
CREATE INDEX IF NOT EXISTS task_index_status ON task_index (status);
CREATE INDEX IF NOT EXISTS task_index_update ON task_index (update_time);
"""
# An index row is updated in place (its rowid, the default search order, stays the first save's).
_UPSERT_WORKFLOW_INDEX = (
    "INSERT INTO workflow_index VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (workflow_id) DO UPDATE SET "
    "correlation_id = excluded.correlation_id, workflow_type = excluded.workflow_type, "
    "start_time = excluded.start_time, update_time = excluded.update_time, end_time = excluded.end_time, "
    "status = excluded.status, parent_workflow_id = excluded.parent_workflow_id, "
    "classifier = excluded.classifier, json_data = excluded.json_data")
_UPSERT_TASK_INDEX = (
    "INSERT INTO task_index VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (task_id) DO UPDATE SET "
    "correlation_id = excluded.correlation_id, task_type = excluded.task_type, "
    "task_def_name = excluded.task_def_name, status = excluded.status, start_time = excluded.start_time, "
    "end_time = excluded.end_time, update_time = excluded.update_time, "
    "workflow_type = excluded.workflow_type, json_data = excluded.json_data")


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
        self._index_unindexed()

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
        self._index_workflow(workflow)

    def _index_workflow(self, workflow: JSON) -> None:
        summary = workflow_summary(workflow)
        self._db.execute(_UPSERT_WORKFLOW_INDEX, (
            workflow["workflowId"], workflow.get("correlationId"), summary["workflowType"],
            clamp_ms(workflow.get("createTime")), clamp_ms(workflow.get("updateTime")),
            clamp_ms(workflow.get("endTime") or 0), workflow["status"], summary["parentWorkflowId"],
            summary["classifier"], summary_json(summary)))

    def _index_task(self, task: JSON) -> None:
        self._db.execute(_UPSERT_TASK_INDEX, (
            task["taskId"], task["workflowInstanceId"], task.get("correlationId"), task.get("taskType"),
            task.get("taskDefName"), task["status"], clamp_ms(task.get("startTime") or 0),
            clamp_ms(task.get("endTime") or 0), clamp_ms(task.get("updateTime") or 0), task.get("workflowType"),
            summary_json(task_summary(task, queue_wait_time(task)))))

    def _index_unindexed(self) -> None:
        """Index what a database written before the index existed holds (nothing, usually)."""
        with self.transaction():
            for body in self._bodies("SELECT body FROM workflows WHERE workflow_id NOT IN "
                                     "(SELECT workflow_id FROM workflow_index) ORDER BY rowid"):
                self._index_workflow(body)
            for body in self._bodies("SELECT body FROM tasks WHERE task_id NOT IN "
                                     "(SELECT task_id FROM task_index) ORDER BY rowid"):
                self._index_task(body)

    def search_index(self, table: str, select: str, where: str, params: Sequence[Any], order_by: str,
                     limit: int, offset: int) -> Tuple[int, List[str]]:
        """(matches, the page's ``select`` column) of ``workflow_index`` or ``task_index`` (see :mod:`.search`)."""
        assert table in ("workflow_index", "task_index") and select in ("json_data", "workflow_id", "task_id")
        total = int(self._one("SELECT COUNT(*) FROM %s%s" % (table, where), params))
        rows = self._db.execute("SELECT %s FROM %s%s%s LIMIT ? OFFSET ?" % (select, table, where, order_by),
                                list(params) + [limit, offset])
        return total, [row[0] for row in rows]

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
        self._db.execute("DELETE FROM task_index WHERE workflow_id = ?", (workflow_id,))
        self._db.execute("DELETE FROM workflows WHERE workflow_id = ?", (workflow_id,))
        self._db.execute("DELETE FROM workflow_index WHERE workflow_id = ?", (workflow_id,))

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
        self._index_task(task)

    def get_task(self, task_id: str) -> Optional[JSON]:
        body = self._one("SELECT body FROM tasks WHERE task_id = ?", (task_id,))
        return None if body is None else json.loads(body)

    def workflow_tasks(self, workflow_id: str) -> List[JSON]:
        return self._bodies("SELECT body FROM tasks WHERE workflow_id = ? ORDER BY seq", (workflow_id,))

    def delete_workflow_tasks(self, workflow_id: str) -> None:
        for (task_id,) in self._db.execute("SELECT task_id FROM tasks WHERE workflow_id = ?", (workflow_id,)):
            self.remove_from_queue(task_id)
        self._db.execute("DELETE FROM tasks WHERE workflow_id = ?", (workflow_id,))
        self._db.execute("DELETE FROM task_index WHERE workflow_id = ?", (workflow_id,))

    def delete_task(self, task_id: str) -> None:
        self.remove_from_queue(task_id)
        self._db.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))
        self._db.execute("DELETE FROM task_index WHERE task_id = ?", (task_id,))

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

    # Event handlers -------------------------------------------------------------------------
    def get_event_handler(self, name: str) -> Optional[JSON]:
        body = self._one("SELECT body FROM event_handlers WHERE name = ?", (name,))
        return None if body is None else json.loads(body)

    def put_event_handler(self, handler: JSON) -> None:
        self._db.execute("INSERT INTO event_handlers VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                         "event = excluded.event, active = excluded.active, body = excluded.body",
                         (handler["name"], handler["event"], int(handler["active"]), _dumps(handler)))

    def delete_event_handler(self, name: str) -> bool:
        return self._db.execute("DELETE FROM event_handlers WHERE name = ?", (name,)).rowcount > 0

    def event_handlers(self, event: Optional[str] = None, active_only: bool = False) -> List[JSON]:
        sql, args = "SELECT body FROM event_handlers", []  # type: Tuple[str, List[Any]]
        if event is not None:
            sql, args = sql + " WHERE event = ?", [event]
            if active_only:
                sql += " AND active"
        return self._bodies(sql + " ORDER BY rowid", args)

    def get_payload(self, key: str) -> Optional[str]:
        return self._one("SELECT body FROM payloads WHERE key = ?", (key,))

    def logs(self, task_id: str) -> List[JSON]:
        rows = self._db.execute(
            "SELECT log, created_time FROM task_logs WHERE task_id = ? ORDER BY id", (task_id,))
        return [{"log": text, "taskId": task_id, "createdTime": created} for text, created in rows]
