"""What ``import conductor_workers`` costs: no third-party module beyond the four dependencies.

Each check runs in a fresh interpreter so that the modules other tests imported do not count.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# The four dependencies and what they import themselves (requests -> charset_normalizer, idna,
# certifi; urllib3 may pick up its optional compression/socks packages; attrs is also ``attr``).
ALLOWED_THIRD_PARTY = {
    "attr",
    "attrs",
    "cachetools",
    "requests",
    "urllib3",
    "charset_normalizer",
    "chardet",
    "idna",
    "certifi",
    "brotli",
    "brotlicffi",
    "zstandard",
    "socks",
    "simplejson",
}

_PROBE = r"""
import json, os, sys

def third_party(before):
    found = {}
    for name, module in list(sys.modules.items()):
        if name in before or module is None:
            continue
        top = name.split(".")[0]
        origin = getattr(module, "__file__", None) or ""
        parts = set(os.path.normpath(origin).split(os.sep))
        if "site-packages" in parts or "dist-packages" in parts:
            if top != "conductor_workers":
                found[top] = origin
    return found

before = set(sys.modules)
import conductor_workers
stages = {"import": sorted(third_party(before)), "file": conductor_workers.__file__}
stages["requests_after_import"] = "requests" in sys.modules
stages["urllib3_after_import"] = "urllib3" in sys.modules
for name in STAGE_NAMES:
    getattr(conductor_workers, name)
    stages[name] = sorted(third_party(before))
    stages["requests_after_" + name] = "requests" in sys.modules
print(json.dumps(stages))
"""


def _probe(*names: str) -> dict:
    script = _PROBE.replace("STAGE_NAMES", repr(list(names)))
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(REPO_ROOT),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(result["file"]).resolve().parent.parent == REPO_ROOT
    return result


def _unexpected(names):
    # charset_normalizer ships a mypyc runtime module with a hashed top-level name ("<hash>__mypyc").
    return sorted(n for n in names if n not in ALLOWED_THIRD_PARTY and not n.endswith("__mypyc"))


WORKER_NAMES = ("Worker", "worker_task", "Task", "TaskResult", "PollingOptions", "Configuration")


@pytest.fixture(scope="module")
def probe() -> dict:
    """One fresh interpreter: import, then touch the worker-side names, then the client and manager."""
    return _probe(*WORKER_NAMES, "ConductorClient", "TaskManager")


def test_plain_import_is_lazy(probe):
    assert probe["requests_after_import"] is False, "import conductor_workers must not import requests"
    assert probe["urllib3_after_import"] is False
    assert _unexpected(probe["import"]) == []
    assert "requests" not in probe["import"]


def test_defining_workers_needs_no_http_stack(probe):
    for name in WORKER_NAMES:
        assert _unexpected(probe[name]) == [], name
        assert probe["requests_after_" + name] is False, name


def test_client_and_manager_import_only_the_dependencies(probe):
    for name in ("ConductorClient", "TaskManager"):
        assert _unexpected(probe[name]) == [], (name, probe[name])
    assert probe["requests_after_ConductorClient"] is True
    assert {"requests", "urllib3", "cachetools", "attr"} <= set(probe["ConductorClient"])


def test_manager_alone_imports_only_the_dependencies():
    result = _probe("TaskManager")
    assert _unexpected(result["TaskManager"]) == [], result["TaskManager"]


def test_every_public_name_resolves():
    import conductor_workers

    for name in conductor_workers.__all__:
        assert getattr(conductor_workers, name) is not None, name
    assert set(conductor_workers.__all__) <= set(dir(conductor_workers))
    with pytest.raises(AttributeError, match="no_such_name"):
        conductor_workers.no_such_name  # noqa: B018
    assert json.loads(json.dumps(conductor_workers.__version__))
