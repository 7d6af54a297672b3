"""The Conductor REST API: :class:`Api` routes every path under ``/api`` (metadata, event
handlers, tasks, workflows, search, external payload storage, health) to the engine's operations
and shapes their answers as the server does."""

from __future__ import annotations

import uuid
from typing import Any, Callable, Dict, Optional
from urllib.parse import quote

from .auth import TokenAuth
from .engine import Engine
from .errors import BadRequest, EngineError, NotFound
from .model import RESULT_STATUSES
from .search import sort_list
from .signals import signal_strategy
from .validation import check_priority
from .wire import Request, Response, Router, error_response, json_response, text_response

PAYLOAD_TYPES = ("TASK_INPUT", "TASK_OUTPUT", "WORKFLOW_INPUT", "WORKFLOW_OUTPUT")

#: The longest batch-poll timeout the server accepts, in ms.
MAX_POLL_TIMEOUT_MS = 5000
#: update-v2 and the single poll look up a task with a 1-task, 100 ms poll (as the server does).
SINGLE_POLL_TIMEOUT_MS = 100


class Api:
    """The Conductor REST API on top of an :class:`Engine`."""

    def __init__(self, engine: Engine, signer: Optional[TokenAuth] = None) -> None:
        self.engine = engine
        self.signer = signer  # under auth: signs the payload-storage locations it hands out
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
        # External payload storage (its own; under auth its locations are signed, like S3 pre-signed URLs)
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
        add("GET", "/api/tasks/search", lambda r: self._search(r, self.engine.search.tasks))
        add("GET", "/api/tasks/search-v2", lambda r: self._search(r, self.engine.search.tasks_v2))
        add("GET", "/api/tasks/{taskId}",
            lambda r: json_response(200, self.engine.get_task(r.params["taskId"])))
        add("POST", "/api/tasks/{taskId}/log", self.add_log)
        add("GET", "/api/tasks/{taskId}/log", self.get_logs)
        # the signal paths first: the update-by-reference-name pattern below matches them too
        add("POST", "/api/tasks/{workflowId}/{status}/signal", self.signal)
        add("POST", "/api/tasks/{workflowId}/{status}/signal/sync", self.signal_sync)
        add("POST", "/api/tasks/{workflowId}/{taskRefName}/{status}", self.update_by_ref)
        add("POST", "/api/tasks/{workflowId}/{taskRefName}/{status}/sync", self.update_by_ref_sync)
        # Event handlers (stored, never run: LocalConductor has no event queues)
        add("POST", "/api/event", self.add_event_handler)
        add("PUT", "/api/event", self.update_event_handler)
        add("GET", "/api/event", lambda r: json_response(200, self.engine.event_handlers.all()))
        add("GET", "/api/event/{event}", self.event_handlers_for_event)
        add("DELETE", "/api/event/{name}", self.remove_event_handler)
        # Workflows (search before the generic /{workflowId})
        add("POST", "/api/workflow", self.start_workflow_request)
        add("GET", "/api/workflow/search", lambda r: self._search(r, self.engine.search.workflows))
        add("GET", "/api/workflow/search-v2", lambda r: self._search(r, self.engine.search.workflows_v2))
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
        uri = "%s/api/external/local/%s" % (self.root_url, quote(key, safe=""))
        if self.signer is not None:
            uri += "?" + self.signer.sign(key, operation)
        return json_response(200, {"uri": uri, "path": key})

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

    # Event handlers ---------------------------------------------------------------------------
    def add_event_handler(self, request: Request) -> Response:
        self.engine.event_handlers.add(request.json())
        return Response(200)

    def update_event_handler(self, request: Request) -> Response:
        self.engine.event_handlers.update(request.json())
        return Response(200)

    def event_handlers_for_event(self, request: Request) -> Response:
        handlers = self.engine.event_handlers.for_event(request.params["event"], request.bool_arg("activeOnly", True))
        return json_response(200, handlers)

    def remove_event_handler(self, request: Request) -> Response:
        self.engine.event_handlers.remove(request.params["name"])
        return Response(200)

    # Search -------------------------------------------------------------------------------------
    @staticmethod
    def _search(request: Request, search: Callable[..., Any]) -> Response:
        """``start``, ``size``, ``sort`` (``field:ASC|DESC``, ``|`` between), ``freeText``, ``query``."""
        result = search(request.arg("query"), request.arg("freeText", "*"), request.int_arg("start", 0) or 0,
                        _size_arg(request), sort_list(request.arg("sort")))
        return json_response(200, result)

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


def _size_arg(request: Request) -> int:
    size = request.int_arg("size", 100)
    return 100 if size is None else size


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
