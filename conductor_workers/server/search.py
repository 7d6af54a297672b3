"""Workflow and task search: the index documents and the query language of conductor-oss's
SQLite index (``SqliteIndexQueryBuilder``), on LocalConductor's own index tables.

* **What is indexed.** Every saved workflow has a row in ``workflow_index`` and every saved task
  one in ``task_index`` (:class:`~.store._Store` writes them with the documents): a few columns
  to filter and sort on, and ``json_data``, the ``WorkflowSummary`` / ``TaskSummary`` the search
  answers with (times as ISO-8601 UTC text, input and output as Java's ``Map.toString`` renders
  them, as conductor-oss does by default).
* **The query** is conditions joined by `` AND `` (upper case, spaces around it). A condition is
  ``field=value``, ``field>value``, ``field<value`` or ``field IN (a,b,...)``; quotes and
  parentheses around values are dropped. Field names are camelCase (``workflowType``) and
  become the snake_case column (``workflow_type``); a field conductor-oss does not know is
  ignored, as there. ``*`` in a single ``=`` value is a wildcard (case-insensitive LIKE). On
  the time fields (``startTime``, ``updateTime``, ``endTime``) the value is epoch milliseconds.
* **Free text** other than ``*`` must appear, case-insensitively, somewhere in the summary JSON.
* **Sort** entries are ``field:ASC`` or ``field:DESC`` (``|`` between several); others are
  ignored. Without one, results come in the order the executions were first saved.
* **Paging**: ``start`` rows are skipped and at most ``size`` returned; ``totalHits`` counts
  every match.

:class:`Search` runs a search under the engine's lock, answering summaries (``search``) or the
whole workflows and tasks (``search-v2``).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable, ContextManager, Dict, List, Optional, Sequence, Tuple

from .errors import BadRequest, ValidationFailed, _violation
from .model import JSON

#: Fields conductor-oss's query builder knows (snake_case); conditions on others are ignored.
KNOWN_FIELDS = frozenset({
    "workflow_id", "correlation_id", "workflow_type", "start_time", "end_time", "status", "task_id",
    "task_type", "task_def_name", "update_time", "json_data", "parent_workflow_id", "classifier",
})
#: The columns of each index table (the task index also has the workflow id and correlation id,
#: which conductor-oss's SQLite task index lacks: a query on them answers 500 there).
WORKFLOW_COLUMNS = frozenset({
    "workflow_id", "correlation_id", "workflow_type", "start_time", "end_time", "update_time", "status",
    "parent_workflow_id", "classifier", "json_data",
})
TASK_COLUMNS = frozenset({
    "task_id", "workflow_id", "correlation_id", "task_type", "task_def_name", "status", "start_time",
    "end_time", "update_time", "workflow_type", "json_data",
})
#: Largest page of a workflow search (conductor-oss's ``@Max`` on ``size``).
MAX_WORKFLOW_PAGE = 5000

_CONDITION = re.compile(r"([a-zA-Z]+)\s?(=|>|<|IN)\s?(.*)")
_CAMEL = re.compile(r"\B([A-Z])")
_MILLIS = re.compile(r"^[+-]?\d{1,19}$")


def snake_case(name: str) -> str:
    """``workflowType`` -> ``workflow_type`` (conductor-oss's ``camelToSnake``)."""
    return _CAMEL.sub(r"_\1", name).lower()


def iso_ms(millis: int) -> str:
    """Epoch ms as ``yyyy-MM-dd'T'HH:mm:ss.SSS'Z'`` (UTC), the summaries' time format."""
    moment = datetime.fromtimestamp(millis / 1000.0, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (millis % 1000)


def java_string(value: Any) -> str:
    """``value`` as Java's ``toString`` renders the map or list Jackson reads it into."""
    if isinstance(value, dict):
        return "{" + ", ".join("%s=%s" % (key, java_string(item)) for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(java_string(item) for item in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _java_double(value)
    return str(value)


def _java_double(value: float) -> str:
    """``Double.toString``: plain between 1e-3 and 1e7, else ``d.dddE<n>``."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0 or 1e-3 <= abs(value) < 1e7:
        text = repr(value)
        return text if "." in text else text + ".0"
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    text = "".join(str(digit) for digit in digits)
    return "%s%s.%sE%d" % ("-" if sign else "", text[0], text[1:] or "0", len(text) - 1 + int(exponent))


def _java_length(text: str) -> int:
    """``String.length()``: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def _put(summary: JSON, key: str, value: Any) -> None:
    if value is not None:
        summary[key] = value


def workflow_summary(workflow: JSON) -> JSON:
    """The ``WorkflowSummary`` of a stored workflow, as conductor-oss serialises it (nulls left out)."""
    wf_def = workflow["workflowDefinition"]
    created, ended = workflow.get("createTime"), workflow.get("endTime") or 0
    summary: JSON = {"workflowType": wf_def["name"], "version": wf_def["version"],
                     "workflowId": workflow["workflowId"]}
    _put(summary, "correlationId", workflow.get("correlationId"))
    _put(summary, "startTime", None if created is None else iso_ms(created))
    _put(summary, "updateTime", None if workflow.get("updateTime") is None else iso_ms(workflow["updateTime"]))
    _put(summary, "endTime", iso_ms(ended) if ended > 0 else None)
    summary["status"] = workflow["status"]
    for key in ("input", "output"):
        _put(summary, key, None if workflow.get(key) is None else java_string(workflow[key]))
    _put(summary, "reasonForIncompletion", workflow.get("reasonForIncompletion"))
    summary["executionTime"] = ended - (created or 0) if ended > 0 else 0
    _put(summary, "event", workflow.get("event"))
    summary["failedReferenceTaskNames"] = ",".join(workflow.get("failedReferenceTaskNames") or [])
    for key in ("externalInputPayloadStoragePath", "externalOutputPayloadStoragePath"):
        if (workflow.get(key) or "").strip():
            summary[key] = workflow[key]
    summary["priority"] = workflow.get("priority") or 0
    summary["failedTaskNames"] = list(workflow.get("failedTaskNames") or [])
    _put(summary, "createdBy", workflow.get("createdBy"))
    summary["taskToDomain"] = workflow.get("taskToDomain") or {}
    _put(summary, "idempotencyKey", workflow.get("idempotencyKey"))
    summary["parentWorkflowId"] = workflow.get("parentWorkflowId") or ""
    summary["classifier"] = classifier_of(wf_def.get("metadata"))
    summary["inputSize"] = _java_length(summary.get("input", ""))
    summary["outputSize"] = _java_length(summary.get("output", ""))
    return summary


def classifier_of(metadata: Any) -> str:
    """``WorkflowClassifier.classifierOf``: ``metadata.classifier``, ``agent`` for agent SDK definitions, else ``workflow``."""
    if not isinstance(metadata, dict) or not metadata:
        return "workflow"
    explicit = metadata.get("classifier")
    if isinstance(explicit, str) and explicit.strip():
        return explicit
    if metadata.get("agent_sdk") is not None or metadata.get("agentDef") is not None:
        return "agent"
    return "workflow"


def task_summary(task: JSON, queue_wait_time: int) -> JSON:
    """The ``TaskSummary`` of a stored task, as conductor-oss serialises it (nulls left out)."""
    start, end = task.get("startTime") or 0, task.get("endTime") or 0
    summary: JSON = {"workflowId": task["workflowInstanceId"]}
    _put(summary, "workflowType", task.get("workflowType"))
    _put(summary, "correlationId", task.get("correlationId"))
    summary["scheduledTime"] = iso_ms(task.get("scheduledTime") or 0)
    summary["startTime"] = iso_ms(start)
    summary["updateTime"] = iso_ms(task.get("updateTime") or 0)
    summary["endTime"] = iso_ms(end)
    summary["status"] = task["status"]
    _put(summary, "reasonForIncompletion", task.get("reasonForIncompletion"))
    summary["executionTime"] = end - start if end > 0 else 0
    summary["queueWaitTime"] = queue_wait_time
    _put(summary, "taskDefName", task.get("taskDefName"))
    _put(summary, "taskType", task.get("taskType"))
    for key, field in (("input", "inputData"), ("output", "outputData")):
        _put(summary, key, None if task.get(field) is None else java_string(task[field]))
    summary["taskId"] = task["taskId"]
    for key in ("externalInputPayloadStoragePath", "externalOutputPayloadStoragePath"):
        if (task.get(key) or "").strip():
            summary[key] = task[key]
    summary["workflowPriority"] = task.get("workflowPriority") or 0
    _put(summary, "domain", task.get("domain"))
    return summary


def summary_json(summary: JSON) -> str:
    """The stored text of a summary (what free text is looked for in), as Jackson writes it."""
    return json.dumps(summary, separators=(",", ":"), ensure_ascii=False)


class _Condition:
    """One ``field op value`` of a query, as SQL."""

    def __init__(self, text: str) -> None:
        match = _CONDITION.search(text)
        if match is None:
            raise BadRequest("Incorrectly formatted query string: %s" % text)
        self.field = match.group(1)
        self.column = snake_case(match.group(1))
        values = re.sub(r"[\"'()]", "", match.group(3)).split(",")
        while len(values) > 1 and values[-1] == "":  # Java's split drops trailing empty strings
            values.pop()
        self.values = [value.strip() for value in values]
        self.operator = "=" if match.group(2) == "IN" and len(self.values) == 1 else match.group(2)

    def sql(self, columns: frozenset, what: str) -> Tuple[str, List[Any]]:
        if self.column not in columns:
            raise BadRequest("Cannot search %s by %s: their index has no such field" % (what, self.field))
        if self.column.endswith("_time"):
            params: List[Any] = [self._millis(value) for value in self.values]
        else:
            params = list(self.values)
        if self.operator == "IN":
            return "%s IN (%s)" % (self.column, ",".join("?" * len(params))), params
        if self.operator == "=" and not self.column.endswith("_time") and "*" in params[0]:
            return "lower(%s) LIKE lower(?)" % self.column, [params[0].replace("*", "%")]
        return "%s %s ?" % (self.column, self.operator), params[:1]

    def _millis(self, value: str) -> int:
        if not _MILLIS.match(value) or not -(2 ** 63) <= int(value) < 2 ** 63:
            raise BadRequest("Invalid value %r for %s in the search query: expected epoch milliseconds"
                             % (value, self.field))
        return int(value)


class SearchQuery:
    """A parsed query, free text and sort, turned into the SQL of one index table."""

    def __init__(self, query: Optional[str], free_text: Optional[str], sort: Sequence[str]) -> None:
        self.conditions = [_Condition(part) for part in query.split(" AND ")] if query else []
        self.free_text = free_text if free_text and free_text != "*" else None
        self.sort = list(sort)

    def where(self, columns: frozenset, what: str) -> Tuple[str, List[Any]]:
        clauses, params = [], []
        for condition in self.conditions:
            if condition.column not in KNOWN_FIELDS:
                continue  # ignored, as conductor-oss ignores it
            clause, values = condition.sql(columns, what)
            clauses.append(clause)
            params.extend(values)
        if self.free_text is not None:
            clauses.append("lower(json_data) LIKE ?")
            params.append("%" + self.free_text.lower() + "%")
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def order_by(self, columns: frozenset) -> str:
        terms = []
        for entry in self.sort:
            parts = entry.split(":")
            if len(parts) != 2:
                continue
            column, order = snake_case(parts[0]), parts[1].upper()
            if column in KNOWN_FIELDS and column in columns and order in ("ASC", "DESC"):
                terms.append("%s %s" % (column, order))
        return " ORDER BY " + ", ".join(terms or ["rowid"])


def sort_list(sort: Optional[str]) -> List[str]:
    """The ``sort`` request parameter as a list (``|`` between entries, as ``Utils.convertStringToList``)."""
    return sort.split("|") if sort and sort.strip() else []


Page = Tuple[int, List[str]]


class Search:
    """Runs searches on the index tables under the engine's lock.

    ``tx``: the engine's transaction (a context manager yielding the store); ``workflow_view`` and
    ``task_view``: how the API shows a whole workflow (without its tasks) and a whole task.
    """

    def __init__(self, tx: Callable[[], ContextManager[Any]], workflow_view: Callable[[JSON], JSON],
                 task_view: Callable[[JSON], JSON]) -> None:
        self._tx = tx
        self._workflow_view = workflow_view
        self._task_view = task_view

    def workflows(self, query: Optional[str], free_text: Optional[str], start: int, size: int,
                  sort: Sequence[str]) -> JSON:
        """``GET /workflow/search``: ``{"totalHits", "results": [WorkflowSummary]}``."""
        _check_page(start, size, "searchWorkflows")
        total, rows = self._run("workflow_index", WORKFLOW_COLUMNS, "workflows", query, free_text, start, size, sort)
        return {"totalHits": total, "results": [json.loads(row) for row in rows]}

    def workflows_v2(self, query: Optional[str], free_text: Optional[str], start: int, size: int,
                     sort: Sequence[str]) -> JSON:
        """``GET /workflow/search-v2``: the same search answering whole workflows (without tasks)."""
        _check_page(start, size, "searchWorkflowsV2")
        with self._tx() as store:
            total, rows = self._page(store, "workflow_index", WORKFLOW_COLUMNS, "workflows", "workflow_id",
                                     query, free_text, start, size, sort)
            found = [store.get_workflow(workflow_id) for workflow_id in rows]
        results = [self._workflow_view(workflow) for workflow in found if workflow is not None]
        return {"totalHits": total - (len(rows) - len(results)), "results": results}

    def tasks(self, query: Optional[str], free_text: Optional[str], start: int, size: int,
              sort: Sequence[str]) -> JSON:
        """``GET /tasks/search``: ``{"totalHits", "results": [TaskSummary]}``."""
        _check_page(start, size, None)
        total, rows = self._run("task_index", TASK_COLUMNS, "tasks", query, free_text, start, size, sort)
        return {"totalHits": total, "results": [json.loads(row) for row in rows]}

    def tasks_v2(self, query: Optional[str], free_text: Optional[str], start: int, size: int,
                 sort: Sequence[str]) -> JSON:
        """``GET /tasks/search-v2``: the same search answering whole tasks."""
        _check_page(start, size, None)
        with self._tx() as store:
            total, rows = self._page(store, "task_index", TASK_COLUMNS, "tasks", "task_id", query, free_text,
                                     start, size, sort)
            found = [store.get_task(task_id) for task_id in rows]
        results = [self._task_view(task) for task in found if task is not None]
        return {"totalHits": total - (len(rows) - len(results)), "results": results}

    def _run(self, table: str, columns: frozenset, what: str, query: Optional[str], free_text: Optional[str],
             start: int, size: int, sort: Sequence[str]) -> Page:
        with self._tx() as store:
            return self._page(store, table, columns, what, "json_data", query, free_text, start, size, sort)

    @staticmethod
    def _page(store: Any, table: str, columns: frozenset, what: str, select: str, query: Optional[str],
              free_text: Optional[str], start: int, size: int, sort: Sequence[str]) -> Page:
        parsed = SearchQuery(query, free_text, sort)
        where, params = parsed.where(columns, what)
        return store.search_index(table, select, where, params, parsed.order_by(columns), size, start)


def _check_page(start: int, size: int, method: Optional[str]) -> None:
    if method is not None and size > MAX_WORKFLOW_PAGE:
        raise ValidationFailed([_violation("%s.size" % method, "Cannot return more than %d workflows. Please use "
                                                               "pagination." % MAX_WORKFLOW_PAGE, str(size))])
    if start < 0 or size < 0:
        raise BadRequest("Invalid paging: start (%d) and size (%d) must not be negative" % (start, size))
