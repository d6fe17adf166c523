"""The documentation speaks to a reader who has only this repository.

No file in `SCOPE` may point at a document the reader cannot open — a design document, notes,
a specification's sections, an issue number, a path beside the repository — or lean on a term
only those documents define ("the reference" for the TypeScript service this daemon replaces).
Each sentence has to say what it means on its own.

`SCOPE` is a list of glob patterns relative to the repository root; widen it (e.g. with
`"**/*.py"`) to hold code comments and docstrings to the same rule. Links to public pages
(`pgjones/hypercorn#203`) are fine: anyone can open them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCOPE = ["README.md", "docs/*.md", "deploy/**/*.yml", "deploy/**/*.yaml"]
NOT_SCANNED = {".venv", ".git", "node_modules", "test-artifacts"}
THIS_FILE = Path(__file__).resolve()

# what is found → why a reader of the repository cannot follow it
FORBIDDEN: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\bDESIGN\b"), "a design document outside the repository"),
    (re.compile(r"stack-notes", re.IGNORECASE), "notes outside the repository"),
    (re.compile(r"§"), "a section of a document outside the repository"),
    (re.compile(r"\breference-(?:v0\.6|later)\b", re.IGNORECASE), "a specification outside the repository"),
    (re.compile(r"\bthe reference\b", re.IGNORECASE), "a term defined outside the repository (say which service)"),
    (re.compile(r"\bissues?\s+#?\d+\b|\bthe issue's\b", re.IGNORECASE), "an issue of our own tracker"),
    (re.compile(r"\.\./shared\b|/work/shared\b|\bshared/reference\b"), "a path outside the repository"),
]


def scoped_files() -> list[Path]:
    found: set[Path] = set()
    for pattern in SCOPE:
        for path in ROOT.glob(pattern):
            relative = path.relative_to(ROOT)
            if path.is_file() and path.resolve() != THIS_FILE and not NOT_SCANNED & set(relative.parts):
                found.add(path)
    return sorted(found)


def test_the_scope_names_files() -> None:
    files = {p.relative_to(ROOT).as_posix() for p in scoped_files()}
    assert "README.md" in files and "docs/operations.md" in files, files


def offending_lines(text: str) -> list[str]:
    """`line: found (why)` for each forbidden reference in `text`."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for pattern, why in FORBIDDEN:
            for match in pattern.finditer(line):
                found.append(f"{number}: {match.group(0)!r} ({why}): {line.strip()[:120]}")
    return found


@pytest.mark.parametrize("path", scoped_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_references_outside_the_repository(path: Path) -> None:
    found = offending_lines(path.read_text(encoding="utf-8"))
    assert found == [], f"{path.relative_to(ROOT)}:\n" + "\n".join(found)


@pytest.mark.parametrize("line", [
    "as in DESIGN §2.3", "see stack-notes", "the reference's row (§5.5)", "reference-later §1.4",
    "The reference crashed", "fixed in issue 8", "the issue's profile", "../shared/reference/x.md",
])
def test_each_kind_of_reference_is_caught(line: str) -> None:
    assert offending_lines(line) != []


@pytest.mark.parametrize("line", [
    "pgjones/hypercorn#203", "the TypeScript service's row", "references to a record", "a DESIGNER",
    "shared secret", "an issue with the proxy",
])
def test_ordinary_words_pass(line: str) -> None:
    assert offending_lines(line) == []


def anchors_of(markdown: str) -> set[str]:
    """GitHub's anchors of a document's headings: lower case, punctuation dropped, spaces → `-`."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_anchors_are_read_as_github_makes_them() -> None:
    assert anchors_of("## Bounding an answer: `MANA_AI_LLM_MAX_TOKENS`\n### Both generations of `sync_changes`") \
        == {"bounding-an-answer-mana_ai_llm_max_tokens", "both-generations-of-sync_changes"}


@pytest.mark.parametrize("path", [p for p in scoped_files() if p.suffix == ".md"],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_between_documents_resolve(path: Path) -> None:
    """Every relative link names a file of the repository, and a heading of it after `#`."""
    broken = []
    text = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL))
    for target in re.findall(r"\]\(([^)\s]+)\)", text):  # links outside code
        if re.match(r"[a-z]+:", target):
            continue  # http(s):, mailto:
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors_of(linked.read_text(encoding="utf-8")):
            broken.append(f"{target}: no such heading")
    assert broken == [], f"{path.relative_to(ROOT)}: {broken}"
