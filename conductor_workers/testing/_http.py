"""HTTP front end of :class:`~conductor_workers.testing.LocalConductor` (stdlib ``http.server``).

Routes the Conductor REST paths (all under ``/api``) to the :class:`~._engine.Engine`, validates
input strictly and answers every error with a Conductor ``ErrorResponse`` JSON body. Each
response is written with one ``sendall`` (status line, headers and body together) on a socket
with ``TCP_NODELAY``: see the Nagle note in the performance notes.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import socket
import ssl
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Callable, Dict, List, Optional, Pattern, Tuple
from urllib.parse import parse_qs, quote, unquote, urlsplit

from ._connections import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_THREADS,
    Connection,
    ConnectionManager,
)
from ._engine import (
    RESULT_STATUSES,
    BadRequest,
    Engine,
    EngineError,
    NotFound,
    check_priority,
    now_ms,
)
from ._workflow_ops import signal_strategy

log = logging.getLogger(__name__)

PAYLOAD_TYPES = ("TASK_INPUT", "TASK_OUTPUT", "WORKFLOW_INPUT", "WORKFLOW_OUTPUT")

#: Largest request body accepted; bigger bodies get 413 (and are drained, up to DRAIN_LIMIT). Above
#: the 10 MB payload maximum, so that such a task result reaches the engine, which fails the task.
MAX_BODY_BYTES = 16 * 1024 * 1024
#: Bodies up to this size are read and discarded so that the connection stays usable.
DRAIN_LIMIT = 256 * 1024 * 1024
#: The longest batch-poll timeout the server accepts, in ms.
MAX_POLL_TIMEOUT_MS = 5000
#: update-v2 and the single poll look up a task with a 1-task, 100 ms poll (as the server does).
SINGLE_POLL_TIMEOUT_MS = 100

_HOST = socket.gethostname()


class Response:
    """A complete HTTP response: status, content type and body bytes."""

    __slots__ = ("status", "body", "content_type", "close")

    def __init__(self, status: int, body: bytes = b"", content_type: Optional[str] = None) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.close = False


def json_response(status: int, obj: Any) -> Response:
    return Response(status, json.dumps(obj, separators=(",", ":")).encode(), "application/json")


def text_response(text: Optional[str]) -> Response:
    return Response(200, (text or "").encode(), "text/plain;charset=UTF-8")


def error_body(status: int, message: str, validation_errors: Optional[List[Any]] = None) -> Dict[str, Any]:
    """A Conductor ``ErrorResponse`` (validation failures carry no ``instance``, as on the server)."""
    body: Dict[str, Any] = {"status": status, "message": message}
    if validation_errors is None:
        body["instance"] = _HOST
    body["retryable"] = False
    if validation_errors is not None:
        body["validationErrors"] = validation_errors
    return body


def error_response(status: int, message: str, validation_errors: Optional[List[Any]] = None) -> Response:
    return json_response(status, error_body(status, message, validation_errors))


class Request:
    """What a route handler sees: path parameters, query parameters and the raw body."""

    __slots__ = ("method", "path", "params", "query", "body", "headers")

    def __init__(self, method: str, path: str, query: Dict[str, List[str]], body: bytes,
                 headers: Any) -> None:
        self.method = method
        self.path = path
        self.params: Dict[str, str] = {}
        self.query = query
        self.body = body
        self.headers = headers

    # Query parameters ------------------------------------------------------------------------
    def arg(self, name: str, default: Optional[str] = None) -> Optional[str]:
        values = self.query.get(name)
        return values[0] if values else default

    def int_arg(self, name: str, default: Optional[int] = None) -> Optional[int]:
        value = self.arg(name)
        if value is None or value == "":
            return default
        try:
            number = int(value)
        except ValueError:
            raise BadRequest("Invalid value %r for query parameter %s: expected an integer" % (value, name))
        if not -(2 ** 31) <= number < 2 ** 31:  # a Java int, as the real server binds it
            raise BadRequest("Invalid value %r for query parameter %s: out of range" % (value, name))
        return number

    def bool_arg(self, name: str, default: bool) -> bool:
        value = self.arg(name)
        if value is None or value == "":
            return default
        if value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise BadRequest("Invalid value %r for query parameter %s: expected true or false" % (value, name))

    # Body ---------------------------------------------------------------------------------------
    def json(self, required: bool = True) -> Any:
        if not self.body.strip():
            if required:
                raise BadRequest("Required request body is missing")
            return None
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as error:
            raise BadRequest("Malformed JSON request body: %s" % error)
        except RecursionError:
            raise BadRequest("Malformed JSON request body: nested too deeply") from None

    def json_object(self, what: str) -> Dict[str, Any]:
        body = self.json()
        if not isinstance(body, dict):
            raise BadRequest("Invalid request body: expected a JSON object (%s)" % what)
        return body

    def text(self) -> str:
        try:
            return self.body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("Request body is not valid UTF-8")


Handler = Callable[[Request], Response]


class Router:
    """A small ordered routing table: ``METHOD /api/path/{param}`` → handler."""

    def __init__(self) -> None:
        self._routes: List[Tuple[str, Pattern[str], Handler]] = []

    def add(self, method: str, template: str, handler: Handler) -> None:
        pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
        self._routes.append((method, re.compile("^" + pattern + "$"), handler))

    def resolve(self, method: str, path: str) -> Tuple[Optional[Handler], Dict[str, str], bool]:
        """The handler and path parameters; the flag says whether the path exists at all."""
        path_known = False
        for route_method, pattern, handler in self._routes:
            match = pattern.match(path)
            if match is None:
                continue
            path_known = True
            if route_method == method:
                return handler, {key: unquote(value) for key, value in match.groupdict().items()}, True
        return None, {}, path_known


# --------------------------------------------------------------------------------------------
# Route handlers
# --------------------------------------------------------------------------------------------


class Api:
    """The Conductor REST API on top of an :class:`Engine`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.router = Router()
        self.root_url = ""  # scheme://host:port, set by LocalConductor once bound (payload URIs)
        self._add_routes()

    def _add_routes(self) -> None:
        add = self.router.add
        for path in ("/health", "/api/health"):
            add("GET", path, self.health)
        # Metadata
        add("POST", "/api/metadata/taskdefs", self.register_task_defs)
        add("PUT", "/api/metadata/taskdefs", self.update_task_def)
        add("GET", "/api/metadata/taskdefs", lambda r: json_response(200, self.engine.task_defs()))
        add("GET", "/api/metadata/taskdefs/{name}",
            lambda r: json_response(200, self.engine.task_def(r.params["name"])))
        add("DELETE", "/api/metadata/taskdefs/{name}", self.delete_task_def)
        add("POST", "/api/metadata/workflow", self.create_workflow_def)
        add("PUT", "/api/metadata/workflow",
            lambda r: json_response(200, self.engine.upsert_workflow_defs(r.json())))
        add("GET", "/api/metadata/workflow", lambda r: json_response(200, self.engine.workflow_defs()))
        add("GET", "/api/metadata/workflow/{name}", self.get_workflow_def)
        add("DELETE", "/api/metadata/workflow/{name}/{version}", self.delete_workflow_def)
        # External payload storage (its own, answered like S3 pre-signed URLs: no auth needed)
        for api in ("tasks", "workflow"):
            for name in ("externalstoragelocation", "external-storage-location"):
                add("GET", "/api/%s/%s" % (api, name), self.storage_location)
        add("GET", "/api/external/local/{key}", lambda r: json_response(200, self.engine.payload(r.params["key"])))
        add("PUT", "/api/external/local/{key}", self.store_payload)
        # Tasks (specific paths before the generic /{taskId} ones)
        add("GET", "/api/tasks/poll/batch/{taskType}", self.batch_poll)
        add("GET", "/api/tasks/poll/{taskType}", self.poll)
        add("POST", "/api/tasks", self.update_task)
        add("POST", "/api/tasks/update-v2", self.update_task_v2)
        add("GET", "/api/tasks/queue/sizes", self.queue_sizes)
        add("GET", "/api/tasks/queue/size", self.queue_size)
        add("GET", "/api/tasks/queue/all", lambda r: json_response(200, self.engine.all_queue_sizes()))
        add("GET", "/api/tasks/queue/polldata", self.poll_data)
        add("GET", "/api/tasks/queue/polldata/all", lambda r: json_response(200, self.engine.poll_data(None)))
        add("GET", "/api/tasks/{taskId}",
            lambda r: json_response(200, self.engine.get_task(r.params["taskId"])))
        add("POST", "/api/tasks/{taskId}/log", self.add_log)
        add("GET", "/api/tasks/{taskId}/log", self.get_logs)
        # the signal paths first: the update-by-reference-name pattern below matches them too
        add("POST", "/api/tasks/{workflowId}/{status}/signal", self.signal)
        add("POST", "/api/tasks/{workflowId}/{status}/signal/sync", self.signal_sync)
        add("POST", "/api/tasks/{workflowId}/{taskRefName}/{status}", self.update_by_ref)
        add("POST", "/api/tasks/{workflowId}/{taskRefName}/{status}/sync", self.update_by_ref_sync)
        # Workflows
        add("POST", "/api/workflow", self.start_workflow_request)
        add("GET", "/api/workflow/running/{name}", self.running)
        add("POST", "/api/workflow/test", self.test_workflow)  # before POST /workflow/{name}
        add("POST", "/api/workflow/execute/{name}/{version}", self.execute_workflow)
        add("GET", "/api/workflow/{name}/correlated/{correlationId}", self.correlated)
        add("POST", "/api/workflow/{name}/correlated", self.correlated_batch)
        add("GET", "/api/workflow/{workflowId}/status", self.workflow_status)
        add("PUT", "/api/workflow/{workflowId}/skiptask/{taskReferenceName}", self.skip_task)
        add("POST", "/api/workflow/{workflowId}/rerun", self.rerun)
        add("POST", "/api/workflow/{name}", self.start_workflow)
        add("GET", "/api/workflow/{workflowId}", self.get_workflow)
        add("DELETE", "/api/workflow/{workflowId}", self.terminate)
        add("DELETE", "/api/workflow/{workflowId}/remove", self.remove)
        add("DELETE", "/api/workflow/{workflowId}/terminate-remove", self.terminate_remove)
        add("PUT", "/api/workflow/{workflowId}/pause", self.pause)
        add("PUT", "/api/workflow/{workflowId}/resume", self.resume)
        add("POST", "/api/workflow/{workflowId}/retry", self.retry)
        add("POST", "/api/workflow/{workflowId}/restart", self.restart)

    # External payload storage ----------------------------------------------------------------------
    def storage_location(self, request: Request) -> Response:
        path, operation, payload_type = (request.arg(name) for name in ("path", "operation", "payloadType"))
        if path is None or operation is None or payload_type is None:
            return error_response(400, "Required request parameters: path, operation, payloadType")
        if operation.upper() not in ("READ", "WRITE") or payload_type.upper() not in PAYLOAD_TYPES:
            return error_response(400, "Invalid input - Operation: %s, PayloadType: %s" % (operation, payload_type))
        key = path or "%s.json" % uuid.uuid4()
        return json_response(200, {"uri": "%s/api/external/local/%s" % (self.root_url, quote(key, safe="")),
                                   "path": key})

    def store_payload(self, request: Request) -> Response:
        self.engine.store_payload(request.params["key"], request.json())
        return Response(200)

    # Health and metadata ------------------------------------------------------------------------
    def health(self, request: Request) -> Response:
        return json_response(200, {"healthy": True, "healthResults": [], "suppressedHealthResults": []})

    def register_task_defs(self, request: Request) -> Response:
        self.engine.register_task_defs(request.json())
        return Response(200)

    def update_task_def(self, request: Request) -> Response:
        self.engine.update_task_def(request.json())
        return Response(200)

    def delete_task_def(self, request: Request) -> Response:
        self.engine.delete_task_def(request.params["name"])
        return Response(200)

    def create_workflow_def(self, request: Request) -> Response:
        self.engine.create_workflow_def(request.json(), request.bool_arg("overwrite", False))
        return Response(200)

    def get_workflow_def(self, request: Request) -> Response:
        wf_def = self.engine.workflow_def(request.params["name"], request.int_arg("version"))
        return json_response(200, wf_def)

    def delete_workflow_def(self, request: Request) -> Response:
        version = _int_path(request.params["version"], "version")
        self.engine.delete_workflow_def(request.params["name"], version)
        return Response(200)

    # Tasks --------------------------------------------------------------------------------------
    def batch_poll(self, request: Request) -> Response:
        count = request.int_arg("count", 1) or 0
        timeout = request.int_arg("timeout", 100) or 0
        if timeout > MAX_POLL_TIMEOUT_MS:
            raise BadRequest("Long Poll Timeout value cannot be more than 5 seconds")
        if count < 1:  # conductor-oss on SQLite hands out the whole queue for a negative count (LIMIT -1)
            return json_response(200, [])
        tasks = self.engine.poll(request.params["taskType"], request.arg("workerid"), request.arg("domain"),
                                 count, max(0, timeout))  # a negative timeout: what is there now, as there
        return json_response(200, tasks)

    def poll(self, request: Request) -> Response:
        tasks = self.engine.poll(request.params["taskType"], request.arg("workerid"), request.arg("domain"),
                                 1, SINGLE_POLL_TIMEOUT_MS)
        return json_response(200, tasks[0]) if tasks else Response(204)

    def update_task(self, request: Request) -> Response:
        body = request.json()
        self.engine.update_task(body)
        return text_response(body["taskId"])

    def update_task_v2(self, request: Request) -> Response:
        next_task = self.engine.update_v2(request.json())
        return json_response(200, next_task) if next_task else Response(204)

    def queue_sizes(self, request: Request) -> Response:
        return json_response(200, self.engine.queue_sizes(request.query.get("taskType", [])))

    def queue_size(self, request: Request) -> Response:
        task_type = request.arg("taskType")
        if not task_type:
            raise BadRequest("Required request parameter 'taskType' is not present")
        return json_response(200, self.engine.queue_size(task_type, request.arg("domain")))

    def poll_data(self, request: Request) -> Response:
        task_type = request.arg("taskType")
        if not task_type:
            raise BadRequest("Required request parameter 'taskType' is not present")
        return json_response(200, self.engine.poll_data(task_type))

    def add_log(self, request: Request) -> Response:
        if not request.body:  # conductor-oss: @RequestBody String is required (it answers 500)
            raise BadRequest("Required request body is missing")
        self.engine.add_log(request.params["taskId"], request.text())
        return Response(200)

    def get_logs(self, request: Request) -> Response:
        logs = self.engine.logs(request.params["taskId"])
        return json_response(200, logs) if logs else Response(204)

    def _update_by_ref(self, request: Request) -> Optional[Dict[str, Any]]:
        status = request.params["status"]
        if status not in RESULT_STATUSES:
            raise BadRequest("Invalid task status %r: expected one of %s"
                             % (status, ", ".join(RESULT_STATUSES)))
        output = request.json_object("task output")
        return self.engine.update_by_ref(request.params["workflowId"], request.params["taskRefName"], status,
                                         request.arg("workerid"), output)

    def update_by_ref(self, request: Request) -> Response:
        task = self._update_by_ref(request)
        return text_response(task["taskId"] if task else None)

    def update_by_ref_sync(self, request: Request) -> Response:
        if self._update_by_ref(request) is None:
            raise NotFound("Found no running task %s of workflow %s to update"
                           % (request.params["taskRefName"], request.params["workflowId"]))
        return json_response(200, self.engine.get_workflow(request.params["workflowId"]))

    def _signal_status(self, request: Request) -> str:
        status = request.params["status"]
        if status not in RESULT_STATUSES:
            raise BadRequest("Invalid task status %r: expected one of %s" % (status, ", ".join(RESULT_STATUSES)))
        return status

    def signal(self, request: Request) -> Response:
        status = self._signal_status(request)
        self.engine.signal(request.params["workflowId"], status, request.json_object("task output"))
        return Response(200)

    def signal_sync(self, request: Request) -> Response:
        status = self._signal_status(request)
        strategy = signal_strategy(request.arg("returnStrategy"))
        timeout_ms = _long_arg(request, "timeoutMillis", 5000)
        workflow_id = request.params["workflowId"]
        if self.engine.signal(workflow_id, status, request.json_object("task output")) is None:
            raise NotFound("Found no blocked task in workflow %s to signal" % workflow_id)
        response = self.engine.await_signal_response(workflow_id, (), strategy, str(uuid.uuid4()),
                                                     timeout_ms / 1000.0)
        return _signal_answer(response)

    # Workflows ----------------------------------------------------------------------------------
    def workflow_status(self, request: Request) -> Response:
        summary = self.engine.workflow_status(request.params["workflowId"], request.bool_arg("includeOutput", False),
                                              request.bool_arg("includeVariables", False))
        return json_response(200, summary)

    def execute_workflow(self, request: Request) -> Response:
        body = request.json_object("StartWorkflowRequest")
        version: Optional[int] = _int_path(request.params["version"], "version")
        wait_seconds = request.int_arg("waitForSeconds", 10) or 10  # 0 means the default too
        strategy = signal_strategy(request.arg("returnStrategy"))
        workflow_def = body.get("workflowDef")
        if isinstance(workflow_def, dict) and workflow_def.get("tasks") and isinstance(body.get("input"), dict):
            body["input"] = dict(body["input"])  # markAsDynamicWorkflow
            metadata = body["input"].get("_systemMetadata")
            body["input"]["_systemMetadata"] = dict(metadata if isinstance(metadata, dict) else {}, dynamic=True)
        body["name"] = request.params["name"]
        body["version"] = version or None  # version 0: the latest
        refs = [ref for ref in (request.arg("waitUntilTaskRef") or "").split(",")] if (
            request.arg("waitUntilTaskRef") or "").strip() else []
        response = self.engine.execute_workflow(body, request.arg("requestId") or None, refs, wait_seconds, strategy)
        return _signal_answer(response)

    def correlated(self, request: Request) -> Response:
        correlation_id = request.params["correlationId"]
        found = self.engine.correlated(request.params["name"], [correlation_id], request.bool_arg("includeClosed", False),
                                       request.bool_arg("includeTasks", False))
        return json_response(200, found[correlation_id])

    def correlated_batch(self, request: Request) -> Response:
        ids = request.json()
        if not isinstance(ids, list) or not all(isinstance(item, str) for item in ids):
            raise BadRequest("Invalid request body: expected a JSON array of correlation ids (strings)")
        found = self.engine.correlated(request.params["name"], ids, request.bool_arg("includeClosed", False),
                                       request.bool_arg("includeTasks", False))
        return json_response(200, found)

    def test_workflow(self, request: Request) -> Response:
        return json_response(200, self.engine.test_workflow(request.json_object("WorkflowTestRequest")))

    def skip_task(self, request: Request) -> Response:
        # conductor-oss binds SkipTaskRequest from the query, not the body: a body is ignored there too
        self.engine.skip_task(request.params["workflowId"], request.params["taskReferenceName"])
        return Response(200)

    def rerun(self, request: Request) -> Response:
        body = request.json_object("RerunWorkflowRequest")
        body["reRunFromWorkflowId"] = request.params["workflowId"]
        return text_response(self.engine.rerun(request.params["workflowId"], body))

    def start_workflow_request(self, request: Request) -> Response:
        return text_response(self.engine.start_workflow(request.json_object("StartWorkflowRequest")))

    def start_workflow(self, request: Request) -> Response:
        body = request.json()
        if not isinstance(body, dict):
            raise BadRequest("Invalid request body: expected a JSON object (workflow input)")
        priority = request.int_arg("priority", 0) or 0
        check_priority(priority)
        start = {"name": request.params["name"], "version": request.int_arg("version"),
                 "correlationId": request.arg("correlationId"), "priority": priority, "input": body}
        return text_response(self.engine.start_workflow(start))

    def get_workflow(self, request: Request) -> Response:
        include_tasks = request.bool_arg("includeTasks", True)
        workflow = self.engine.get_workflow(request.params["workflowId"], include_tasks)
        return json_response(200, workflow)

    def terminate(self, request: Request) -> Response:
        self.engine.terminate(request.params["workflowId"], request.arg("reason"))
        return Response(200)

    def remove(self, request: Request) -> Response:
        self.engine.remove(request.params["workflowId"], request.bool_arg("archiveWorkflow", True))
        return Response(200)

    def terminate_remove(self, request: Request) -> Response:
        workflow_id = request.params["workflowId"]
        try:
            self.engine.terminate(workflow_id, request.arg("reason"))
        except EngineError as error:
            if error.status != 409:  # a COMPLETED workflow is simply removed
                raise
        self.engine.remove(workflow_id, request.bool_arg("archiveWorkflow", True))
        return Response(200)

    def pause(self, request: Request) -> Response:
        self.engine.pause(request.params["workflowId"])
        return Response(200)

    def resume(self, request: Request) -> Response:
        self.engine.resume(request.params["workflowId"])
        return Response(200)

    def retry(self, request: Request) -> Response:
        self.engine.retry(request.params["workflowId"])
        return Response(204)

    def restart(self, request: Request) -> Response:
        self.engine.restart(request.params["workflowId"], request.bool_arg("useLatestDefinitions", False))
        return Response(204)

    def running(self, request: Request) -> Response:
        version = request.int_arg("version", 1)
        return json_response(200, self.engine.running(request.params["name"], version or 1))


def _long_arg(request: Request, name: str, default: int) -> int:
    value = request.arg(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise BadRequest("Invalid value %r for query parameter %s: expected an integer" % (value, name))


def _signal_answer(response: Optional[Dict[str, Any]]) -> Response:
    """A SignalResponse; an empty 200 where the server has none (a task strategy, no blocking task)."""
    return Response(200) if response is None else json_response(200, response)


def _int_path(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise BadRequest("Invalid value %r for path parameter %s: expected an integer" % (value, name))


# --------------------------------------------------------------------------------------------
# Orkes-style token authentication
# --------------------------------------------------------------------------------------------


class TokenAuth:
    """``POST /api/token`` and the ``X-Authorization`` check, as Orkes Conductor does it."""

    def __init__(self, key_id: str, key_secret: str, ttl: float) -> None:
        self._key = (key_id, key_secret)
        self._ttl = ttl
        self._tokens: Dict[str, float] = {}  # token -> monotonic expiry
        self._lock = threading.Lock()

    def issue(self, request: Request) -> Response:
        body = request.json_object("GenerateTokenRequest")
        if (body.get("keyId"), body.get("keySecret")) != self._key:
            return error_response(401, "Invalid credentials: unknown keyId or keySecret")
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = time.monotonic() + self._ttl
        return json_response(200, {"token": token})

    def check(self, header: Optional[str]) -> Optional[Response]:
        """None when ``header`` holds a valid token, else the 401 response to send."""
        if not header:
            return self._denied("INVALID_TOKEN", "Token cannot be null or empty")
        with self._lock:
            expiry = self._tokens.get(header)
        if expiry is None:
            return self._denied("INVALID_TOKEN", "Invalid token")
        if time.monotonic() >= expiry:
            return self._denied("EXPIRED_TOKEN", "Token expired")
        return None

    def expire_all(self) -> None:
        with self._lock:
            for token in self._tokens:
                self._tokens[token] = 0.0

    @staticmethod
    def _denied(code: str, message: str) -> Response:
        return json_response(401, {"message": message, "error": code, "timestamp": now_ms()})


# --------------------------------------------------------------------------------------------
# Server and request handler
# --------------------------------------------------------------------------------------------


class ConductorHTTPServer(HTTPServer):
    """The HTTP server: accepts connections and hands them to a :class:`ConnectionManager`.

    A connection holds a thread only while it has a request to serve (see ``_connections``), so
    silent or idle connections cost a file descriptor, not a thread.
    """

    allow_reuse_address = True
    request_queue_size = 1024  # listen backlog: socketserver's 5 stalls bursts of new connections 1 s

    def __init__(self, address: Tuple[str, int], api: Api, auth: Optional[TokenAuth] = None,
                 tls: Optional[ssl.SSLContext] = None,
                 max_threads: int = DEFAULT_MAX_THREADS, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> None:
        super().__init__(address, RequestHandler, bind_and_activate=False)
        self.api = api
        self.auth = auth
        try:
            self.server_bind()
            self.server_activate()
        except BaseException:
            self.server_close()
            raise
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
        self.connections = ConnectionManager(self._serve, max_threads=max_threads,
                                             max_connections=max_connections, idle_timeout=idle_timeout)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.connections.add(request, client_address)

    def _serve(self, connection: Connection) -> bool:
        """Serve what has arrived on ``connection``; True to keep it open (see ConnectionManager)."""
        sock = connection.sock
        try:
            if not connection.handshaken:
                sock.settimeout(RequestHandler.timeout)
                sock.do_handshake()  # type: ignore[attr-defined]
                connection.handshaken = True
            handler = RequestHandler(sock, connection.address, self)
            try:
                return handler.serve_arrived()
            finally:
                handler.finish()
        except (OSError, ValueError):  # reset, closed or a failed TLS handshake: nothing to answer
            log.debug("connection from %s failed", connection.address, exc_info=True)
            return False

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s failed", client_address, exc_info=True)

    def close_all(self, timeout: float = 5.0) -> None:
        """Close every open connection and join the threads serving them."""
        self.connections.close(timeout)


class RequestHandler(BaseHTTPRequestHandler):
    """Parses requests, runs their routes and writes each whole response in one write.

    One handler serves the requests that arrive back to back on a connection; it is made by
    :meth:`ConductorHTTPServer._serve` (not by ``socketserver``), so ``__init__`` only sets up.
    """

    protocol_version = "HTTP/1.1"
    server_version = "LocalConductor"
    disable_nagle_algorithm = True
    timeout = 30  # for each read and write within a request; idle time is the ConnectionManager's
    server: ConductorHTTPServer

    def __init__(self, request: Any, client_address: Any, server: ConductorHTTPServer) -> None:
        # no super().__init__(): that would also serve the connection to its end on this thread
        self.request = request
        self.client_address = client_address
        self.server = server
        self.setup()

    def serve_arrived(self) -> bool:
        """Serve requests while they keep coming; True when the connection may be parked.

        After each response, wait up to the manager's ``linger`` for the next request with a
        peek: bytes already buffered (a pipelined request) count at once, and the wait is the
        same blocking read a thread-per-connection server does.
        """
        sock = self.connection
        while True:
            self.close_connection = True
            self.handle_one_request()
            if self.close_connection:
                return False
            sock.settimeout(self.server.connections.linger)
            try:
                if not self.rfile.peek(1):  # type: ignore[attr-defined]
                    return False  # the client closed
            except socket.timeout:
                return True  # quiet: park it (this rfile is spent; the next serve makes another)
            finally:
                sock.settimeout(self.timeout)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        log.debug("%s - %s", self.address_string(), format % args)

    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        """Errors found by ``http.server`` itself (bad request line, ...): an ErrorResponse too."""
        response = error_response(code, message or self.responses.get(code, ("Error",))[0])
        response.close = True
        self._write(response)

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        started = time.perf_counter()
        try:
            response = self._respond()
        except Exception:
            log.exception("unexpected error serving %s %s", self.command, self.path)
            response = error_response(500, "Internal error in LocalConductor (see its log)")
        self._write(response)
        log.debug("%s %s -> %d (%.1f ms)", self.command, self.path, response.status,
                  (time.perf_counter() - started) * 1000)

    def _respond(self) -> Response:
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        auth = self.server.auth
        issuing = auth is not None and path == "/api/token" and self.command == "POST"
        if auth is not None and not issuing and path.startswith("/api/") and path != "/api/health" and (
                not path.startswith("/api/external/local/")):
            denied = auth.check(self.headers.get("X-Authorization"))  # from the headers, before any body
            if denied is not None:
                # its body is never read: a connection that carries one cannot carry on
                denied.close = bool(self.headers.get("Transfer-Encoding")) or (
                    self.headers.get("Content-Length") not in (None, "", "0"))
                return denied
        body, too_large = self._read_body()
        if too_large is not None:
            return too_large
        query = parse_qs(parts.query, keep_blank_values=True)
        request = Request(self.command, path, query, body, self.headers)
        if issuing:
            assert auth is not None
            return _guard(lambda: auth.issue(request))
        handler, params, path_known = self.server.api.router.resolve(self.command, path)
        if handler is None:
            if path_known:
                return error_response(405, "Request method '%s' is not supported" % self.command)
            return error_response(404, "No static resource %s." % path.lstrip("/"))
        request.params = params
        return _guard(lambda: handler(request))

    def _read_body(self) -> Tuple[bytes, Optional[Response]]:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            response = error_response(400, "Invalid Content-Length header")
            response.close = True
            return b"", response
        if length < 0:
            response = error_response(400, "Invalid Content-Length header")
            response.close = True
            return b"", response
        if length > MAX_BODY_BYTES:
            return b"", self._too_large(self._discard(length))
        return self.rfile.read(length), None

    def _read_chunked(self) -> Tuple[bytes, Optional[Response]]:
        chunks, total, drained = [], 0, True
        while True:
            line = self.rfile.readline(1024)
            digits = line.split(b";")[0].strip() or b"0"
            if not re.fullmatch(rb"[0-9A-Fa-f]{1,16}", digits):  # no sign, no "-1" meaning "read to EOF"
                response = error_response(400, "Malformed chunked request body")
                response.close = True
                return b"", response
            size = int(digits, 16)
            if size == 0:
                self._skip_trailers()
                break
            total += size
            if total > MAX_BODY_BYTES:
                drained = total <= DRAIN_LIMIT and self._discard(size)
                if not drained:
                    break
            else:
                chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)  # CRLF after each chunk
        if total > MAX_BODY_BYTES:
            return b"", self._too_large(drained)
        return b"".join(chunks), None

    def _skip_trailers(self) -> None:
        line = self.rfile.readline(1024)
        while line not in (b"\r\n", b"\n", b""):
            line = self.rfile.readline(1024)

    def _discard(self, length: int) -> bool:
        """Read and drop ``length`` bytes if that is reasonable; False when the connection must close."""
        if length > DRAIN_LIMIT:
            return False
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 20))
            if not chunk:
                return False
            remaining -= len(chunk)
        return True

    @staticmethod
    def _too_large(drained: bool) -> Response:
        response = error_response(413, "Request body too large: the limit is %d bytes" % MAX_BODY_BYTES)
        response.close = not drained
        return response

    def _write(self, response: Response) -> None:
        if response.close:
            self.close_connection = True
        lines = ["HTTP/1.1 %d %s" % (response.status, self.responses.get(response.status, ("",))[0]),
                 "Server: LocalConductor", "Date: " + self.date_time_string()]
        if response.content_type and response.body:
            lines.append("Content-Type: " + response.content_type)
        if response.status not in (204, 304):
            lines.append("Content-Length: %d" % len(response.body))
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        body = b"" if self.command == "HEAD" else response.body
        try:
            self.wfile.write(head + body)
        except OSError:
            self.close_connection = True
            log.debug("client went away before the response was written")


def _guard(call: Callable[[], Response]) -> Response:
    """Run a route; turn engine errors into ErrorResponses."""
    try:
        return call()
    except EngineError as error:
        return error_response(error.status, error.message, error.validation_errors)
