"""Deliberate differences the differential suite (``test_differential.py``) accepts, as data.

Each generated request carries an operation ``kind`` (``"update"``, ``"batch_poll"``, ...) and one
``variant`` tag that names what is special about its input (``"valid"``, ``"non_json"``,
``"int_overflow"``, ...). When the two servers answer a request differently, the suite looks the pair
of statuses up here; an entry that matches accepts it, anything else fails the example. An entry
with ``diverges=True`` (or one where one server succeeded and the other did not) ends the example
after that request, because from there on the servers legitimately hold different state.

``IGNORED_FIELDS`` lists the fields the state comparison leaves out, each with its reason.
"""

from __future__ import annotations

from typing import Dict, FrozenSet, Optional, Tuple

import attrs

ANY = frozenset({"*"})

#: Input variants that are malformed for the real server's JSON / parameter binding.
BINDING_ERRORS = frozenset({
    "non_json",          # a body that is not JSON
    "empty_body",        # no body where one is required
    "wrong_json_type",   # an array where an object belongs, an object where an array belongs, null items
    "int_overflow",      # an integer outside its Java int / long field (2**31, 2**63, 1e16 for an int)
    "bool_for_int",      # true where a number belongs
    "bad_enum",          # an unknown status / policy name
    "bad_query_int",     # a query parameter that is not a Java int ("abc", "1.5", "1e3", 2**31)
    "bad_query_bool",    # includeTasks=maybe
    "bad_path_status",   # /api/tasks/{wf}/{ref}/BOGUS
})


@attrs.frozen
class Difference:
    """Accepted answers: ``local`` / ``real`` are sets of status patterns ("4xx", "404", "2xx")."""

    reason: str
    kinds: FrozenSet[str]
    variants: FrozenSet[str]
    local: FrozenSet[str]
    real: FrozenSet[str]
    diverges: bool = False  # the example stops after such a request (state legitimately differs)

    def matches(self, kind: str, variant: str, local_status: int, real_status: int) -> bool:
        return (
            (self.kinds == ANY or kind in self.kinds)
            and (self.variants == ANY or variant in self.variants)
            and _status_in(local_status, self.local)
            and _status_in(real_status, self.real)
        )


def _status_in(status: int, patterns: FrozenSet[str]) -> bool:
    return str(status) in patterns or f"{status // 100}xx" in patterns


DIFFERENCES: Dict[str, Difference] = {
    "real_500_on_binding_errors": Difference(
        "Malformed input (not JSON, wrong JSON shape, numbers outside their Java type, unknown enum "
        "names, unparsable query parameters) fails inside the real server's Spring/Jackson binding and "
        "its catch-all exception mapper answers 500; LocalConductor answers 400 with an ErrorResponse, "
        "as the README table says. A 5xx means 'retry' to a client, which is wrong for bad input.",
        kinds=ANY, variants=BINDING_ERRORS, local=frozenset({"400"}), real=frozenset({"500"}),
    ),
    "real_500_on_missing_task_result_fields": Difference(
        "update-v2 without taskId/workflowInstanceId: the real server's @Valid on the controller raises "
        "MethodArgumentNotValidException, which its mapper turns into 500 (POST /api/tasks answers 400 "
        "for the same body). LocalConductor answers 400 on both paths.",
        kinds=frozenset({"update_v2"}), variants=frozenset({"missing_field"}),
        local=frozenset({"400"}), real=frozenset({"500"}),
    ),
    "real_500_on_queue_sizes_without_task_type": Difference(
        "GET /api/tasks/queue/sizes without any taskType: the real server dereferences the null list "
        "(NullPointerException, 500); LocalConductor answers {} (no queue asked for, none reported).",
        kinds=frozenset({"queue_sizes"}), variants=frozenset({"missing_param"}),
        local=frozenset({"200"}), real=frozenset({"500"}),
    ),
    "real_500_on_resume_of_a_workflow_not_paused": Difference(
        "PUT /api/workflow/{id}/resume on a workflow that is not PAUSED: the real server throws "
        "IllegalStateException (500); LocalConductor answers 409, as for the other state conflicts "
        "(pausing an ended workflow, terminating a COMPLETED one).",
        kinds=frozenset({"resume"}), variants=frozenset({"valid"}),
        local=frozenset({"409"}), real=frozenset({"500"}),
    ),
    "real_coerces_scalars": Difference(
        "Jackson's default coercions on the real server accept a number where a string belongs "
        "(taskId: 5 -> \"5\"), a numeric string where a number belongs (\"10\" -> 10), truncate a "
        "fraction into an integer field (1.5 -> 1) and even build a TaskDef from a bare string (its "
        "name); LocalConductor refuses a value of the wrong JSON type with 400, so that a client bug "
        "shows up in tests instead of being silently rewritten.",
        kinds=ANY, variants=frozenset({"number_for_string", "string_for_int", "float_for_int", "string_for_object"}),
        local=frozenset({"400"}), real=frozenset({"2xx", "4xx"}), diverges=True,
    ),
    "real_500_on_workflow_task_without_reference_name": Difference(
        "A workflow definition with a task that has no taskReferenceName: the real server's bean "
        "validator throws inside isValid (\"HV000028: Unexpected exception during isValid call\", 500); "
        "LocalConductor answers 400 with the validation error.",
        kinds=frozenset({"register_workflow_def"}), variants=frozenset({"missing_field"}),
        local=frozenset({"400"}), real=frozenset({"500"}),
    ),
    "system_tasks_out_of_scope": Difference(
        "A workflow with a system task (WAIT): this suite compares the worker-facing SIMPLE-task API "
        "only. Which system tasks LocalConductor runs, and how, is outside it (the README lists them), "
        "so the example ends after such a registration whatever the two servers answer.",
        kinds=frozenset({"register_workflow_def"}), variants=frozenset({"system_task"}),
        local=frozenset({"2xx", "4xx"}), real=frozenset({"2xx", "4xx"}), diverges=True,
    ),
    "negative_batch_poll_count": Difference(
        "A batch poll with a negative count: conductor-oss 3.32.1 on SQLite hands out every queued "
        "task (its query's LIMIT -1 means no limit; measured). LocalConductor answers [] as for "
        "count=0: a count below 1 asks for nothing, and the storage quirk is not worth copying.",
        kinds=frozenset({"batch_poll"}), variants=frozenset({"negative_count"}),
        local=frozenset({"2xx", "4xx"}), real=frozenset({"2xx", "4xx"}), diverges=True,
    ),
    "negative_callback_after_seconds": Difference(
        "An IN_PROGRESS update with a negative callbackAfterSeconds (both servers answer 200): "
        "conductor-oss 3.32.1 (SQLite queue, measured) then never hands the task out again (still "
        "queued, not pollable after 40 s); LocalConductor treats the delay as 0 and the task can be "
        "polled at once. Copying a task that is stuck for good would help nobody.",
        kinds=frozenset({"update", "update_v2"}), variants=frozenset({"negative_callback"}),
        local=frozenset({"2xx", "4xx"}), real=frozenset({"2xx", "4xx"}), diverges=True,
    ),
    "huge_response_timeout": Difference(
        "A task definition with responseTimeoutSeconds above ~9.2e15 (1e16, 2**63-1): both servers "
        "accept it, but conductor-oss computes 1000 * responseTimeoutSeconds in a Java long, which "
        "overflows, so its next decide of a workflow with such an IN_PROGRESS task times the task out "
        "at once (measured: after pause + resume, or ~30 s after the poll when the sweeper runs). "
        "LocalConductor treats it as the very long timeout it is. The example ends after registering it.",
        kinds=frozenset({"register_task_defs"}), variants=frozenset({"huge_response_timeout"}),
        local=frozenset({"2xx", "4xx"}), real=frozenset({"2xx", "4xx"}), diverges=True,
    ),
    "update_naming_another_workflow": Difference(
        "An update whose workflowInstanceId names another workflow than its task's: the real server "
        "re-decides the named workflow and leaves the task's own one to its sweeper (~30 s later); "
        "LocalConductor decides the task's own workflow at once (README table).",
        kinds=frozenset({"update", "update_v2"}), variants=frozenset({"mismatched_workflow"}),
        local=frozenset({"2xx", "4xx"}), real=frozenset({"2xx", "4xx"}), diverges=True,
    ),
    "event_handler_conflict_status": Difference(
        "POST /event for a name already registered: the real server's SQLite store wraps its "
        "ConflictException inside a transaction and answers 500; LocalConductor answers 409 with the same "
        "message (conformance: event_handler_conflict_status).",
        kinds=frozenset({"add_event_handler"}), variants=frozenset({"valid"}),
        local=frozenset({"409"}), real=frozenset({"500"}),
    ),
    "event_handler_not_found_status": Difference(
        "PUT /event or DELETE /event/{name} for a name not registered: the real server's SQLite store "
        "wraps its NotFoundException and answers 500; LocalConductor answers 404 with the same message "
        "(conformance: event_handler_not_found_status).",
        kinds=frozenset({"update_event_handler", "remove_event_handler"}), variants=frozenset({"valid"}),
        local=frozenset({"404"}), real=frozenset({"500"}),
    ),
}

#: Workflow / task fields the state comparison does not compare, and why.
IGNORED_FIELDS: Dict[str, str] = {}

#: Search-hit fields (``kind`` -> fields) whose Java ``Map.toString`` text is compared as a multiset of
#: characters, and why.
UNORDERED_MAP_STRINGS: Dict[str, FrozenSet[str]] = {
    "search_workflows": frozenset({"output"}),
    "search_tasks": frozenset({"input", "output"}),
}
UNORDERED_MAP_STRINGS_REASON = (
    "A map conductor-oss builds itself (a task's input from inputParameters and the definition's "
    "inputTemplate, a workflow's output from outputParameters) is a java.util.HashMap, so its "
    "toString lists the keys in hash-bucket order ('{prev=.., x=..}', '{tpl=$, x=1}', measured); "
    "LocalConductor renders every map in insertion order ('{x=.., prev=..}'). Maps that come from a "
    "client's JSON (workflow input, task output) are LinkedHashMaps there and agree. Copying Java's "
    "bucket order would mean knowing, for every nested map, which code path built it; the summaries "
    "are display text, and the same data is compared as JSON in the workflow states and search-v2."
)

#: Task-search hits left out of the comparison (SCHEDULED tasks never polled), and why.
NEVER_POLLED_TASK_HITS = (
    "LocalConductor indexes a task whenever it is saved, so a SCHEDULED task nobody has polled yet is "
    "found; conductor-oss indexes a task only when its updateTask runs (a poll, a result that changes "
    "it), so it finds such a task only sometimes (README, 'search: what is indexed'). Task-search hits "
    "of SCHEDULED tasks with pollCount 0 are dropped on both sides, and the remaining hits counted."
)

#: Answers compared as a set of tasks instead of a list, and why.
UNORDERED_ANSWERS: Dict[str, str] = {
    "batch_poll": (
        "Both servers pick the tasks of a batch poll by priority, then age. conductor-oss 3.32.1 on "
        "SQLite then lists them in the order its UPDATE ... RETURNING happens to produce (the table's "
        "row order: oldest first, measured), which SQLite documents as arbitrary; LocalConductor "
        "lists them in the order it picked them (highest priority first). Which tasks are handed out "
        "is compared; their order within one answer is not."
    ),
}


def find_difference(kind: str, variant: str, local_status: int, real_status: int) -> Optional[Tuple[str, Difference]]:
    """The entry that accepts this pair of answers, or None."""
    for name, difference in DIFFERENCES.items():
        if difference.matches(kind, variant, local_status, real_status):
            return name, difference
    return None


def always_diverges(kind: str, variant: str) -> Optional[str]:
    """The name of a ``diverges`` entry that applies to this request whatever the answers, or None.

    Used for state differences that show only later (e.g. a task that one server never hands out
    again): the example ends right after such a request.
    """
    for name, difference in DIFFERENCES.items():
        both_any = difference.local >= {"2xx", "4xx"} and difference.real >= {"2xx", "4xx"}
        if difference.diverges and both_any and (difference.kinds == ANY or kind in difference.kinds) and (
                variant in difference.variants):
            return name
    return None
