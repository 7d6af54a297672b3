"""Worker discovery for ``conductor-workers run``: from ``MODULE[:ATTR]`` targets to Worker instances.

:func:`load_target` imports one target and finds its workers (every Worker instance in a module, and
the Worker subclasses it defines with a class-level ``task_def_name``; or the Worker, subclass, list
or factory that ``ATTR`` names); :func:`load_workers` loads every target of a :class:`RunSettings`,
rejects two workers for one task type and applies ``--worker``/``--exclude``. Every failure is a
:class:`CommandError` with a one-line message. Logs under ``conductor_workers._run``, as it always has.

* A target that ends in ``.py`` is a file: it is imported under the dotted name its place in packages
  gives it (``app/jobs/resize.py`` in a package ``app.jobs`` is ``app.jobs.resize``), with the
  directory above the top package first on ``sys.path``; a different module already known by that
  name is refused rather than run in its place.
* A module that fails to import is one line naming the file and line where it failed (the last frame
  of the traceback in the user's code, or where a SyntaxError points); the whole traceback is logged
  at debug level. ``sys.exit()`` or ``KeyboardInterrupt`` raised while importing is such a failure too.
"""
from __future__ import annotations

import importlib
import inspect
import logging
import os
import sys
import sysconfig
import traceback
from types import ModuleType
from typing import Any, Dict, List, Optional, Tuple

from ._run_args import EXIT_BAD_MODULE, EXIT_BAD_OPTION, CommandError, RunSettings, _describe
from .worker import Worker

log = logging.getLogger("conductor_workers._run")  # the logger of the run command


def _import_machinery_dirs() -> Tuple[str, ...]:
    """importlib's directory and this package's: their frames are never the user's line."""
    return tuple(os.path.realpath(os.path.dirname(path)) for path in (importlib.__file__, __file__))


def _library_dirs() -> Tuple[str, ...]:
    """The standard library's and installed packages' directories."""
    paths = sysconfig.get_paths()
    return tuple({os.path.realpath(paths[name]) for name in ("stdlib", "platstdlib", "purelib", "platlib")
                  if paths.get(name)})


def _inside(filename: str, directories: Tuple[str, ...]) -> bool:
    path = os.path.realpath(filename)
    return any(path == directory or path.startswith(directory + os.sep) for directory in directories)


def _shown(filename: str) -> str:
    """``filename`` relative to the current directory when it is below it."""
    relative = os.path.relpath(filename)
    return filename if relative.startswith(os.pardir) else relative


def failure_location(exc: BaseException) -> Optional[str]:
    """``file:line`` of the user's code where an import failed, or None (e.g. no such module).

    A SyntaxError points at its own line; otherwise the last frame of the traceback outside the
    import machinery (importlib, this package), preferring frames outside the standard library and
    installed packages (the user's line that called into them).
    """
    if isinstance(exc, SyntaxError) and exc.filename and exc.lineno:
        return f"{_shown(exc.filename)}:{exc.lineno}"
    machinery = _import_machinery_dirs()
    frames = [
        frame for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith("<") and not _inside(frame.filename, machinery)
    ]
    libraries = _library_dirs()
    users = [frame for frame in frames if not _inside(frame.filename, libraries)]
    chosen = (users or frames)[-1:]
    return f"{_shown(chosen[0].filename)}:{chosen[0].lineno}" if chosen else None


def _import(module_name: str) -> ModuleType:
    if not module_name:
        raise CommandError(EXIT_BAD_MODULE, "empty module name")
    try:
        return importlib.import_module(module_name)
    except BaseException as exc:  # noqa: BLE001 - whatever a user module raises is reported in one line
        log.debug("importing module %r failed", module_name, exc_info=exc)
        where = failure_location(exc)
        at = f" ({where})" if where else ""
        if isinstance(exc, SystemExit):
            message = f"importing module {module_name!r} called sys.exit({exc.code!r}){at}"
        elif isinstance(exc, KeyboardInterrupt):
            message = f"importing module {module_name!r} raised KeyboardInterrupt{at}"
        else:
            message = f"cannot import module {module_name!r}{at}: {_describe(exc)}"
        raise CommandError(EXIT_BAD_MODULE, message) from None


def _module_name_of_file(path: str) -> Tuple[str, str]:
    """The directory to import ``path`` from and its dotted module name (packages above it included)."""
    directory, name = os.path.split(os.path.abspath(path)[: -len(".py")])
    parts = [name]
    while os.path.isfile(os.path.join(directory, "__init__.py")):
        directory, package = os.path.split(directory)
        parts.append(package)
    return directory, ".".join(reversed(parts))


def _import_file(path: str) -> ModuleType:
    stem = os.path.basename(path)[: -len(".py")]
    if not os.path.isfile(path):
        raise CommandError(
            EXIT_BAD_MODULE,
            f"no such file {path!r}: give the path of a .py file, or name the module ({stem!r}) as python -m does",
        )
    directory, module_name = _module_name_of_file(path)
    if not all(part.isidentifier() for part in module_name.split(".")):
        raise CommandError(EXIT_BAD_MODULE, f"{path!r} cannot be imported: {module_name!r} is not a module name")
    if sys.path[:1] != [directory]:
        sys.path.insert(0, directory)
    module = _import(module_name)
    found = getattr(module, "__file__", None)
    if not found or os.path.realpath(found) != os.path.realpath(path):
        raise CommandError(
            EXIT_BAD_MODULE,
            f"{path!r}: the module name {module_name!r} is already taken by {found or 'a built-in module'};"
            " rename the file",
        )
    return module


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
    module_name = module_name.strip()
    module = _import_file(module_name) if module_name.endswith(".py") else _import(module_name)
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
