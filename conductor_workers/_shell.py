"""The ``task`` and ``workflow`` shell commands, and the option handling of ``server``.

``conductor-workers task get ID``, ``task update ID --status COMPLETED``, ``task update-by-ref --workflow-id
WF --ref-name REF`` (or ``WF REF``, in that order), ``workflow start NAME``, ``workflow get ID`` (with its
tasks unless ``--no-tasks``) and ``workflow terminate ID`` drive a server through the
same :class:`~conductor_workers.client.ConductorClient` as the library: the server URL and auth come
from :meth:`Configuration.from_env <conductor_workers.config.Configuration.from_env>`, and
``--server-url`` overrides the URL.

Answers are JSON on stdout. A failure is one line on stderr and an exit code: 1 when the server said no
(not found, conflict, auth...) or could not be reached, 2 for a usage error (argparse's own, a bad
``--output``/``--input``, a bad number, a bad server URL), found before anything is sent. Output cut
short (``... | head``) ends the command quietly with 141, as a shell reports a process that SIGPIPE
ended (``__main__`` handles that for every command).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import ssl
import sys
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, NoReturn, Optional, Sequence, Tuple

from .client import ConductorClient
from .config import Configuration
from .errors import ConductorError, InvalidOptionError, NotFoundError, WorkflowTimeoutError
from .executor import WorkflowExecutor
from .models import TaskResult, TaskResultStatus, WorkflowStatus

if TYPE_CHECKING:  # pragma: no cover
    from _typeshed import SupportsWrite

log = logging.getLogger(__name__)

PROG = "conductor-workers"

#: exit codes of the shell commands
EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2
#: output cut short (the reader of stdout went away): 128 + SIGPIPE, what a shell shows for ``git log | head``
EXIT_OUTPUT_CLOSED = 141

#: JSON given on the command line may nest this deep: the client must still encode it from deep in its own
#: stack (Python's recursion limit is 1000 frames, and the json module recurses once per level)
MAX_JSON_DEPTH = 500


class UsageError(Exception):
    """A command line value that cannot be used (exit code 2)."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (exit code 2), as every other failure,
    and whose ``--help`` lets a broken pipe through (argparse's own printing ignores it, exit code 0)."""

    def error(self, message: str) -> NoReturn:
        text = " ".join(message.split())
        self.exit(EXIT_USAGE, f"{self.prog}: error: {text} (see --help)\n")

    def print_help(self, file: Optional["SupportsWrite[str]"] = None) -> None:
        (file if file is not None else sys.stdout).write(self.format_help())


class PrintVersion(argparse.Action):
    """``--version``: print ``PROG VERSION`` on stdout and exit 0 (a broken pipe reaches the caller)."""

    def __init__(self, option_strings: Sequence[str], version: str, dest: str = argparse.SUPPRESS,
                 help: Optional[str] = "show the version and exit") -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, help=help)
        self.version = version

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: Optional[str] = None) -> None:
        sys.stdout.write(f"{parser.prog} {self.version}\n")
        parser.exit()


def fail(message: object, code: int) -> int:
    """Write ``message`` as one line on stderr and return ``code``."""
    text = " ".join(str(message).split()) or "failed"
    print(f"{PROG}: error: {text}", file=sys.stderr, flush=True)
    return code


def _emit(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")
    sys.stdout.flush()


def _json_depth_over(value: Any, limit: int) -> bool:
    """True when ``value`` nests objects/arrays more than ``limit`` levels deep (walked without recursion)."""
    pending = [(value, 1)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if level > limit:
            return True
        pending.extend((child, level + 1) for child in children)
    return False


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON value")


def _read_text(path: str, option: str) -> str:
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as handle:
                data = handle.read()
    except OSError as exc:
        raise UsageError(f"{option}: cannot read {path!r}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")  # a BOM, as some editors write, is not part of the JSON
    except UnicodeDecodeError as exc:
        where = "standard input" if path == "-" else repr(path)
        raise UsageError(f"{option}: {where} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def read_json_object(value: Optional[str], option: str) -> Dict[str, Any]:
    """A JSON object given inline or as ``@file`` (``@-``: standard input); None is ``{}``.

    Every way it can be unusable is a :class:`UsageError` naming ``option``: a file that cannot be read
    or is not UTF-8, text that is not JSON (``NaN``/``Infinity`` included), a value that is not an
    object, or one nested deeper than :data:`MAX_JSON_DEPTH` levels.
    """
    if value is None:
        return {}
    text = _read_text(value[1:], option) if value.startswith("@") else value
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise UsageError(f"{option}: nested too deep (at most {MAX_JSON_DEPTH} levels)") from None
    except ValueError as exc:
        raise UsageError(f"{option}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{option}: expected a JSON object, got {type(data).__name__}")
    if _json_depth_over(data, MAX_JSON_DEPTH):
        raise UsageError(f"{option}: nested too deep (at most {MAX_JSON_DEPTH} levels)")
    return data


def wait_seconds(text: str) -> float:
    """``--wait``: a finite number of seconds a wait can use (0 to ``threading.TIMEOUT_MAX``)."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(seconds) or not 0 <= seconds <= threading.TIMEOUT_MAX:
        raise argparse.ArgumentTypeError(f"must be between 0 and {threading.TIMEOUT_MAX:.0f} seconds, got {text!r}")
    return seconds


def _int_between(minimum: int, maximum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not minimum <= number <= maximum:
            raise argparse.ArgumentTypeError(f"must be between {minimum} and {maximum}, got {text!r}")
        return number

    return parse


# -- task / workflow commands --------------------------------------------------------------------


def _client(args: argparse.Namespace) -> ConductorClient:
    if args.server_url:
        return ConductorClient(Configuration.from_env(server_url=args.server_url))
    return ConductorClient(Configuration.from_env())


def _task_get(client: ConductorClient, args: argparse.Namespace) -> int:
    _emit(client.tasks.get_task(args.task_id, include_external=args.external).to_json())
    return EXIT_OK


def _task_update(client: ConductorClient, args: argparse.Namespace) -> int:
    output = read_json_object(args.output, "--output")
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


_BY_REF_FORMS = ("task update-by-ref takes --workflow-id ID --ref-name REF, or WORKFLOW_ID REF_NAME in that order"
                 " (WorkflowExecutor.update_task_by_ref_name takes them the other way round)")


def _by_ref_target(args: argparse.Namespace) -> Tuple[str, str, bool]:
    """The workflow id and reference name, named or positional (never a mix); True when positional."""
    positional = [value for value in (args.positional_workflow_id, args.positional_ref_name) if value is not None]
    named = [value for value in (args.workflow_id, args.ref_name) if value is not None]
    if len(named) == 2 and not positional:
        return args.workflow_id, args.ref_name, False
    if len(positional) == 2 and not named:
        return positional[0], positional[1], True
    raise UsageError(f"{_BY_REF_FORMS}: both, named or positional, not a mix (see --help)")


def _task_update_by_ref(client: ConductorClient, args: argparse.Namespace) -> int:
    workflow_id, ref_name, positional = _by_ref_target(args)
    output = read_json_object(args.output, "--output")
    status = TaskResultStatus.coerce(args.status)
    try:
        if args.sync:
            workflow = client.tasks.update_task_by_ref_name_sync(
                workflow_id=workflow_id, ref_name=ref_name, status=status, output=output
            )
            _emit(workflow.to_json())
            return EXIT_OK
        task_id = client.tasks.update_task_by_ref_name(
            workflow_id=workflow_id, ref_name=ref_name, status=status, output=output
        )
    except NotFoundError as exc:
        if not positional:
            raise
        return fail(f"{exc} ({_BY_REF_FORMS})", EXIT_REFUSED)  # perhaps the two swapped
    _emit({"taskId": task_id, "workflowId": workflow_id, "status": status.value})
    return EXIT_OK


def _status_name(status: object) -> str:
    return str(getattr(status, "value", status))


def _workflow_start(client: ConductorClient, args: argparse.Namespace) -> int:
    workflow_input = read_json_object(args.input, "--input")
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
    printed = workflow.to_json()
    if not args.tasks:
        printed.pop("tasks", None)  # left out on request, which an empty list would hide
    _emit(printed)
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
    update.add_argument("--callback-after", metavar="SECONDS", type=_int_between(0, 2**31 - 1), default=0,
                        help="with IN_PROGRESS: hand the task out again after SECONDS")
    update.add_argument("--workflow-id", metavar="ID", default=None,
                        help="the task's workflow (default: fetched with the task)")
    update.set_defaults(action=_task_update)

    by_ref = task_actions.add_parser(
        "update-by-ref", parents=[common],
        help="report a result for a workflow's pending task, by reference name",
        description="Name the two values (--workflow-id ID --ref-name REF), or give them as WORKFLOW_ID REF_NAME"
                    " in that order; WorkflowExecutor.update_task_by_ref_name(ref, workflow_id, ...) takes them"
                    " the other way round.",
    )
    by_ref.add_argument("positional_workflow_id", nargs="?", metavar="WORKFLOW_ID")
    by_ref.add_argument("positional_ref_name", nargs="?", metavar="REF_NAME")
    by_ref.add_argument("--workflow-id", metavar="ID", default=None, help="the workflow (instead of WORKFLOW_ID)")
    by_ref.add_argument("--ref-name", "--ref", metavar="REF", default=None,
                        help="the task's reference name in the workflow (instead of REF_NAME)")
    by_ref.add_argument("--status", required=True, choices=_STATUSES)
    _output_option(by_ref)
    by_ref.add_argument("--sync", action="store_true", help="print the workflow as it is after the update")
    by_ref.set_defaults(action=_task_update_by_ref)

    workflow = commands.add_parser("workflow", help="start, get or terminate a workflow")
    workflow_actions = workflow.add_subparsers(dest="action_name", metavar="ACTION")
    workflow_actions.required = True

    start = workflow_actions.add_parser("start", parents=[common], help="start a workflow, print its id")
    start.add_argument("name", metavar="NAME")
    start.add_argument("--version", type=_int_between(1, 2**31 - 1), default=None,
                       help="definition version (default: latest)")
    start.add_argument("--input", metavar="JSON|@FILE", default=None,
                       help="the workflow's input: a JSON object, or @file with one (@- reads stdin)")
    start.add_argument("--correlation-id", metavar="ID", default=None)
    start.add_argument("--priority", type=_int_between(0, 99), default=0, help="0-99; default 0")
    start.add_argument("--wait", metavar="SECONDS", type=wait_seconds, default=None,
                       help="wait up to SECONDS for it to end and print it; exit 1 unless it COMPLETED")
    start.set_defaults(action=_workflow_start)

    wf_get = workflow_actions.add_parser("get", parents=[common], help="print a workflow")
    wf_get.add_argument("workflow_id", metavar="WORKFLOW_ID")
    wf_get.add_argument("--tasks", action=argparse.BooleanOptionalAction, default=True,
                        help="include its tasks, as the server does by default; --no-tasks leaves the key out")
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


#: the environment variables the ``server`` command reads its credentials from
AUTH_FILE_ENV, AUTH_ENV = "LOCAL_CONDUCTOR_AUTH_FILE", "LOCAL_CONDUCTOR_AUTH"

AUTH_ON_COMMAND_LINE = (
    "--auth would show the secret to anyone who can list processes (ps): put KEY_ID:SECRET in a file and pass"
    f" --auth-file PATH (or set ${AUTH_FILE_ENV}=PATH), or set ${AUTH_ENV}=KEY_ID:SECRET"
)


def parse_auth(value: Optional[str], source: str = f"${AUTH_ENV}") -> Optional[Tuple[str, str]]:
    """``KEY_ID:SECRET`` as a pair (the secret may contain ':'); None or '' is None.

    A malformed value is a :class:`UsageError` that names ``source`` and never repeats the value.
    """
    if not value:
        return None
    key_id, sep, secret = value.partition(":")
    if not sep or not key_id or not secret:
        raise UsageError(f"{source} must hold KEY_ID:SECRET")
    return key_id, secret


def read_auth_file(path: str, source: str = "--auth-file") -> Tuple[str, str]:
    """The ``(key_id, secret)`` of a file holding one line ``KEY_ID:SECRET`` (blank lines aside)."""
    described = f"{source} {path}"
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UsageError(f"{described}: cannot read it: {reason[:1].lower() + reason[1:]}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(f"{described}: not UTF-8 text; it must hold one line KEY_ID:SECRET") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise UsageError(f"{described}: must hold one line KEY_ID:SECRET, not {len(lines)}")
    pair = parse_auth(lines[0], described)
    assert pair is not None  # the line is not blank
    return pair


def server_auth(auth_file: Optional[str], environ: Mapping[str, str]) -> Optional[Tuple[str, str]]:
    """The credentials the ``server`` command requires: ``--auth-file``, else ``$LOCAL_CONDUCTOR_AUTH_FILE``,
    else ``$LOCAL_CONDUCTOR_AUTH`` (``KEY_ID:SECRET``), else none."""
    if auth_file:
        return read_auth_file(auth_file)
    if environ.get(AUTH_FILE_ENV):
        return read_auth_file(environ[AUTH_FILE_ENV], f"${AUTH_FILE_ENV}")
    return parse_auth(environ.get(AUTH_ENV))


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
    "AUTH_ON_COMMAND_LINE", "COMMANDS", "EXIT_OUTPUT_CLOSED", "OneLineParser", "PrintVersion", "UsageError",
    "add_commands",
    "describe_os_error", "fail", "parse_auth", "read_auth_file", "read_json_object", "run", "server_auth",
    "tls_context", "wait_seconds",
]
