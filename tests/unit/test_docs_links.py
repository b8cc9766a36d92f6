"""Every relative link in README.md and docs/**/*.md leads somewhere: to a file or folder of the
repository, and a `#anchor` to a heading of the Markdown file it names (GitHub's slugs)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: Pages other branches add. A link to one is accepted while the file is absent; once it
#: exists, the link and its anchors are checked like any other.
PENDING = frozenset({"docs/images.md", "docs/dev-cluster.md"})

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
#: [text](target) and ![alt](target), the target up to a space (a title may follow) or ")".
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def _prose(text: str) -> Iterator[tuple[int, str]]:
    """The lines of `text` outside fenced code blocks, with their numbers."""
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def links(text: str) -> list[tuple[int, str]]:
    """Every link target in `text`, outside code blocks and code spans."""
    return [
        (number, match.group(1))
        for number, line in _prose(text)
        for match in _LINK.finditer(_CODE_SPAN.sub("", line))
    ]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, code marks and punctuation dropped, spaces
    to hyphens (a link's text is kept, its target dropped)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a Markdown page's headings; a repeated slug gets -1, -2, ..."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for _, line in _prose(text):
        match = _HEADING.match(line)
        if match is None:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def broken(page: Path, text: str | None = None) -> list[str]:
    """What is wrong with the relative links of `page` (or of `text` as if it were `page`'s),
    one line each."""
    problems = []
    if text is None:
        text = page.read_text(encoding="utf-8")
    for number, target in links(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            continue  # https:, mailto: and the like
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        where = f"{page.relative_to(REPO)}:{number}: {target}"
        try:
            relative = resolved.relative_to(REPO).as_posix()
        except ValueError:
            problems.append(f"{where}: leads out of the repository")
            continue
        if not resolved.exists():
            if relative not in PENDING:
                problems.append(f"{where}: no such file")
            continue
        if (
            anchor
            and resolved.suffix == ".md"
            and anchor not in anchors(resolved.read_text(encoding="utf-8"))
        ):
            problems.append(f"{where}: no heading #{anchor} in {relative}")
    return problems


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    assert broken(page) == []


def test_the_docs_exist() -> None:
    assert (REPO / "docs" / "architecture.md").is_file()
    assert len(pages()) > 2


def test_slugs_follow_github() -> None:
    assert slug("Capacity: `simulate` and benchmarks/capacity.py") == (
        "capacity-simulate-and-benchmarkscapacitypy"
    )
    assert slug("Wake from zero, and the activator") == "wake-from-zero-and-the-activator"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}


def test_links_skip_code() -> None:
    text = "[a](x.md) `[b](y.md)`\n```\n[c](z.md)\n```\n[d](w.md#h)\n"
    assert links(text) == [(1, "x.md"), (5, "w.md#h")]


def test_a_missing_file_and_anchor_are_reported() -> None:
    page = REPO / "docs" / "architecture.md"
    text = (
        "[gone](no-such-page.md)\n[bad](architecture.md#no-such-heading)\n"
        "[out](../../elsewhere.md)\n[ok](architecture.md#the-rooms) [web](https://example.com)\n"
    )
    problems = broken(page, text)
    assert [line.split(": ")[-1] for line in problems] == [
        "no such file",
        "no heading #no-such-heading in docs/architecture.md",
        "leads out of the repository",
    ]


def test_pending_pages_are_checked_once_they_exist() -> None:
    for pending in sorted(PENDING):
        problems = broken(REPO / "README.md", f"[p]({pending}#no-such-heading)")
        if (REPO / pending).exists():
            assert problems, f"{pending} exists, so its anchors are checked"
        else:
            assert problems == []


def test_source_citations_of_docs_exist() -> None:
    """Code comments that cite a page of docs/ (docs/architecture.md, ...) cite one that is
    there, and a quoted section after it is one of its headings."""
    cited = re.compile(r"(docs/[\w/.-]+\.md)(?:[,\s]*\(?\"([^\"]+)\")?")
    problems = []
    for root in ("operator", "trainer", "charts", "benchmarks"):
        for path in sorted((REPO / root).rglob("*")):
            if path.suffix not in (".py", ".yaml", ".tpl") or not path.is_file():
                continue
            text = " ".join(line.strip(" #") for line in path.read_text().splitlines())
            for match in cited.finditer(text):
                page, section = REPO / match.group(1), match.group(2)
                where = f"{path.relative_to(REPO)}: {match.group(1)}"
                if not page.exists():
                    if match.group(1) not in PENDING:
                        problems.append(f"{where}: no such page")
                elif section and slug(section) not in anchors(page.read_text()):
                    problems.append(f"{where}: no section {section!r}")
    assert problems == []
