"""Worker discovery for ``conductor-workers run``: from ``MODULE[:ATTR]`` targets to Worker instances.

:func:`load_target` imports one target and finds its workers (every Worker instance in a module, and
the Worker subclasses it defines with a class-level ``task_def_name``; or the Worker, subclass, list
or factory that ``ATTR`` names); :func:`load_workers` loads every target of a :class:`RunSettings`,
rejects two workers for one task type and applies ``--worker``/``--exclude``. Every failure is a
:class:`CommandError` with a one-line message. Logs under ``conductor_workers._run``, as it always has.
"""
from __future__ import annotations

import importlib
import inspect
import logging
import sys
from types import ModuleType
from typing import Any, Dict, List

from ._run_args import EXIT_BAD_MODULE, EXIT_BAD_OPTION, CommandError, RunSettings, _describe
from .worker import Worker

log = logging.getLogger("conductor_workers._run")  # the logger of the run command


def _import(module_name: str) -> ModuleType:
    if not module_name:
        raise CommandError(EXIT_BAD_MODULE, "empty module name")
    try:
        return importlib.import_module(module_name)
    except SystemExit as exc:
        raise CommandError(EXIT_BAD_MODULE, f"importing module {module_name!r} called sys.exit({exc.code!r})") from None
    except BaseException as exc:  # noqa: BLE001 - whatever a user module raises is reported in one line
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise CommandError(EXIT_BAD_MODULE, f"cannot import module {module_name!r}: {_describe(exc)}") from None


def _instantiate(cls: type, where: str) -> Worker:
    try:
        worker = cls()
    except Exception as exc:  # noqa: BLE001 - reported in one line
        raise CommandError(EXIT_BAD_MODULE, f"cannot create {where} with no arguments: {_describe(exc)}") from None
    if not isinstance(worker, Worker):  # pragma: no cover - cls is a Worker subclass
        raise CommandError(EXIT_BAD_MODULE, f"{where}() is not a Worker")
    return worker


def _is_worker_class(value: Any) -> bool:
    return inspect.isclass(value) and issubclass(value, Worker)


def _workers_from_value(value: Any, where: str, *, call: bool = True) -> List[Worker]:
    if isinstance(value, Worker):
        return [value]
    if _is_worker_class(value):
        return [_instantiate(value, where)]
    if isinstance(value, (list, tuple, set, frozenset)):
        found: List[Worker] = []
        for index, item in enumerate(value):
            found.extend(_workers_from_value(item, f"{where}[{index}]", call=False))
        return found
    if call and callable(value):
        try:
            produced = value()
        except Exception as exc:  # noqa: BLE001 - reported in one line
            raise CommandError(EXIT_BAD_MODULE, f"calling {where}() failed: {_describe(exc)}") from None
        return _workers_from_value(produced, f"{where}()", call=False)
    raise CommandError(
        EXIT_BAD_MODULE,
        f"{where} is a {type(value).__name__}, not a Worker, a Worker subclass, a list of them, or a function "
        "returning one of those",
    )


def _scan(module: ModuleType) -> List[Worker]:
    found: List[Worker] = []
    seen: set = set()
    instance_classes = set()
    for value in list(vars(module).values()):
        if isinstance(value, Worker) and id(value) not in seen:
            seen.add(id(value))
            found.append(value)
            instance_classes.add(type(value))
    for name, value in list(vars(module).items()):
        if (
            _is_worker_class(value)
            and value.__module__ == module.__name__
            and value not in instance_classes
            and isinstance(vars(value).get("task_def_name"), str)
            and vars(value)["task_def_name"]
        ):
            found.append(_instantiate(value, f"{module.__name__}:{name}"))
    return found


def load_target(target: str) -> List[Worker]:
    """The workers ``MODULE`` or ``MODULE:ATTR`` defines."""
    module_name, _, attr = target.partition(":")
    module = _import(module_name.strip())
    if not attr:
        return _scan(module)
    value: Any = module
    for part in attr.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise CommandError(EXIT_BAD_MODULE, f"module {module_name!r} has no attribute {attr!r}") from None
    return _workers_from_value(value, target)


def load_workers(settings: RunSettings) -> List[Worker]:
    """Import every target and apply ``--worker``/``--exclude``; CommandError when nothing is left."""
    for path in reversed(settings.sys_path):
        if path not in sys.path:
            sys.path.insert(0, path)
    workers: Dict[str, Worker] = {}
    for target in settings.targets:
        for worker in load_target(target):
            other = workers.get(worker.task_def_name)
            if other is not None and other is not worker:
                raise CommandError(
                    EXIT_BAD_MODULE,
                    f"two workers for task type {worker.task_def_name!r}: {other!r} and {worker!r}",
                )
            workers[worker.task_def_name] = worker
    if not workers:
        raise CommandError(EXIT_BAD_MODULE, f"no workers found in {', '.join(settings.targets)}")
    unknown = sorted(set(settings.include) - set(workers))
    if unknown:
        raise CommandError(
            EXIT_BAD_OPTION,
            f"--worker {', '.join(unknown)}: no such worker; found: {', '.join(sorted(workers))}",
        )
    for name in sorted(set(settings.exclude) - set(workers)):
        log.warning("--exclude %s: no such worker (found: %s)", name, ", ".join(sorted(workers)))
    selected = [
        worker for name, worker in workers.items()
        if (not settings.include or name in settings.include) and name not in settings.exclude
    ]
    if not selected:
        raise CommandError(EXIT_BAD_MODULE, "no workers left after --worker/--exclude")
    return selected
