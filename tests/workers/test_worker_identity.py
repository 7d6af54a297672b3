"""The worker id: ``host:pid`` by default, so that every process (``run --processes N``) is told apart."""
from __future__ import annotations

import os
import socket
from typing import Any, Dict

from support.workers import Env

from conductor_workers import worker_task


def test_the_default_worker_id_is_this_hosts_name_and_this_processs_id(env: Env) -> None:
    flow = env.flow("ident")
    named = env.flow("ident_named")

    @worker_task(flow.task_name, batch_poll_timeout=100)
    def plain() -> Dict[str, Any]:
        return {}

    @worker_task(named.task_name, batch_poll_timeout=100, worker_id="blue-7")
    def given() -> Dict[str, Any]:
        return {}

    env.manager([plain, given]).start_polling()
    done = env.wait(flow.start())
    assert done.tasks[0].worker_id == f"{socket.gethostname()}:{os.getpid()}"
    assert env.wait(named.start()).tasks[0].worker_id == "blue-7"  # the option still wins
    (polled,) = env.client.tasks.poll_data(flow.task_name)
    assert polled.worker_id == f"{socket.gethostname()}:{os.getpid()}"
