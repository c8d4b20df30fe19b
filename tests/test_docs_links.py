"""Every relative link of the user-facing pages (README.md, BENCHMARKS.md, docs/, results/) points to a
file or folder of the repository, and its #anchor, on a markdown page, to one of that page's headings,
so a moved run, page or section fails here instead of in a reader's browser."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import ROOT

PAGES = sorted(
    {
        ROOT / "README.md",
        ROOT / "BENCHMARKS.md",
        *(ROOT / "docs").glob("*.md"),
        *(ROOT / "results").rglob("*.md"),
    }
)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
CODE = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*$", re.MULTILINE)


def link_targets(markdown: str) -> list[str]:
    """The link targets outside code, anchors kept; absolute URLs and mail links left out."""
    text = CODE.sub("", FENCE.sub("", markdown))
    targets = [a or b for a, b in LINK.findall(text)]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    headings = HEADING.findall(FENCE.sub("", markdown))
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def broken(page: Path) -> list[str]:
    found = []
    for target in link_targets(page.read_text()):
        path, _, anchor = target.partition("#")
        linked = page.parent / path if path else page
        if not linked.exists():
            found.append(path)
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text()):
            found.append(target)
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_a_file_of_the_repository(page):
    assert not broken(page), f"{page.relative_to(ROOT)}: links to nothing: {broken(page)}"


def test_the_check_finds_a_broken_link_and_passes_the_rest(tmp_path):
    (tmp_path / "there.md").write_text("# There\n\n## Errors and exit codes\n\n### A (GSM8K) case\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Top\n\n[ok](there.md) [anchor](there.md#errors-and-exit-codes) [site](https://example.org#x)\n"
        "[mail](mailto:a@b) [top](#top) [case](there.md#a-gsm8k-case)\n"
        "![img](gone.png) [gone](nowhere/README.md) `[code](also-gone.md)`\n"
        "[no section](there.md#errors) [no heading](#nowhere)\n"
        "```\n[fenced](fenced-gone.md)\n# not a heading\n```\n"
    )
    assert broken(page) == ["gone.png", "nowhere/README.md", "there.md#errors", "#nowhere"]
