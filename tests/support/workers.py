"""Helpers shared by the worker-framework tests (``from support.workers import Env, Flow, ...``).

A module of its own, not ``conftest``: several test folders have a ``conftest.py``, and only one of
them can be imported as the module ``conftest``.
"""
from __future__ import annotations

import threading
import time
import uuid
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

from support.proxy import LoopbackProxy
from support.waiting import wait_until as _wait_until

from conductor_workers import (
    ConductorClient,
    Configuration,
    TaskDef,
    TaskManager,
    Workflow,
    WorkflowDef,
    WorkflowExecutor,
    WorkflowTask,
)

WAIT = 60.0  # generous: the machines are shared and the real server is slower


def wait_until(predicate: Callable[[], Any], timeout: float = WAIT, interval: float = 0.05, message: str = "") -> Any:
    """:func:`support.waiting.wait_until` with this suite's generous default timeout."""
    return _wait_until(predicate, timeout, interval, message)


def unique(prefix: str) -> str:
    return f"cwt_{prefix}_{uuid.uuid4().hex[:10]}"


def cw_threads() -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("cw-") and t.is_alive()]


class Flow:
    """A task definition and a one-task workflow around it."""

    def __init__(self, env: "Env", task_name: str, workflow_name: str, ref: str = "t") -> None:
        self.env = env
        self.task_name = task_name
        self.workflow_name = workflow_name
        self.ref = ref

    def start(self, input: Optional[Mapping[str, Any]] = None) -> str:
        return self.env.executor.start_workflow(self.workflow_name, dict(input or {}), version=1)

    def start_many(self, count: int, input_for: Callable[[int], Mapping[str, Any]] = lambda i: {"i": i}) -> List[str]:
        return [self.start(input_for(i)) for i in range(count)]

    def queue_size(self) -> int:
        return self.env.client.tasks.queue_sizes([self.task_name]).get(self.task_name, 0)


class Env:
    """A server to run workers against, with helpers; managers it made are stopped at teardown."""

    def __init__(self, kind: str, url: str, worker_url: Optional[str] = None, proxy: Optional[LoopbackProxy] = None):
        self.kind = kind
        self.url = url
        self.proxy = proxy
        self.client = ConductorClient(Configuration(server_url=url))
        self.executor = WorkflowExecutor(self.client)
        self.worker_client = (
            ConductorClient(Configuration(server_url=worker_url)) if worker_url else self.client
        )
        self._managers: List[TaskManager] = []

    @property
    def is_real(self) -> bool:
        return self.kind == "real"

    def flow(
        self,
        prefix: str,
        *,
        retry_count: int = 0,
        retry_delay_seconds: int = 0,
        response_timeout_seconds: int = 30,
        timeout_seconds: int = 0,
        input_parameters: Optional[Dict[str, Any]] = None,
        register_task_def: bool = True,
    ) -> Flow:
        task_name = unique(prefix)
        workflow_name = task_name + "_wf"
        if register_task_def:
            self.client.metadata.register_task_defs(
                [
                    TaskDef(
                        name=task_name,
                        retry_count=retry_count,
                        retry_delay_seconds=retry_delay_seconds,
                        response_timeout_seconds=response_timeout_seconds,
                        timeout_seconds=timeout_seconds,
                        owner_email="tests@example.com",
                    )
                ]
            )
        params = {"i": "${workflow.input.i}"} if input_parameters is None else input_parameters
        self.executor.register_workflow(
            WorkflowDef(
                name=workflow_name,
                version=1,
                owner_email="tests@example.com",
                tasks=[WorkflowTask(name=task_name, task_reference_name="t", input_parameters=params)],
                output_parameters={"out": "${t.output}"},
            ),
            overwrite=True,
        )
        return Flow(self, task_name, workflow_name)

    def manager(self, workers: Iterable[Any], options: Any = None, **kwargs: Any) -> TaskManager:
        manager = TaskManager(self.worker_client, list(workers), options, **kwargs)
        self._managers.append(manager)
        return manager

    def wait(self, workflow_id: str, timeout: float = WAIT) -> Workflow:
        return self.executor.wait_for_workflow(workflow_id, timeout=timeout)

    def wait_all(self, workflow_ids: Sequence[str], timeout: float = WAIT) -> List[Workflow]:
        deadline = time.monotonic() + timeout
        return [self.wait(wf_id, timeout=max(0.5, deadline - time.monotonic())) for wf_id in workflow_ids]

    def logs(self, task_id: str) -> List[str]:
        return [entry.log for entry in self.client.tasks.get_logs(task_id)]

    def close(self) -> None:
        for manager in self._managers:
            manager.stop_polling(timeout=15)
        # stop_polling() does not wait out a last idle long poll; the next test should not see its thread
        pollers = {f"cw-poll-{task_type}" for manager in self._managers for task_type in manager.status()}
        deadline = time.monotonic() + 40.0  # a long poll whose answer a chaos proxy lost ends at the read timeout
        while time.monotonic() < deadline and any(t.name in pollers for t in threading.enumerate()):
            threading.Event().wait(0.05)
        if self.worker_client is not self.client:
            self.worker_client.close()
        self.client.close()
