"""Every relative link in README.md and docs/ leads somewhere, and the README stays a front page.

The text moved from one long README into pages under docs/; a link to a file that moved or a heading
that was renamed breaks silently on GitHub. Anchors follow GitHub's heading slugs: lowercase, every
character but letters, digits, hyphens, underscores and spaces dropped, spaces to hyphens, and a
repeated heading gets -1, -2 ...
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[2]
README_MAX_LINES = 150

FENCE = re.compile(r"^(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# [text](target) and ![alt](target), without a title; the text may hold backticks and brackets once
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+).+?\1")


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (a link or heading inside one is not a link or heading)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text (before duplicates are numbered)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose_lines(path.read_text()):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    """Link targets outside code; a link's text may wrap onto the next line."""
    prose = "\n".join(INLINE_CODE.sub("", line) for line in prose_lines(path.read_text()))
    return LINK.findall(prose)


def shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name


def broken(path: Path) -> list[str]:
    problems = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not checked here
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not linked.exists():
            problems.append(f"{target}: no such file {shown(linked)}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"{target}: no heading #{anchor} in {shown(linked)}")
        elif anchor and linked.suffix != ".md":
            problems.append(f"{target}: an anchor into a file that is not markdown")
    return problems


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(path: Path) -> None:
    assert not broken(path), "\n".join(broken(path))


def test_there_are_docs_pages_with_links_to_check() -> None:
    """Not vacuous: the README links into docs/, and the pages link to each other by anchor."""
    assert len(documents()) >= 10
    readme_links = links(REPO / "README.md")
    assert sum(target.startswith("docs/") for target in readme_links) >= 9, readme_links
    assert sum("#" in target for path in documents() for target in links(path)) >= 10


def test_the_readme_is_a_front_page() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES, "move detail into a page under docs/"
    first = re.search(r"^```[^\n]*\n(.*?)^```", text, re.S | re.M)
    assert first, "the README has no code block"
    assert "scripts/demo" in first.group(1) and "scripts/test" in first.group(1), first.group(1)


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("What the cluster-wide role grants, and why", "what-the-cluster-wide-role-grants-and-why"),
        ("Bad input and how it is handled", "bad-input-and-how-it-is-handled"),
        ("`status` command", "status-command"),
        ("Ready-made keys", "ready-made-keys"),
        ("Tokens: 1 / 2 (draft)", "tokens-1--2-draft"),
        ("snake_case stays", "snake_case-stays"),
    ],
)
def test_slugs_follow_githubs_rules(heading: str, expected: str) -> None:
    assert slug(heading) == expected


def test_a_repeated_heading_gets_a_number(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## Status\n\n## Status\n\n```\n## Status\n```\n\n## Status\n")
    assert anchors(page) == {"title", "status", "status-1", "status-2"}


def test_a_broken_link_and_a_wrong_anchor_are_found(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## Known heading\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n[ok](other.md#known-heading) [self](#page) [web](https://example.com/x#y)\n"
        "[gone](missing.md) [bad](other.md#unknown) [bad self\nwrapped](#nowhere)\n"
        "`[in code](missing-too.md)`\n\n```\n[fenced](missing-three.md)\n```\n"
    )
    problems = [problem.split(":")[0] for problem in broken(page)]
    assert problems == ["missing.md", "other.md#unknown", "#nowhere"]
