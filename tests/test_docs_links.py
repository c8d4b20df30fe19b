"""Every relative link of the user-facing pages (README.md, BENCHMARKS.md, docs/, results/) points to a
file or folder of the repository, so a moved run or page fails here instead of in a reader's browser."""

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


def relative_links(markdown: str) -> list[str]:
    """The link targets outside code, without their #anchors; absolute URLs and mail links left out."""
    text = CODE.sub("", FENCE.sub("", markdown))
    targets = [a or b for a, b in LINK.findall(text)]
    return [t.split("#")[0] for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:|^#", t)]


def broken(page: Path) -> list[str]:
    return [t for t in relative_links(page.read_text()) if t and not (page.parent / t).exists()]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_a_file_of_the_repository(page):
    assert not broken(page), f"{page.relative_to(ROOT)}: links to nothing: {broken(page)}"


def test_the_check_finds_a_broken_link_and_passes_the_rest(tmp_path):
    (tmp_path / "there.md").write_text("")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](there.md) [anchor](there.md#a) [site](https://example.org) [mail](mailto:a@b) [top](#x)\n"
        "![img](gone.png) [gone](nowhere/README.md) `[code](also-gone.md)`\n"
        "```\n[fenced](fenced-gone.md)\n```\n"
    )
    assert broken(page) == ["gone.png", "nowhere/README.md"]
