"""The documentation: its Python examples run, its links resolve, the API page covers the API.

Every ```python block of README.md and docs/*.md is executed, the blocks of one page in order
and in one namespace (a later block may use an earlier one's names). A block preceded by the
line ``<!-- no-run -->`` (with a reason after it) is only compiled, not run: slow ones, or
fragments of a larger program. The site itself is built by ``make docs``
(``mkdocs build --strict``), which checks the links between docs pages and the docstrings.
"""

from __future__ import annotations

import contextlib
import io
import re
import textwrap
from pathlib import Path

import pytest

import odeflow

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
FENCE = re.compile(r"^(?P<indent>[ ]*)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```",
                   re.M | re.S)
NO_RUN = "<!-- no-run"


def python_blocks(page: Path) -> list[tuple[int, str, bool]]:
    """``(line, code, runnable)`` for each python block of ``page``."""
    text = page.read_text()
    blocks = []
    for m in FENCE.finditer(text):
        if m.group("lang") not in ("python", "py"):
            continue
        before = text[: m.start()].rstrip().splitlines()
        runnable = not (before and before[-1].strip().startswith(NO_RUN))
        line = text.count("\n", 0, m.start("body")) + 1
        body = textwrap.dedent(m.group("body"))
        blocks.append((line, body, runnable))
    return blocks


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_examples_run(page):
    blocks = python_blocks(page)
    if not blocks:
        pytest.skip("no python blocks")
    namespace: dict = {"__name__": "__docs__"}
    for line, code, runnable in blocks:
        compiled = compile(code, f"{page.relative_to(ROOT)}:{line}", "exec")
        if runnable:
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compiled, namespace)


LINK = re.compile(r"(?<!!)\[[^\]]*\]\((?P<target>[^)\s]+)\)|!\[[^\]]*\]\((?P<image>[^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    """Links and images to files of the repository exist (anchors are mkdocs' job)."""
    text = FENCE.sub("", page.read_text())
    missing = []
    for m in LINK.finditer(text):
        target = (m.group("target") or m.group("image")).split("#")[0]
        if not target or re.match(r"^[a-z]+:", target):
            continue
        if not (page.parent / target).exists():
            missing.append(target)
    assert not missing, f"{page.name} links to missing files: {missing}"


def test_docs_stay_inside_the_repository():
    """The docs speak to users: no paths outside the repository, no tracker references."""
    bad = re.compile(r"\.\./shared|/work/|\bissue \d+|\bissues? #\d+|seed [AB]\b|course assignment")
    for page in PAGES:
        for n, line in enumerate(page.read_text().splitlines(), 1):
            assert not bad.search(line), f"{page.name}:{n}: {line.strip()}"


def test_api_page_documents_every_public_name():
    api = (DOCS / "API.md").read_text()
    documented = set(re.findall(r"^::: odeflow\.(\w+)\s*$", api, re.M))
    assert documented == set(odeflow.__all__)


def test_public_callables_have_docstrings():
    missing = [n for n in odeflow.__all__
               if callable(getattr(odeflow, n)) and not (getattr(odeflow, n).__doc__ or "").strip()]
    assert not missing, f"public names without a docstring: {missing}"


def test_figures_are_small():
    for png in DOCS.rglob("*.png"):
        assert png.stat().st_size < 200_000, f"{png.relative_to(ROOT)} is over 200 KB"
