"""Run every ```python block of README.md and of the documentation pages (docs/**/*.md).

One test per block, with the id ``<file>:<line of the opening fence>``. The blocks of one page
share one namespace and one temporary working directory and run in order, so a block may use
what an earlier block of its page defined; running a single block runs the earlier blocks of
its page first. Other fences (bash, yaml, text, ...) are not executed.

A block that cannot run here is marked in the markdown, on the line right before its fence
(blank lines between are allowed):

- ``<!-- skip: reason -->``: reported as skipped with that reason (several GPUs, a cluster,
  the network).
- ``<!-- slow: reason -->``: marked ``slow``, so it runs only in ``make test-all``.

Later blocks of a page must not depend on a skipped or slow block.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _paths import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
_MARKER = re.compile(r"^\s*<!--\s*(?P<kind>skip|slow)\s*:\s*(?P<reason>.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a markdown page."""

    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    skip: str | None = None  # reason, from <!-- skip: ... -->
    slow: str | None = None  # reason, from <!-- slow: ... -->

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}"


def parse_blocks(path: Path) -> list[Block]:
    """Fenced code blocks of a markdown file, with their skip / slow markers."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        start, fence = i, match["fence"]
        end = start + 1
        while end < len(lines) and not re.match(
            rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[end]
        ):
            end += 1
        if end == len(lines):
            raise ValueError(f"{path}:{start + 1}: code fence is never closed")
        markers: dict[str, str] = {}
        before = start - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        if before >= 0 and (marker := _MARKER.match(lines[before])):
            markers[marker["kind"]] = marker["reason"]
        body = "\n".join(lines[start + 1 : end])
        blocks.append(
            Block(
                path=path,
                line=start + 1,
                language=match["info"].lower(),
                code=textwrap.dedent(body) + "\n",
                skip=markers.get("skip"),
                slow=markers.get("slow"),
            )
        )
        i = end + 1
    return blocks


def python_blocks() -> list[Block]:
    return [b for page in PAGES for b in parse_blocks(page) if b.language in ("python", "py")]


BLOCKS = python_blocks()


@dataclass
class PageRun:
    """The shared state of one page's blocks: namespace, working directory, progress."""

    workdir: Path
    namespace: dict[str, Any] = field(default_factory=lambda: {"__name__": "__docs__"})
    done: set[int] = field(default_factory=set)
    failed: str | None = None


_RUNS: dict[Path, PageRun] = {}


def _execute(block: Block, run: PageRun) -> None:
    # Leading newlines keep the markdown file's line numbers in tracebacks.
    source = "\n" * block.line + block.code
    try:
        exec(compile(source, str(block.path), "exec"), run.namespace)
    except BaseException:
        run.failed = block.name
        raise
    finally:
        run.done.add(block.line)


@pytest.fixture(autouse=True)
def _headless(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPLBACKEND", "Agg")


def _params() -> list[Any]:
    params = []
    for block in BLOCKS:
        marks = [pytest.mark.slow] if block.slow is not None else []
        params.append(pytest.param(block, id=block.name, marks=marks))
    return params


@pytest.mark.parametrize("block", _params())
def test_docs_example(
    block: Block, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    if block.skip is not None:
        pytest.skip(block.skip)
    run = _RUNS.get(block.path)
    if run is None:
        run = _RUNS[block.path] = PageRun(tmp_path_factory.mktemp(block.path.stem))
    monkeypatch.chdir(run.workdir)
    # Earlier blocks of the page first, if this one is run on its own (e.g. with -k).
    for earlier in BLOCKS:
        if earlier.path != block.path or earlier.line >= block.line:
            continue
        if run.failed is not None:
            break
        if earlier.line not in run.done and earlier.skip is None and earlier.slow is None:
            _execute(earlier, run)
    if run.failed is not None:
        pytest.skip(f"an earlier block of this page failed: {run.failed}")
    _execute(block, run)


def test_blocks_found() -> None:
    """The collection itself: every page parses, and the README has examples."""
    assert any(b.path.name == "README.md" for b in BLOCKS)
    for block in BLOCKS:
        assert block.code.strip(), f"{block.name}: empty python block"
