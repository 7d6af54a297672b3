"""The ``task`` and ``workflow`` shell commands, and the option handling of ``server``.

``conductor-workers task get ID``, ``task update ID --status COMPLETED``, ``task update-by-ref WF REF``,
``workflow start NAME``, ``workflow get ID`` and ``workflow terminate ID`` drive a server through the
same :class:`~conductor_workers.client.ConductorClient` as the library: the server URL and auth come
from :meth:`Configuration.from_env <conductor_workers.config.Configuration.from_env>`, and
``--server-url`` overrides the URL.

Answers are JSON on stdout. A failure is one line on stderr and an exit code: 1 when the server said no
(not found, conflict, auth...) or could not be reached, 2 for a usage error (argparse's own, a bad
``--output``/``--input``, a bad server URL).
"""
from __future__ import annotations

import argparse
import json
import logging
import ssl
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

from .client import ConductorClient
from .config import Configuration
from .errors import ConductorError, InvalidOptionError, WorkflowTimeoutError
from .executor import WorkflowExecutor
from .models import TaskResult, TaskResultStatus, WorkflowStatus

log = logging.getLogger(__name__)

PROG = "conductor-workers"

#: exit codes of the shell commands
EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A command line value that cannot be used (exit code 2)."""


def fail(message: object, code: int) -> int:
    """Write ``message`` as one line on stderr and return ``code``."""
    text = " ".join(str(message).split()) or "failed"
    print(f"{PROG}: error: {text}", file=sys.stderr, flush=True)
    return code


def _emit(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")
    sys.stdout.flush()


def _json_object(value: Optional[str], option: str) -> Dict[str, Any]:
    """A JSON object given inline or as ``@file`` (``@-``: standard input); None is ``{}``."""
    if value is None:
        return {}
    text = value
    if value.startswith("@"):
        path = value[1:]
        try:
            if path == "-":
                text = sys.stdin.read()
            else:
                with open(path, encoding="utf-8") as handle:
                    text = handle.read()
        except OSError as exc:
            raise UsageError(f"{option}: cannot read {path!r}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{option}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{option}: expected a JSON object, got {type(data).__name__}")
    return data


# -- task / workflow commands --------------------------------------------------------------------


def _client(args: argparse.Namespace) -> ConductorClient:
    if args.server_url:
        return ConductorClient(Configuration.from_env(server_url=args.server_url))
    return ConductorClient(Configuration.from_env())


def _task_get(client: ConductorClient, args: argparse.Namespace) -> int:
    _emit(client.tasks.get_task(args.task_id, include_external=args.external).to_json())
    return EXIT_OK


def _task_update(client: ConductorClient, args: argparse.Namespace) -> int:
    output = _json_object(args.output, "--output")
    workflow_id = args.workflow_id or client.tasks.get_task(args.task_id).workflow_instance_id
    result = TaskResult(
        task_id=args.task_id,
        workflow_instance_id=workflow_id,
        status=TaskResultStatus.coerce(args.status),
        output_data=output,
        reason_for_incompletion=args.reason,
        callback_after_seconds=args.callback_after,
    )
    task_id = client.tasks.update_task(result)
    _emit({"taskId": task_id or args.task_id, "workflowId": workflow_id, "status": result.status.value})
    return EXIT_OK


def _task_update_by_ref(client: ConductorClient, args: argparse.Namespace) -> int:
    output = _json_object(args.output, "--output")
    status = TaskResultStatus.coerce(args.status)
    if args.sync:
        workflow = client.tasks.update_task_by_ref_name_sync(
            workflow_id=args.workflow_id, ref_name=args.ref_name, status=status, output=output
        )
        _emit(workflow.to_json())
        return EXIT_OK
    task_id = client.tasks.update_task_by_ref_name(
        workflow_id=args.workflow_id, ref_name=args.ref_name, status=status, output=output
    )
    _emit({"taskId": task_id, "workflowId": args.workflow_id, "status": status.value})
    return EXIT_OK


def _status_name(status: object) -> str:
    return str(getattr(status, "value", status))


def _workflow_start(client: ConductorClient, args: argparse.Namespace) -> int:
    workflow_input = _json_object(args.input, "--input")
    workflow_id = client.workflows.start_by_name(
        args.name, workflow_input, version=args.version, correlation_id=args.correlation_id,
        priority=args.priority,
    )
    if args.wait is None:
        _emit({"workflowId": workflow_id})
        return EXIT_OK
    executor = WorkflowExecutor(client)
    try:
        workflow = executor.wait_for_workflow(workflow_id, timeout=args.wait)
    except WorkflowTimeoutError as exc:
        _emit(exc.workflow.to_json())
        return fail(exc, EXIT_REFUSED)
    _emit(workflow.to_json())
    if workflow.status != WorkflowStatus.COMPLETED:
        reason = f": {workflow.reason_for_incompletion}" if workflow.reason_for_incompletion else ""
        return fail(f"workflow {workflow_id} ended {_status_name(workflow.status)}{reason}", EXIT_REFUSED)
    return EXIT_OK


def _workflow_get(client: ConductorClient, args: argparse.Namespace) -> int:
    workflow = client.workflows.get(args.workflow_id, include_tasks=args.tasks,
                                    include_external=args.external)
    if not workflow.workflow_id:  # a server that answers an empty body for an unknown id
        return fail(f"workflow {args.workflow_id} not found", EXIT_REFUSED)
    _emit(workflow.to_json())
    return EXIT_OK


def _workflow_terminate(client: ConductorClient, args: argparse.Namespace) -> int:
    client.workflows.terminate(args.workflow_id, args.reason)
    _emit({"workflowId": args.workflow_id, "status": WorkflowStatus.TERMINATED.value})
    return EXIT_OK


_Action = Callable[[ConductorClient, argparse.Namespace], int]


def run(args: argparse.Namespace) -> int:
    """Run the ``task``/``workflow`` action that argparse chose; maps every failure to one line."""
    action: _Action = args.action
    try:
        client = _client(args)
    except InvalidOptionError as exc:
        return fail(exc, EXIT_USAGE)
    try:
        with client:
            return action(client, args)
    except UsageError as exc:
        return fail(exc, EXIT_USAGE)
    except ConductorError as exc:  # APIError (not found, conflict, auth...), TransportError, ...
        log.debug("%s failed", args.command, exc_info=True)
        return fail(exc, EXIT_REFUSED)
    except KeyboardInterrupt:
        return fail("interrupted", 130)


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--server-url", metavar="URL", default=None,
                        help="server API URL (default: $CONDUCTOR_SERVER_URL or http://localhost:8080/api);"
                             " auth from $CONDUCTOR_AUTH_KEY and $CONDUCTOR_AUTH_SECRET")
    common.add_argument("--log-level", default="error", choices=["debug", "info", "warning", "error"],
                        help="logging level on stderr; default error (a failure is one line there anyway)")
    return common


_STATUSES = [status.value for status in TaskResultStatus]


def _output_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", metavar="JSON|@FILE", default=None,
                        help="the task's output: a JSON object, or @file with one (@- reads stdin)")


def add_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the ``task`` and ``workflow`` commands to ``commands`` (their handlers: :data:`COMMANDS`)."""
    common = _common()

    task = commands.add_parser("task", help="get or update a task")
    task_actions = task.add_subparsers(dest="action_name", metavar="ACTION")
    task_actions.required = True

    get = task_actions.add_parser("get", parents=[common], help="print a task")
    get.add_argument("task_id", metavar="TASK_ID")
    get.add_argument("--external", action="store_true",
                     help="download input/output the server keeps in external storage")
    get.set_defaults(action=_task_get)

    update = task_actions.add_parser("update", parents=[common], help="report a result for a task, by its id")
    update.add_argument("task_id", metavar="TASK_ID")
    update.add_argument("--status", required=True, choices=_STATUSES)
    _output_option(update)
    update.add_argument("--reason", metavar="TEXT", default=None, help="reason for incompletion (FAILED...)")
    update.add_argument("--callback-after", metavar="SECONDS", type=int, default=0,
                        help="with IN_PROGRESS: hand the task out again after SECONDS")
    update.add_argument("--workflow-id", metavar="ID", default=None,
                        help="the task's workflow (default: fetched with the task)")
    update.set_defaults(action=_task_update)

    by_ref = task_actions.add_parser("update-by-ref", parents=[common],
                                     help="report a result for a workflow's pending task, by reference name")
    by_ref.add_argument("workflow_id", metavar="WORKFLOW_ID")
    by_ref.add_argument("ref_name", metavar="REF_NAME")
    by_ref.add_argument("--status", required=True, choices=_STATUSES)
    _output_option(by_ref)
    by_ref.add_argument("--sync", action="store_true", help="print the workflow as it is after the update")
    by_ref.set_defaults(action=_task_update_by_ref)

    workflow = commands.add_parser("workflow", help="start, get or terminate a workflow")
    workflow_actions = workflow.add_subparsers(dest="action_name", metavar="ACTION")
    workflow_actions.required = True

    start = workflow_actions.add_parser("start", parents=[common], help="start a workflow, print its id")
    start.add_argument("name", metavar="NAME")
    start.add_argument("--version", type=int, default=None, help="definition version (default: latest)")
    start.add_argument("--input", metavar="JSON|@FILE", default=None,
                       help="the workflow's input: a JSON object, or @file with one (@- reads stdin)")
    start.add_argument("--correlation-id", metavar="ID", default=None)
    start.add_argument("--priority", type=int, default=0, help="0-99; default 0")
    start.add_argument("--wait", metavar="SECONDS", type=float, default=None,
                       help="wait up to SECONDS for it to end and print it; exit 1 unless it COMPLETED")
    start.set_defaults(action=_workflow_start)

    wf_get = workflow_actions.add_parser("get", parents=[common], help="print a workflow")
    wf_get.add_argument("workflow_id", metavar="WORKFLOW_ID")
    wf_get.add_argument("--tasks", action="store_true", help="include its tasks")
    wf_get.add_argument("--external", action="store_true",
                        help="download input/output the server keeps in external storage")
    wf_get.set_defaults(action=_workflow_get)

    terminate = workflow_actions.add_parser("terminate", parents=[common],
                                            help="terminate a running workflow")
    terminate.add_argument("workflow_id", metavar="WORKFLOW_ID")
    terminate.add_argument("--reason", metavar="TEXT", default=None)
    terminate.set_defaults(action=_workflow_terminate)



#: the commands :func:`add_commands` adds, with their handler (for ``__main__._COMMANDS``)
COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {"task": run, "workflow": run}


# -- server options ------------------------------------------------------------------------------


def parse_auth(value: Optional[str]) -> Optional[Tuple[str, str]]:
    """``KEY_ID:SECRET`` as a pair (the secret may contain ':'); None or '' is None."""
    if not value:
        return None
    key_id, sep, secret = value.partition(":")
    if not sep or not key_id or not secret:
        raise UsageError("--auth must be KEY_ID:SECRET")
    return key_id, secret


def tls_context(cert: Optional[str], key: Optional[str]) -> Optional[ssl.SSLContext]:
    """A server-side context for ``--tls-cert``/``--tls-key`` (no ``--tls-key``: the key is in the cert file).

    A file that cannot be read or does not hold a matching certificate and key raises OSError or
    ssl.SSLError.
    """
    if cert is None:
        if key is not None:
            raise UsageError("--tls-key needs --tls-cert")
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def describe_os_error(exc: OSError) -> str:
    """``[Errno 98] Address already in use`` as ``address already in use`` (after the file name, if any)."""
    text = exc.strerror or str(exc)
    text = text[:1].lower() + text[1:]
    return f"{exc.filename}: {text}" if exc.filename else text


__all__: List[str] = [
    "COMMANDS", "UsageError", "add_commands", "describe_os_error", "fail", "parse_auth", "run", "tls_context",
]
