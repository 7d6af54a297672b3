"""``conductor-workers run --options-file PATH``: polling options changed at runtime from a file.

The file is JSON: ``{"all": {"concurrency": 4}, "resize": {"paused": true}}``; ``all`` applies to
every worker, a task type's own entry beats it. Every process of a fleet reads the same file (a
mounted Kubernetes ConfigMap, a file on shared storage, or one file on one host for
``--processes N``), so one edit pauses a task type or changes its concurrency across the fleet.
The entries sit on top of the options a process started with (code, environment, flags): removing
an entry brings that value back. A file that cannot be read or holds a bad value changes nothing
and is logged once per change; a missing file means no overrides.
"""
from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Tuple

from .errors import InvalidOptionError
from .options import PollingOptions, check_option_names

if TYPE_CHECKING:  # pragma: no cover
    from .manager import TaskManager

log = logging.getLogger("conductor_workers._run")

_Stamp = Optional[Tuple[int, int, int]]  # (mtime_ns, size, inode) of the file, None when missing


def _stamp(path: str) -> _Stamp:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return (info.st_mtime_ns, info.st_size, info.st_ino)


def parse(text: str, task_types: Any) -> Dict[str, Dict[str, Any]]:
    """The overrides per task type (``all`` merged in), validated; InvalidOptionError otherwise."""
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise InvalidOptionError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidOptionError("expected a JSON object of {task type or 'all': {option: value}}")
    known = set(task_types)
    unknown = sorted(set(data) - known - {"all"})
    if unknown:
        raise InvalidOptionError(f"no worker for {', '.join(unknown)} (known: {', '.join(sorted(known))}, all)")
    for name, changes in data.items():
        if not isinstance(changes, dict):
            raise InvalidOptionError(f"{name!r}: expected an object of options, got {type(changes).__name__}")
        check_option_names(changes)
    common = data.get("all", {})
    return {name: {**common, **data.get(name, {})} for name in known}


class OptionsFile:
    """Applies ``path`` to ``manager`` whenever the file changes (call :meth:`check` periodically)."""

    def __init__(self, path: str, manager: "TaskManager") -> None:
        self.path = path
        self._manager = manager
        self._base: Mapping[str, PollingOptions] = {name: manager.options_for(name) for name in manager.runners}
        self._seen: _Stamp = None
        self._first = True

    def check(self) -> bool:
        """Apply the file if it changed since the last call; True when new options were applied."""
        stamp = _stamp(self.path)
        if stamp == self._seen and not self._first:
            return False
        self._first, self._seen = False, stamp
        try:
            text = "" if stamp is None else open(self.path, encoding="utf-8").read()
            overrides = parse(text, self._base)
            wanted = {name: self._base[name].evolve(**overrides[name]) for name in self._base}
        except (OSError, InvalidOptionError) as exc:
            log.error("options file %s not applied (the options stay as they are): %s", self.path, exc)
            return False
        changed = False
        for name, options in wanted.items():
            if self._manager.options_for(name) != options:
                self._manager.update_polling_option_for_worker(name, options)
                changed = True
        if changed:
            log.info("options file %s applied", self.path)
        return changed


__all__ = ["OptionsFile", "parse"]
