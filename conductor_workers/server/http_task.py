"""The ``HTTP`` system task: which hosts it may call (loopback ones unless more are allowed), the
call itself on a thread of its own, outside the engine lock, and its result, reported back as a
worker's would be (a mixin of :class:`~.system_tasks.SystemTasks`)."""

from __future__ import annotations

import ipaddress
import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple
from urllib.parse import urlsplit

from .model import JSON

#: Hosts an HTTP task may call by default: this machine only.
LOOPBACK_HOSTS = ("localhost",)


def host_allowed(url: str, allowed: Iterable[str]) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    patterns = list(allowed)
    if "*" in patterns or host in patterns:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in LOOPBACK_HOSTS


class HttpTask:
    """The HTTP task's executor (mixed into the system tasks)."""

    # what the engine provides
    http_allowed_hosts: Tuple[str, ...]
    _tx: Callable[[], Any]
    _save_task: Callable[[JSON], None]
    _decide: Callable[[JSON, List[JSON]], None]

    # -- HTTP: on a thread of its own ------------------------------------------------------------
    def _run_http(self, workflow: JSON, tasks: List[JSON], task: JSON) -> bool:
        if task["status"] != "SCHEDULED":
            return False
        params = task["inputData"]
        spec = params.get("http_request") if isinstance(params.get("http_request"), dict) else params
        uri, method = spec.get("uri"), spec.get("method")
        if not uri:
            task.update(status="FAILED",
                        reasonForIncompletion="Missing HTTP URI.  See documentation for HttpTask for required input parameters")
            return True
        if not method:
            task.update(status="FAILED", reasonForIncompletion="No HTTP method specified")
            return True
        if not host_allowed(str(uri), self.http_allowed_hosts):
            task.update(status="FAILED", reasonForIncompletion=(
                "LocalConductor does not call %s: HTTP tasks may call loopback hosts only, unless the host is "
                "allowed (LocalConductor(http_allowed_hosts=[...]) or --http-allow-host)" % urlsplit(str(uri)).hostname))
            return True
        task.update(status="IN_PROGRESS", workerId="local-conductor", pollCount=1,
                    startTime=task.get("startTime") or int(time.time() * 1000))
        thread = threading.Thread(target=self._call_http, args=(task["taskId"], dict(spec)),
                                  name="local-conductor-http-task", daemon=True)
        thread.start()  # it waits for the engine lock, so it sees this decide's result
        return True

    def _call_http(self, task_id: str, spec: JSON) -> None:
        status, output, reason = _http_call(spec)
        self.finish_system_task(task_id, status, output, reason)

    def finish_system_task(self, task_id: str, status: str, output: JSON, reason: Optional[str]) -> None:
        """Report the result of a system task that ran outside the lock (HTTP)."""
        with self._tx() as store:
            task = store.get_task(task_id)
            if task is None or task["status"] != "IN_PROGRESS":
                return
            task.update(status=status, outputData=output, reasonForIncompletion=reason)
            self._save_task(task)
            workflow = store.get_workflow(task["workflowInstanceId"])
            if workflow is not None:
                self._decide(workflow, store.workflow_tasks(workflow["workflowId"]))


def _http_call(spec: JSON) -> Tuple[str, JSON, Optional[str]]:
    """Run one HTTP task request: (status, outputData, reason)."""
    method = str(spec.get("method")).upper()
    body = spec.get("body")
    headers = {str(k): str(v) for k, v in (spec.get("headers") or {}).items()}
    data = None
    if body is not None and method not in ("GET", "HEAD", "DELETE"):
        data = body.encode("utf-8") if isinstance(body, str) else json.dumps(body).encode("utf-8")
        headers.setdefault("Content-Type", spec.get("contentType") or "application/json")
    headers.setdefault("Accept", spec.get("accept") or "application/json")
    timeout = max(int(spec.get("connectionTimeOut") or 3000), int(spec.get("readTimeOut") or 3000)) / 1000.0
    request = urllib.request.Request(str(spec["uri"]), data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 (checked host)
            raw, code, phrase, answer_headers = answer.read(), answer.status, answer.reason, answer.headers
    except urllib.error.HTTPError as error:
        text = error.read().decode("utf-8", "replace").replace("\n", "<EOL>")
        message = 'java.lang.Exception: %d %s on %s request for "%s": "%s"' % (
            error.code, error.reason, method, spec["uri"], text)
        return "FAILED", {"response": message}, "Failed to invoke HTTP task due to: " + message
    except (OSError, ValueError) as error:
        cause = getattr(error, "reason", error)
        if isinstance(cause, ConnectionRefusedError):
            parts = urlsplit(str(spec["uri"]))
            cause = "Connect to %s://%s failed: Connection refused" % (parts.scheme, parts.netloc)
        message = 'java.lang.Exception: I/O error on %s request for "%s": %s' % (method, spec["uri"], cause)
        return "FAILED", {"response": message}, "Failed to invoke HTTP task due to: " + message
    text = raw.decode("utf-8", "replace")
    try:
        parsed: Any = json.loads(text) if text.strip() else None
    except ValueError:
        parsed = text
    grouped: Dict[str, List[str]] = {}
    for key, value in answer_headers.items():
        grouped.setdefault(key, []).append(value)
    response = {"statusCode": code, "reasonPhrase": phrase, "headers": grouped, "body": parsed}
    return "COMPLETED", {"response": response}, None
