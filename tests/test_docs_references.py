"""The documentation and the code speak to a reader who has only this repository.

No file in `SCOPE` may point at a document the reader cannot open — a design document, notes,
a specification's sections, an issue number, a path beside the repository — or lean on a term
only those documents define ("the reference" for the TypeScript service this daemon replaces).
Each sentence — of the docs, of a comment, a docstring or an SQL comment — has to say what it
means on its own.

`SCOPE` is a list of glob patterns relative to the repository root (`**/` is any number of
folders). Links to public pages (`pgjones/hypercorn#203`) and sections of public standards
(`ES2024 §21.4.1.32`, `RFC 9110 §15.5`) are fine: anyone can open them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCOPE = ["README.md", "docs/*.md", "deploy/**/*", "**/*.py", "store/*.sql", "store/migrations/*.sql",
         "pyproject.toml", "Dockerfile", ".ci/*"]
# folders never walked: not ours, generated, or too big to walk in a fast test
NOT_SCANNED = {".venv", "venv", ".git", "node_modules", "test-artifacts", "__pycache__", ".mypy_cache",
               ".pytest_cache", ".hypothesis", ".mana-ai", "build", "dist"}
THIS_FILE = Path(__file__).resolve()

# a section sign, unless it follows a public standard's name (`ES2024 §…`, `RFC 9110 §…`, `ECMA-262 §…`)
_SECTION = re.compile(r"(?<!\bES\d{4} )(?<!\bRFC \d{4} )(?<!\bECMA-262 )§")
# "the reference" as a name for the TypeScript service, not the ordinary noun phrase
_THE_REFERENCE = re.compile(
    r"\bthe reference\b(?!\s+(?:counts?|counting|cycles?|point|frame|to|of)\b)", re.IGNORECASE)

# what is found → why a reader of the repository cannot follow it
FORBIDDEN: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\bDESIGN\b"), "a design document outside the repository"),
    (re.compile(r"stack-notes", re.IGNORECASE), "notes outside the repository"),
    (re.compile(r"\b(?:contracts|STYLE)\.md\b"), "a document outside the repository"),
    (_SECTION, "a section of a document outside the repository"),
    (re.compile(r"\breference-(?:v0\.6|later)\b", re.IGNORECASE), "a specification outside the repository"),
    (_THE_REFERENCE, "a term defined outside the repository (say which service)"),
    (re.compile(r"\bissues?\s+#?\d+\b|\bthe issue's\b", re.IGNORECASE), "an issue of our own tracker"),
    (re.compile(r"\.\./shared\b|/work/shared\b|\bshared/reference\b"), "a path outside the repository"),
]


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob as a regex over `/`-separated relative paths: `**/` any folders, `*` and `?` within one."""
    parts = re.split(r"(\*\*/|\*|\?)", pattern)
    wild = {"**/": "(?:[^/]+/)*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(wild.get(part, re.escape(part)) for part in parts))


def _walk() -> list[str]:
    """Every file under the root, as a relative posix path, skipping `NOT_SCANNED` folders."""
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in NOT_SCANNED and not d.endswith(".egg-info")]
        relative = Path(folder).relative_to(ROOT).as_posix()
        found += [name if relative == "." else f"{relative}/{name}" for name in files]
    return found


def scoped_files() -> list[Path]:
    patterns = [_glob_regex(pattern) for pattern in SCOPE]
    return sorted(ROOT / relative for relative in _walk()
                  if any(p.fullmatch(relative) for p in patterns) and (ROOT / relative).resolve() != THIS_FILE)


def test_the_scope_names_files() -> None:
    files = {p.relative_to(ROOT).as_posix() for p in scoped_files()}
    expected = {"README.md", "docs/operations.md", "deploy/compose.yaml", "runtime.py", "store/fold.py",
                "tests/conftest.py", "store/queries.sql", "store/migrations/0001_reference_schema.sql",
                "pyproject.toml", "Dockerfile"}
    assert expected <= files, expected - files
    assert not any(part in NOT_SCANNED for f in files for part in f.split("/")), "a skipped folder was walked"


def test_globs_read_as_documented() -> None:
    assert _glob_regex("**/*.py").fullmatch("runtime.py") and _glob_regex("**/*.py").fullmatch("a/b/c.py")
    assert not _glob_regex("store/*.sql").fullmatch("store/migrations/0001_x.sql")
    assert _glob_regex("deploy/**/*").fullmatch("deploy/grafana/mana-ai.json")
    assert not _glob_regex("docs/*.md").fullmatch("docs/x.mdx")


def offending_lines(text: str) -> list[str]:
    """`line: found (why)` for each forbidden reference in `text`."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for pattern, why in FORBIDDEN:
            for match in pattern.finditer(line):
                found.append(f"{number}: {match.group(0)!r} ({why}): {line.strip()[:120]}")
    return found


def _scoped_params() -> list[object]:
    """Each scoped file, named by its path."""
    return [pytest.param(path, id=path.relative_to(ROOT).as_posix()) for path in scoped_files()]


@pytest.mark.parametrize("path", _scoped_params())
def test_no_references_outside_the_repository(path: Path) -> None:
    found = offending_lines(path.read_text(encoding="utf-8"))
    assert found == [], f"{path.relative_to(ROOT)}:\n" + "\n".join(found)


@pytest.mark.parametrize("line", [
    "as in DESIGN §2.3", "see stack-notes", "the reference's row (§5.5)", "reference-later §1.4",
    "The reference crashed", "fixed in issue 8", "the issue's profile", "../shared/reference/x.md",
    "# the reference answers with 404", "(reference §6.1, Appendices A–C)", "§14 item 15", "STYLE §9",
    "contracts.md's registry", "Issue 8.1: the front", "-- Reference §5.1, plus:", "see stack-notes.md §8",
    "reference-v0.6 §4.1", "like the reference in v0.6",
])
def test_each_kind_of_reference_is_caught(line: str) -> None:
    assert offending_lines(line) != []


@pytest.mark.parametrize("line", [
    "pgjones/hypercorn#203", "the TypeScript service's row", "references to a record", "a DESIGNER",
    "shared secret", "an issue with the proxy", "ES2024 §21.4.1.32", "RFC 9110 §15.5.5", "ECMA-262 §7.1",
    "dereference the pointer", "reference counting keeps it alive", "the reference count drops to 0",
    "the reference to the row", "a reference point, not a client", 'schema = {"$ref": "#/$defs/Step"}',
    "store/migrations/0001_reference_schema.sql", "def reference_fold(", "encode/httpcore#1035",
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


def test_the_upgrade_guide_lists_every_migration() -> None:
    """docs/upgrading.md says what each migration changes: a new one must get its row."""
    guide = (ROOT / "docs" / "upgrading.md").read_text(encoding="utf-8")
    missing = [path.stem for path in sorted((ROOT / "store" / "migrations").glob("*.sql"))
               if f"| {path.stem[:4]} `{path.stem[5:]}` |" not in guide]
    assert missing == []
