"""Deep research's pure half (as the TypeScript service does it): trigger, answer shape, markdown, input.

``wants_deep_research`` decides whether a mission asks for a mana-research job;
``DeepAnswer.from_json`` reads a completed job's ``result.answer`` tolerantly (never raises);
``deep_research_markdown`` renders it and ``deep_research_input`` makes it the
``__web-research__`` input that the shallow research would otherwise supply. No I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from planner.prompt import ResolvedInput
from planner.research import SOURCES_FOOTER, TITLE_CHARS, research_input

__all__ = [
    "DEEP_RESEARCH_PROVIDER",
    "DEEP_RESEARCH_TRIGGER",
    "MAX_ANSWER_CHARS",
    "MAX_CITATIONS",
    "MAX_QUERY_CHARS",
    "Citation",
    "DeepAnswer",
    "deep_research_input",
    "deep_research_markdown",
    "research_query",
    "wants_deep_research",
]

DEEP_RESEARCH_PROVIDER = "gemini-deep-research-max"
MAX_QUERY_CHARS = 4000  # mana-research refuses longer queries
# Ours (the TypeScript service puts any length in the prompt): a deep-research report can run to tens of
# thousands of characters; the planner needs its gist and sources, not every paragraph.
MAX_ANSWER_CHARS = 32_000
MAX_CITATIONS = 50
_SNIPPET_CHARS = 300

# As RESEARCH_TRIGGER in planner/research.py: JS `\b` is ASCII-only and the `i` flag (without
# `u`) folds ASCII only, so re.ASCII gives both. Word-bounded on both sides, unlike that one:
# "deep researcher" or "Hintergrundrecherchen" do not start a paid job.
DEEP_RESEARCH_TRIGGER = re.compile(
    r"\b(deep research|tiefe recherche|umfassende recherche|hintergrundrecherche|deep dive)\b",
    re.IGNORECASE | re.ASCII,
)


def wants_deep_research(objective: str, concept: str) -> bool:
    """True when the objective or the concept markdown asks for deep research."""
    return DEEP_RESEARCH_TRIGGER.search(objective) is not None or DEEP_RESEARCH_TRIGGER.search(concept) is not None


def research_query(objective: str) -> str:
    """The job's query: the objective, cut to what mana-research accepts (1..4000 characters)."""
    query = objective.strip()[:MAX_QUERY_CHARS]
    return query or "Deep Research"  # an empty objective cannot match the trigger; never send ""


@dataclass(frozen=True, slots=True)
class Citation:
    url: str
    title: str | None = None
    snippet: str | None = None

    @classmethod
    def from_json(cls, raw: object) -> Citation | None:
        """A citation with a non-empty string url; anything else about it is optional."""
        if not isinstance(raw, Mapping):
            return None
        url = raw.get("url")
        if not isinstance(url, str) or not url.strip():
            return None
        title, snippet = raw.get("title"), raw.get("snippet")
        return cls(url.strip(),
                   title.strip() or None if isinstance(title, str) else None,
                   snippet.strip() or None if isinstance(snippet, str) else None)


@dataclass(frozen=True, slots=True)
class DeepAnswer:
    """A completed job's answer text and its usable citations."""

    text: str
    citations: tuple[Citation, ...]

    @classmethod
    def from_json(cls, raw: object) -> DeepAnswer | None:
        """mana-research's ``AgentAnswer`` (an object with a string ``answer`` and a
        ``citations`` list); None when there is no text to use — the caller falls back."""
        if not isinstance(raw, Mapping):
            return None
        text = raw.get("answer")
        if not isinstance(text, str) or not text.strip():
            return None
        found: Any = raw.get("citations")
        citations = [c for c in map(Citation.from_json, found) if c is not None] if isinstance(found, list) else []
        unique: dict[str, Citation] = {}
        for citation in citations:
            unique.setdefault(citation.url, citation)  # the first of each url, in order
        return cls(text.strip(), tuple(list(unique.values())[:MAX_CITATIONS]))


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "…"


def deep_research_markdown(objective: str, answer: DeepAnswer) -> str:
    """The input's markdown: a heading, the answer, the sources, the TypeScript service's instruction."""
    text = answer.text if len(answer.text) <= MAX_ANSWER_CHARS else answer.text[:MAX_ANSWER_CHARS] + "…"
    lines = [f'# Deep Research: "{_one_line(objective, TITLE_CHARS)}"', "", text, "", "## Quellen", ""]
    for citation in answer.citations:
        title = _one_line(citation.title, TITLE_CHARS * 2) if citation.title else citation.url
        entry = f"- [{title}]({citation.url})"
        if citation.snippet:
            entry += f" — {_one_line(citation.snippet, _SNIPPET_CHARS)}"
        lines.append(entry)
    if not answer.citations:
        lines.append("(keine)")
    lines += ["", "---", SOURCES_FOOTER]
    return "\n".join(lines)


def deep_research_input(objective: str, markdown: str) -> ResolvedInput:
    """The ``__web-research__`` input, as the TypeScript service names it; the caller wraps its content."""
    return research_input(objective, markdown, label="Deep Research")
