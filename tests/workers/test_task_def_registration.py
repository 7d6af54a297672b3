"""``register_task_def=True``: what is registered when polling starts, what is kept, and a server that is down.

On LocalConductor (and, for keep and overwrite, on conductor-oss too). "Server down" is a :class:`~support.proxy.LoopbackProxy` that is cut, then restored
(the manager's client talks through it; the test's own calls go direct).
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Iterator

import pytest
from support.proxy import LoopbackProxy
from support.workers import Env, cw_threads, unique, wait_until

from conductor_workers import (
    AuthenticationError,
    ConductorClient,
    Configuration,
    NotFoundError,
    TaskDef,
    TaskManager,
    Worker,
    worker_task,
)
from conductor_workers.testing import LocalConductor

MANAGER_LOG = "conductor_workers"


def _noop(name: str, **options: Any) -> Worker:
    @worker_task(name, batch_poll_timeout=100, **options)
    def noop() -> Dict[str, Any]:
        return {}

    return noop


def _existing(env: Env, name: str) -> TaskDef:
    env.client.metadata.register_task_defs(
        [TaskDef(name=name, response_timeout_seconds=30, retry_count=7, owner_email="ops@example.com")]
    )
    return env.client.metadata.get_task_def(name)


def _start_and_stop(env: Env, *workers: Worker) -> None:
    manager = env.manager(list(workers))
    manager.start_polling()
    manager.stop_polling(timeout=10)


def test_an_existing_definition_is_kept_without_a_task_def(any_env: Env, caplog: pytest.LogCaptureFixture) -> None:
    env = any_env
    name = unique("keep")
    _existing(env, name)
    with caplog.at_level(logging.INFO, logger=MANAGER_LOG):
        _start_and_stop(env, _noop(name, register_task_def=True))
    kept = env.client.metadata.get_task_def(name)
    assert (kept.response_timeout_seconds, kept.retry_count) == (30, 7)  # not the defaults (3600, 3)
    assert f"kept the existing task definition {name!r}" in caplog.text


def test_a_missing_definition_is_registered(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    name = unique("new")
    with caplog.at_level(logging.INFO, logger=MANAGER_LOG):
        _start_and_stop(env, _noop(name, register_task_def=True))
    assert env.client.metadata.get_task_def(name).name == name
    assert f"registered task definition {name!r}" in caplog.text


def test_overwrite_task_def_replaces_an_existing_definition(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    name = unique("over")
    _existing(env, name)
    with caplog.at_level(logging.INFO, logger=MANAGER_LOG):
        _start_and_stop(env, _noop(name, register_task_def=True, overwrite_task_def=True))
    replaced = env.client.metadata.get_task_def(name)
    assert (replaced.response_timeout_seconds, replaced.retry_count) == (3600, 3)  # what was asked for
    assert f"overwrote the existing task definition {name!r}" in caplog.text


def test_an_explicit_task_def_overwrites_unless_told_not_to(any_env: Env) -> None:
    """A ``task_def`` in code is the definition: it replaces the server's, unless ``overwrite_task_def=False``."""
    env = any_env
    name, other = unique("code"), unique("code_kept")
    for each in (name, other):
        _existing(env, each)
    _start_and_stop(
        env,
        _noop(name, register_task_def=True, task_def=TaskDef(response_timeout_seconds=45)),
        _noop(other, register_task_def=True, task_def=TaskDef(response_timeout_seconds=45), overwrite_task_def=False),
    )
    assert env.client.metadata.get_task_def(name).response_timeout_seconds == 45
    assert env.client.metadata.get_task_def(other).response_timeout_seconds == 30


def test_overwrite_task_def_is_a_worker_option() -> None:
    class Declared(Worker):
        task_def_name = "declared"
        register_task_def = True
        overwrite_task_def = True

    assert Declared().overwrite_task_def is True
    assert Worker("plain").overwrite_task_def is None  # None: decided by whether a task_def is given
    assert _noop("fn", overwrite_task_def=False).overwrite_task_def is False


# -- a server that is down when polling starts --------------------------------------------------------


@pytest.fixture
def cut_proxy(local_server: LocalConductor) -> Iterator[LoopbackProxy]:
    with LoopbackProxy(local_server.url) as proxy:
        proxy.cut()
        yield proxy


def test_a_server_down_at_start_gets_the_definitions_once_it_is_reached(
    env: Env, cut_proxy: LoopbackProxy, caplog: pytest.LogCaptureFixture
) -> None:
    name = unique("late")
    client = ConductorClient(Configuration(server_url=cut_proxy.url, max_retries=0, connect_timeout=1))
    manager = TaskManager(client, [_noop(name, register_task_def=True)])
    try:
        with caplog.at_level(logging.INFO, logger=MANAGER_LOG):
            manager.start_polling()  # must not raise: the server is down
            assert manager.is_polling
            with pytest.raises(NotFoundError):
                env.client.metadata.get_task_def(name)
            cut_proxy.restore()
            wait_until(lambda: _exists(env, name), timeout=30, message="the definition registered after the outage")
            # the registrar logs just after the server accepted the definition
            wait_until(lambda: f"registered task definition {name!r}" in caplog.text, timeout=10, message="logged")
        assert "could not register task definitions" in caplog.text
    finally:
        manager.stop_polling(timeout=10)
        client.close()
    assert not [t for t in cw_threads() if "register" in t.name]  # the retrying thread ended with polling


def test_stop_polling_ends_the_registration_retries_of_a_server_that_never_comes(
    env: Env, cut_proxy: LoopbackProxy
) -> None:
    name = unique("never")
    client = ConductorClient(Configuration(server_url=cut_proxy.url, max_retries=0, connect_timeout=1))
    manager = TaskManager(client, [_noop(name, register_task_def=True)])
    try:
        manager.start_polling()
        wait_until(lambda: [t for t in cw_threads() if "register" in t.name], timeout=5, message="the retrying thread")
    finally:
        assert manager.stop_polling(timeout=10)
        client.close()
    assert not [t for t in cw_threads() if "register" in t.name]
    assert not _exists(env, name)


def test_refused_credentials_at_start_are_still_an_error() -> None:
    with LocalConductor(auth=("key", "secret")) as secured:
        client = ConductorClient(Configuration(server_url=secured.url, key_id="key", key_secret="wrong", max_retries=0))
        manager = TaskManager(client, [_noop(unique("auth"), register_task_def=True)])
        try:
            with pytest.raises(AuthenticationError):
                manager.start_polling()
            assert not manager.is_polling
        finally:
            manager.stop_polling(timeout=5)
            client.close()


def _exists(env: Env, name: str) -> bool:
    try:
        env.client.metadata.get_task_def(name)
    except NotFoundError:
        return False
    return True
