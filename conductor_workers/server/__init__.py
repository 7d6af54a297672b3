"""LocalConductor: an embedded, Conductor-compatible server (conductor-oss 3.32.x) for workers,
their tests, samples and local runs (``python -m conductor_workers server``).

Pure standard library (``http.server`` + ``sqlite3``); JavaScript and jq for the system tasks
that need them come with the ``server`` extra. Importing ``conductor_workers`` does not import
this package. Its modules:

Server object
  * ``local`` — :class:`LocalConductor`: start and stop the engine and the HTTP server, its URL.

Engine (the Conductor state machine)
  * ``engine`` — :class:`~.engine.Engine`: state, life cycle, transactions, persistence helpers.
  * ``model`` — task and workflow statuses, policies, ids, time, queue names.
  * ``errors`` — the engine's errors (with their HTTP status) and the decider's ``_Terminate``.
  * ``fields`` — field types and defaults of the JSON documents, ``check_fields``.
  * ``validation`` — validation and normalisation of definitions, task results, priorities.
  * ``definitions`` — workflow definitions as trees: task types, nesting, the task that follows.
  * ``expressions`` — ``${...}`` resolution in task inputs and workflow outputs.
  * ``store`` — SQLite persistence, where every piece of state lives.
  * ``payloads`` — :class:`PayloadLimits` and the external payload storage.
  * ``views`` — a stored task as the API shows it.
  * ``metadata`` — task and workflow definition operations.
  * ``workflows`` — workflow life cycle: start, get, terminate, pause, resume, retry, restart, remove.
  * ``tasks`` — the task API: poll and long poll, updates, logs, queue sizes, poll data.
  * ``decider`` — advances a workflow: evaluates, schedules, runs system tasks, ends it.
  * ``timeouts`` — task and workflow deadlines and timeout checks.
  * ``retries`` — retry delays and new attempts of failed tasks.
  * ``sweeper`` — the thread that enforces timeouts.
  * ``workflow_ops`` — status, correlation lookups, skip and rerun.
  * ``signals`` — execute and signals, and the SignalResponse they answer with.
  * ``mock_runs`` — test runs with mocked task outputs (``POST /api/workflow/test``).

System tasks
  * ``system_tasks`` — dispatch of every system task; the simple ones, ``WAIT``, scripts.
  * ``control_flow`` — ``SWITCH``, ``FORK_JOIN``/``JOIN``, dynamic forks, ``DO_WHILE``, ``DYNAMIC``.
  * ``subworkflows`` — ``SUB_WORKFLOW`` and ``START_WORKFLOW``.
  * ``http_task`` — the ``HTTP`` task, run on a thread of its own.
  * ``scripts`` — JavaScript and jq from the ``server`` extra: :class:`ScriptLimits`, runner pools.
  * ``script_child`` — the runner process a script runs in, and its pipe protocol.

HTTP front end
  * ``http`` — the HTTP server (TLS included) and the request handler.
  * ``routes`` — :class:`~.routes.Api`: the REST paths and their handlers.
  * ``wire`` — requests, responses, ``ErrorResponse`` bodies, the router.
  * ``auth`` — Orkes-style token authentication.
  * ``connections`` — idle connections in a selector, requests on a bounded thread pool.
"""

from __future__ import annotations

from .local import LocalConductor
from .payloads import PayloadLimits
from .scripts import ScriptLimits

__all__ = ["LocalConductor", "PayloadLimits", "ScriptLimits"]
