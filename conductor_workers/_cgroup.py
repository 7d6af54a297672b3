"""Reading cgroup v2 files: where this process's cgroup is, and what its interface files say.

Pure parsing functions (text in, numbers out) and path resolution, used by
:class:`conductor_workers.admission.CgroupV2Reader`. Nothing here runs at import.

* ``/proc/self/cgroup``: on a cgroup v2 host (or in a container with its own cgroup namespace) the
  line ``0::/path``; a v1 or hybrid host also has ``N:controller:/path`` lines, and then the v2
  hierarchy (if any) is not mounted at ``/sys/fs/cgroup`` (no ``cgroup.controllers`` there).
* The limit that applies is the tightest of the process's cgroup and its ancestors: a Kubernetes
  pod or a systemd slice may set ``memory.max`` a level above the process's own cgroup. The walk
  stops at the mount root (in a container, the container's own cgroup).
* ``memory.high`` below ``memory.max`` is the point where the kernel throttles: it counts as the limit.
"""
from __future__ import annotations

import os
from typing import Dict, List, NamedTuple, Optional

_UNLIMITED = "max"


class CgroupUnavailable(OSError):
    """No usable cgroup v2 hierarchy for this process (the message says why)."""


def v2_path(proc_self_cgroup: str) -> Optional[str]:
    """The cgroup v2 path from the text of ``/proc/self/cgroup`` (the ``0::`` line), None without one."""
    for line in proc_self_cgroup.splitlines():
        hierarchy, sep, rest = line.partition(":")
        if not sep:
            continue
        controllers, sep, path = rest.partition(":")
        if hierarchy.strip() == "0" and sep and controllers == "":
            return path.strip() or "/"
    return None


def parse_keyed(text: str) -> Dict[str, int]:
    """A flat-keyed file (``memory.stat``, ``memory.events``, ``cpu.stat``): ``key value`` per line.

    Raises ValueError on a line that is not two fields with an integer value: a garbled file must
    not read as zeros.
    """
    values: Dict[str, int] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise ValueError(f"not a 'key value' line: {line!r}")
        values[fields[0]] = int(fields[1])
    return values


def parse_limit(text: str) -> Optional[int]:
    """``memory.max`` / ``memory.high``: bytes, or None for ``max`` (no limit)."""
    value = text.strip()
    if value == _UNLIMITED:
        return None
    number = int(value)
    if number < 0:
        raise ValueError(f"a negative limit: {value!r}")
    return number


def parse_cpu_max(text: str) -> Optional[float]:
    """``cpu.max`` (``$QUOTA $PERIOD``): the quota in cores (``"150000 100000"`` is 1.5), None for ``max``."""
    fields = text.split()
    if not fields or len(fields) > 2:
        raise ValueError(f"not '$QUOTA $PERIOD': {text!r}")
    if fields[0] == _UNLIMITED:
        return None
    quota = int(fields[0])
    period = int(fields[1]) if len(fields) == 2 else 100000
    if quota <= 0 or period <= 0:
        raise ValueError(f"not a positive quota and period: {text!r}")
    return quota / period


def read_text(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as fh:
        return fh.read()


class CgroupLocation(NamedTuple):
    """Where to read: the process's own cgroup, the one whose memory limit applies, the one whose CPU quota applies."""

    own: str
    memory: str  # the tightest memory.max / memory.high on the way up; ``own`` when none is set
    memory_limit: Optional[int]  # that limit in bytes, None: no memory limit anywhere up to the root
    cpu: str  # the cgroup with the smallest cpu.max quota on the way up; ``own`` when none is set
    cpu_quota: Optional[float]  # cores; None: no quota


def limit_of(directory: str) -> Optional[int]:
    """The effective memory limit of one cgroup: the smaller of memory.max and memory.high."""
    limits = []
    for name in ("memory.max", "memory.high"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            value = parse_limit(read_text(path))
            if value is not None:
                limits.append(value)
    return min(limits) if limits else None


def _quota_of(directory: str) -> Optional[float]:
    path = os.path.join(directory, "cpu.max")
    return parse_cpu_max(read_text(path)) if os.path.exists(path) else None


def _ancestors(own: str, root: str) -> List[str]:
    """``own`` and its parents up to and including ``root``."""
    chain = [own]
    current = own
    while os.path.normpath(current) != os.path.normpath(root):
        parent = os.path.dirname(current)
        if parent == current or len(parent) < len(root):
            break
        chain.append(parent)
        current = parent
    return chain


def locate(root: str = "/sys/fs/cgroup", proc_self_cgroup: str = "/proc/self/cgroup") -> CgroupLocation:
    """Find this process's cgroup v2 directory and the cgroups whose limits apply to it.

    Raises :class:`CgroupUnavailable` when there is no cgroup v2 hierarchy at ``root`` or no
    ``0::`` line (a cgroup v1 host), or when the files cannot be read.
    """
    try:
        path = v2_path(read_text(proc_self_cgroup))
    except OSError as exc:
        raise CgroupUnavailable(f"cannot read {proc_self_cgroup}: {exc}") from exc
    if path is None:
        raise CgroupUnavailable(f"no cgroup v2 entry (0::) in {proc_self_cgroup}")
    if not os.path.exists(os.path.join(root, "cgroup.controllers")):
        raise CgroupUnavailable(f"no cgroup v2 hierarchy at {root} (a cgroup v1 or hybrid host)")
    own = os.path.normpath(os.path.join(root, path.lstrip("/")))
    if not os.path.isdir(own):
        # A container without its own cgroup namespace sees the host's path, but has its own
        # cgroup mounted at the root.
        own = os.path.normpath(root)
    if not os.path.exists(os.path.join(own, "memory.stat")):
        raise CgroupUnavailable(f"no memory.stat in {own} (the memory controller is not enabled)")
    try:
        memory_dir, memory_limit = own, None
        cpu_dir, cpu_quota = own, None
        for directory in _ancestors(own, root):
            limit = limit_of(directory)
            if limit is not None and (memory_limit is None or limit < memory_limit):
                memory_dir, memory_limit = directory, limit
            quota = _quota_of(directory)
            if quota is not None and (cpu_quota is None or quota < cpu_quota):
                cpu_dir, cpu_quota = directory, quota
    except (OSError, ValueError) as exc:
        raise CgroupUnavailable(f"cannot read the limits of {own}: {exc}") from exc
    return CgroupLocation(own, memory_dir, memory_limit, cpu_dir, cpu_quota)


__all__ = [
    "CgroupLocation", "CgroupUnavailable", "limit_of", "locate", "parse_cpu_max", "parse_keyed", "parse_limit", "read_text",
    "v2_path",
]
