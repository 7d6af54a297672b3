"""Workers inside a plain synchronous web service, started and stopped with it.

    python samples/legacy_service.py [--serve-seconds 3]

A stdlib WSGI app (stands in for Flask/Django) serves ``/status`` from the workers' ``status()``.
The workers start before the app serves and stop after it: no signal handlers in the library, no
forking, no threads left behind. The SIGTERM recipe for a real service is in ``main``: the handler
only sets an Event; the main thread then stops the server and drains the workers.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
import urllib.request
from typing import Any, Callable, Dict, List
from wsgiref.simple_server import WSGIRequestHandler, make_server

from _common import conductor_client
from conductor_workers import TaskDef, TaskManager, WorkflowDef, WorkflowExecutor, WorkflowStatus, WorkflowTask
from conductor_workers import worker_task


@worker_task("cw_legacy_resize", concurrency=2)
def resize(width: int, height: int) -> dict:
    return {"width": width // 2, "height": height // 2}


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


def make_app(manager: TaskManager) -> Callable[..., List[bytes]]:
    def app(environ: Dict[str, Any], start_response: Callable[..., Any]) -> List[bytes]:
        if environ.get("PATH_INFO") == "/status":
            body = json.dumps({name: s.to_dict() for name, s in manager.status().items()}).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]

    return app


def main(argv: "list[str] | None" = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve-seconds", type=float, default=3.0, help="stop after this long (0: until SIGTERM)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())  # the application edge owns signals; only set a flag

    with conductor_client() as client:
        client.metadata.register_task_defs([TaskDef(name="cw_legacy_resize")])
        executor = WorkflowExecutor(client)
        executor.register_workflow(
            WorkflowDef(
                name="cw_legacy",
                tasks=[WorkflowTask(name="cw_legacy_resize", task_reference_name="resize",
                                    input_parameters={"width": "${workflow.input.w}", "height": "${workflow.input.h}"})],
            ),
            overwrite=True,
        )
        manager = TaskManager(client, [resize])
        manager.start_polling()
        httpd = make_server("127.0.0.1", 0, make_app(manager), handler_class=_QuietHandler)
        server_thread = threading.Thread(target=httpd.serve_forever, name="wsgi", daemon=True)
        server_thread.start()
        try:
            workflow_id = executor.start_workflow("cw_legacy", {"w": 640, "h": 480}, version=1)
            workflow = executor.wait_for_workflow(workflow_id, timeout=30)
            status_url = f"http://127.0.0.1:{httpd.server_port}/status"
            status = json.loads(urllib.request.urlopen(status_url, timeout=5).read())
            print(f"workflow {workflow.status} {workflow.output}; /status says",
                  {name: s["executions_completed"] for name, s in status.items()}, "completed")
            stop.wait(args.serve_seconds or None)
        finally:
            httpd.shutdown()
            httpd.server_close()
            drained = manager.stop_polling(timeout=10)
    time.sleep(0.2)  # pool threads exit right after their last task
    leftovers = [t.name for t in threading.enumerate() if t.name.startswith("cw-") and t.is_alive()]
    print(f"service stopped; workers drained: {drained}; worker threads left: {leftovers or 'none'}")
    return 0 if workflow.status is WorkflowStatus.COMPLETED and drained and not leftovers else 1


if __name__ == "__main__":
    sys.exit(main())
