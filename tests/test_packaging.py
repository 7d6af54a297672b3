"""The sdist and the wheel: what each carries, and that the sdist's tests run from it.

Both are built once per module with ``python -m build --no-isolation`` (``build``, ``setuptools`` and
``wheel`` come with the ``test`` extra) from a copy of the source tree, so that the build's ``build/`` and
``*.egg-info`` output never lands in the working tree, and stale files from an earlier ``build/lib``
cannot slip into the wheel.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Set

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Directories that are local output or caches: never copied, never shipped.
CACHE_DIRS = {"__pycache__", ".mypy_cache", ".pytest_cache", ".hypothesis"}
LOCAL_DIRS = CACHE_DIRS | {".git", ".bench", "build", "dist", ".venv", "venv", ".tox", ".nox"}
CACHE_SUFFIXES = (".pyc", ".pyo", ".pyd", ".db", ".db-wal", ".db-shm", ".sqlite")
DOCUMENTS = ("README.md", "LICENSE", "CHANGELOG.md", "BENCHMARKS.md")

#: ``[text](target)``; the target ends at whitespace or ``)``.
LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")


def shipped(relative: Path) -> bool:
    """Whether a path of the source tree belongs in a distribution at all (caches and output do not)."""
    return not (set(relative.parts) & LOCAL_DIRS or relative.name.endswith(CACHE_SUFFIXES)
                or any(part.endswith(".egg-info") for part in relative.parts))


def source_files(under: str, pattern: str = "*") -> Set[str]:
    """The repository's files under ``under`` (posix paths relative to the root), caches left out."""
    found = set()
    for path in (ROOT / under).rglob(pattern):
        relative = path.relative_to(ROOT)
        if path.is_file() and shipped(relative):
            found.add(relative.as_posix())
    return found


class Dists(NamedTuple):
    sdist: Path
    wheel: Path
    sdist_names: Set[str]  # file paths inside the sdist, without its top directory
    wheel_names: Set[str]
    expected: Dict[str, Set[str]]  # the source tree's files, listed when it was copied


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dists]:
    expected = {
        "package": source_files("conductor_workers", "*.py"),
        "tests": source_files("tests"),
        "samples": source_files("samples"),
    }
    tree = tmp_path_factory.mktemp("source") / "tree"

    def ignore(directory: str, names: List[str]) -> Set[str]:
        base = Path(directory).relative_to(ROOT)
        return {name for name in names if not shipped(base / name)}

    shutil.copytree(ROOT, tree, ignore=ignore)
    # Plant what must never ship, to see MANIFEST.in keep it out.
    for planted in ("tests/__pycache__/planted.cpython-311.pyc", "tests/.mypy_cache/planted.json",
                    "samples/__pycache__/planted.pyc", ".bench/planted.json",
                    "benchmarks/results/planted.json", "tests/.hypothesis/planted", "tests/planted.db"):
        (tree / planted).parent.mkdir(parents=True, exist_ok=True)
        (tree / planted).write_text("{}")

    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel", "--outdir", str(out),
         str(tree)],
        cwd=tree, capture_output=True, text=True, timeout=180,
    )
    assert built.returncode == 0, f"python -m build failed:\n{built.stdout[-4000:]}\n{built.stderr[-4000:]}"
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    with tarfile.open(sdist) as archive:
        members = [m.name for m in archive.getmembers() if m.isfile()]
    top = {name.split("/", 1)[0] for name in members}
    assert len(top) == 1, f"the sdist has more than one top directory: {sorted(top)}"
    sdist_names = {name.split("/", 1)[1] for name in members}
    with zipfile.ZipFile(wheel) as zipped:
        wheel_names = {name for name in zipped.namelist() if not name.endswith("/")}
    yield Dists(sdist, wheel, sdist_names, wheel_names, expected)


@pytest.mark.slow
def test_wheel_carries_the_package_and_nothing_else(dists: Dists) -> None:
    missing = dists.expected["package"] - dists.wheel_names
    assert not missing, f"the wheel lacks package modules: {sorted(missing)}"
    assert "conductor_workers/py.typed" in dists.wheel_names
    assert any(name.startswith("conductor_workers/server/") for name in dists.wheel_names)
    assert any(name.startswith("conductor_workers/testing/") for name in dists.wheel_names)
    outside = {name for name in dists.wheel_names
               if not name.startswith("conductor_workers/") and ".dist-info/" not in name}
    assert not outside, f"the wheel carries files outside the package: {sorted(outside)}"
    caches = {name for name in dists.wheel_names if not shipped(Path(name))}
    assert not caches, f"the wheel carries caches: {sorted(caches)}"
    dist_info = {name.split(".dist-info/", 1)[1] for name in dists.wheel_names if ".dist-info/" in name}
    assert {"LICENSE", "licenses/LICENSE"} & dist_info, f"no LICENSE in the wheel: {sorted(dist_info)}"


@pytest.mark.slow
def test_wheel_metadata(dists: Dists) -> None:
    with zipfile.ZipFile(dists.wheel) as archive:
        (metadata_name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(metadata_name).decode("utf-8")
    headers = metadata.split("\n\n", 1)[0]
    assert re.search(r"^License(-Expression)?: Apache-2\.0$", headers, re.M), headers
    assert "Author: conductor_workers contributors" in headers
    for label in ("Source", "Issues", "Changelog"):
        assert re.search(rf"^Project-URL: {label}, https://", headers, re.M), f"no {label} URL in:\n{headers}"


@pytest.mark.slow
def test_sdist_carries_documents_tests_and_samples(dists: Dists) -> None:
    for document in DOCUMENTS:
        assert document in dists.sdist_names, f"the sdist lacks {document}"
    for what in ("package", "tests", "samples"):
        missing = dists.expected[what] - dists.sdist_names
        assert not missing, f"the sdist lacks {what} files: {sorted(missing)}"
    unwanted = {name for name in dists.sdist_names
                if not shipped(Path(name)) and not name.startswith("conductor_workers.egg-info/")}
    unwanted |= {name for name in dists.sdist_names if name.startswith(("benchmarks/results/", ".ci/"))}
    assert not unwanted, f"the sdist carries caches or local output: {sorted(unwanted)}"


@pytest.mark.slow
def test_every_relative_readme_link_resolves_inside_the_sdist(dists: Dists) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = {m.group("target") for m in LINK.finditer(readme)}
    relative = sorted(t for t in targets if not re.match(r"^([a-z][a-z0-9+.-]*:|#|//)", t, re.I))
    assert relative, "README.md has no relative links: the link pattern is broken"
    for target in relative:
        path = target.split("#", 1)[0].split("?", 1)[0].rstrip("/")
        in_sdist = path in dists.sdist_names or any(name.startswith(path + "/") for name in dists.sdist_names)
        assert in_sdist, f"README.md links to {target!r}, which is not in the sdist"


def test_readme_anchors_name_headings() -> None:
    """Every ``(#anchor)`` in README.md is the GitHub slug of one of its headings."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    text = re.sub(r"^```.*?^```", "", readme, flags=re.M | re.S)  # headings only outside code blocks
    slugs = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        slugs.add(slug)
    anchors = {m.group("target")[1:] for m in LINK.finditer(readme) if m.group("target").startswith("#")}
    assert anchors, "README.md has no in-page links: the link pattern is broken"
    assert not anchors - slugs, f"README.md links to missing headings: {sorted(anchors - slugs)}"


@pytest.mark.slow
def test_the_sdists_unit_tests_pass_from_it(dists: Dists, tmp_path: Path) -> None:
    with tarfile.open(dists.sdist) as archive:
        if hasattr(tarfile, "data_filter"):  # Python 3.12, and security releases of 3.9-3.11
            archive.extractall(tmp_path, filter="data")
        else:
            archive.extractall(tmp_path)
    (tree,) = [path for path in tmp_path.iterdir() if path.is_dir()]
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    env["PYTHONPATH"] = str(tree)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    where = subprocess.run(
        [sys.executable, "-c", "import conductor_workers; print(conductor_workers.__file__)"],
        cwd=tree, env=env, capture_output=True, text=True, timeout=60,
    )
    assert where.returncode == 0, where.stderr
    imported = Path(where.stdout.strip()).resolve()
    assert imported.is_relative_to(tree.resolve()), f"the sdist's tests would import {imported}"
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit"],
        cwd=tree, env=env, capture_output=True, text=True, timeout=120,
    )
    assert ran.returncode == 0, f"tests/unit failed in the sdist:\n{ran.stdout[-6000:]}\n{ran.stderr[-3000:]}"
