"""Every ```python block of README.md runs as pasted, against an embedded LocalConductor.

Each block runs in a fresh interpreter (``python block.py``) in an empty temporary directory with
``CONDUCTOR_SERVER_URL`` pointing at this module's LocalConductor, so a block must import and define
everything it uses. A block that cannot run on its own says so with an HTML comment on the line right
before its fence:

- ``<!-- readme-test: fragment -->``: a piece of a larger program (it uses names from around it, or it
  serves forever); it is only compiled.
- ``<!-- readme-test: real-server -->``: it needs what LocalConductor does not give; only compiled.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List, NamedTuple, Optional

import pytest

from conductor_workers.testing import LocalConductor

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TIMEOUT = 60  # seconds per block

#: How many blocks run as pasted. Raise it when a block becomes runnable; lowering it means a block
#: was marked fragment or real-server, which the review should see.
MIN_RUNNABLE = 12

MARKER = re.compile(r"^<!--\s*readme-test:\s*(?P<kind>[a-z-]+)\s*-->\s*$")
KINDS = ("fragment", "real-server")
FENCE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")


class Block(NamedTuple):
    number: int  # among the python blocks, from 0
    heading: str  # the heading the block sits under
    line: int  # 1-based line of the opening fence
    kind: str  # "run", "fragment" or "real-server"
    code: str


class Marker(NamedTuple):
    line: int
    kind: str
    next_line: str  # the line right after the marker


def parse(text: str) -> "tuple[List[Block], List[Marker]]":
    """The python blocks of a Markdown text, and every ``readme-test`` marker in it."""
    lines = text.splitlines()
    blocks: List[Block] = []
    markers: List[Marker] = []
    heading = "(top)"
    fence: Optional[str] = None  # the open fence, while inside a code block
    info = ""
    start = 0
    body: List[str] = []
    for number, line in enumerate(lines, 1):
        if fence is not None:
            if line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
                if info == "python":
                    previous = lines[start - 2] if start >= 2 else ""
                    found = MARKER.match(previous)
                    kind = found.group("kind") if found else "run"
                    blocks.append(Block(len(blocks), heading, start, kind, "\n".join(body) + "\n"))
                fence = None
            else:
                body.append(line)
            continue
        opening = FENCE.match(line)
        if opening:
            fence, info, start, body = opening.group("fence"), opening.group("info").lower(), number, []
        elif line.startswith("#"):
            heading = line.lstrip("#").strip()
        else:
            marker = MARKER.match(line)
            if marker:
                following = lines[number] if number < len(lines) else ""
                markers.append(Marker(number, marker.group("kind"), following))
    assert fence is None, f"README.md: the code block opened on line {start} is never closed"
    return blocks, markers


BLOCKS, MARKERS = parse(README.read_text(encoding="utf-8"))


def block_id(block: Block) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", block.heading.lower()).strip("-")
    return f"{block.number:02d}-{slug}"


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    with LocalConductor() as server:
        yield server.url


def test_readme_has_enough_runnable_blocks() -> None:
    runnable = [block for block in BLOCKS if block.kind == "run"]
    assert len(runnable) >= MIN_RUNNABLE, (
        f"only {len(runnable)} of README.md's {len(BLOCKS)} python blocks run as pasted, expected at least "
        f"{MIN_RUNNABLE}; marked: {[(b.line, b.kind) for b in BLOCKS if b.kind != 'run']}"
    )


def test_every_marker_is_known_and_precedes_a_python_block() -> None:
    for marker in MARKERS:
        where = f"README.md line {marker.line}"
        assert marker.kind in KINDS, f"{where}: unknown readme-test marker {marker.kind!r}"
        fence = FENCE.match(marker.next_line)
        assert fence is not None and fence.group("info").lower() == "python", (
            f"{where}: a readme-test marker must be on the line right before a ```python fence, "
            f"but the next line is {marker.next_line!r}"
        )


@pytest.mark.parametrize("block", BLOCKS, ids=block_id)
def test_readme_block(block: Block, server_url: str, tmp_path: Path) -> None:
    where = f"README.md line {block.line} (under {block.heading!r})"
    compile(block.code, where, "exec")  # every block, fragments too, is valid Python
    if block.kind != "run":
        return  # a marked fragment: that it compiles is what can be checked without its context
    script = tmp_path / "readme_block.py"
    script.write_text(block.code, encoding="utf-8")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CONDUCTOR_AUTH_", "CONDUCTOR_WORKER", "conductor_worker", "conductor.worker"))
    }
    env["CONDUCTOR_SERVER_URL"] = server_url
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    try:
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{where} did not finish within {TIMEOUT} s (a block that serves forever is a fragment)\n"
                    f"stdout:\n{exc.stdout!r}\nstderr:\n{exc.stderr!r}")
    assert done.returncode == 0, (
        f"{where} failed with exit code {done.returncode}\n--- block ---\n{block.code}"
        f"--- stdout ---\n{done.stdout}--- stderr ---\n{done.stderr}"
    )
