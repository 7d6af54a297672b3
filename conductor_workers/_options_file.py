"""``conductor-workers run --options-file PATH``: polling options changed at runtime from a file.

The file is JSON: ``{"all": {"concurrency": 4}, "resize": {"paused": true}}``; ``all`` applies to
every worker, a task type's own entry beats it. Every process of a fleet reads the same file (a
mounted Kubernetes ConfigMap, a file on shared storage, or one file on one host for
``--processes N``), so one edit pauses a task type or changes its concurrency across the fleet.
The entries sit on top of the options a process started with (code, environment, flags): removing
an entry brings that value back. A file that cannot be read, is not UTF-8 JSON (a byte-order mark
is fine), is nested too deeply or holds a bad value changes nothing and is logged once, until it
changes again; a missing file means no overrides.
"""
from __future__ import annotations

import json
import logging
import os
import stat
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Tuple

from .errors import InvalidOptionError
from .options import PollingOptions, check_option_names

if TYPE_CHECKING:  # pragma: no cover
    from .manager import TaskManager

log = logging.getLogger("conductor_workers._run")

MAX_FILE_BYTES = 1 << 20  # far more than any options file; a bigger one is refused, not read whole
_MAX_REASON = 300  # characters of a refusal's reason in the log line

# What a check saw: ("missing",), ("content", the bytes) or ("error", why it could not be read).
_Seen = Tuple[Any, ...]


def _read(path: str) -> Optional[bytes]:
    """The file's bytes; None when it does not exist. OSError or InvalidOptionError otherwise."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):  # a FIFO or a device would block the service's loop
        raise InvalidOptionError("not a regular file")
    with open(path, "rb") as file:
        data = file.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise InvalidOptionError(f"larger than {MAX_FILE_BYTES} bytes")
    return data


def decode(data: bytes) -> str:
    """The file's text: UTF-8 (a byte-order mark is allowed); InvalidOptionError otherwise."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidOptionError(f"not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None


def parse(text: str, task_types: Any) -> Dict[str, Dict[str, Any]]:
    """The overrides per task type (``all`` merged in), validated; InvalidOptionError otherwise."""
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise InvalidOptionError(f"not JSON: {exc}") from None
    except RecursionError:  # json recurses once per nesting level
        raise InvalidOptionError("nested too deeply to be options") from None
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
    """Applies ``path`` to ``manager`` whenever the file changes (call :meth:`check` periodically).

    Each check reads the file (it is small) and compares its bytes with the last ones seen, so a
    change is never missed because the file system's clock is coarse (an edit that keeps the size
    within one tick); a file that cannot be read, decoded or parsed, or holds a bad value, is
    logged once, when it changes to that state, and changes nothing.
    """

    def __init__(self, path: str, manager: "TaskManager") -> None:
        self.path = path
        self._manager = manager
        self._base: Mapping[str, PollingOptions] = {name: manager.options_for(name) for name in manager.runners}
        self._seen: Optional[_Seen] = None  # None: never checked

    def check(self) -> bool:
        """Apply the file if it changed since the last call; True when new options were applied."""
        try:
            data = _read(self.path)
        except (OSError, InvalidOptionError) as exc:
            return self._refuse(("error", type(exc).__name__, str(exc)), exc)
        seen: _Seen = ("missing",) if data is None else ("content", data)
        if seen == self._seen:
            return False
        try:
            overrides = parse("" if data is None else decode(data), self._base)
            wanted = {name: self._base[name].evolve(**overrides[name]) for name in self._base}
        except InvalidOptionError as exc:
            return self._refuse(seen, exc)
        self._seen = seen
        changed = False
        for name, options in wanted.items():
            if self._manager.options_for(name) != options:
                self._manager.update_polling_option_for_worker(name, options)
                changed = True
        if changed:
            log.info("options file %s applied", self.path)
        return changed

    def _refuse(self, seen: _Seen, exc: Exception) -> bool:
        if seen != self._seen:
            reason = " ".join(str(exc).split())
            if len(reason) > _MAX_REASON:
                reason = reason[:_MAX_REASON] + "..."
            log.error("options file %s not applied (the options stay as they are): %s", self.path, reason)
        self._seen = seen
        return False


__all__ = ["OptionsFile", "decode", "parse"]
