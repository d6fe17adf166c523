"""The web-research pre-step's pure half: trigger, article shape, markdown, input.

``wants_research`` decides whether a mission gets research; ``research_markdown`` renders what
``upstream.research_client`` found, byte-exact to the TypeScript service; ``research_input`` wraps it as
the ``__web-research__`` input that goes last in the prompt's inputs. No I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from planner.prompt import ResolvedInput

__all__ = [
    "DISCOVER_LIMIT",
    "RESEARCH_INPUT_ID",
    "RESEARCH_LANGUAGE",
    "RESEARCH_TRIGGER",
    "SEARCH_LIMIT",
    "SOURCES_FOOTER",
    "TITLE_CHARS",
    "Article",
    "research_input",
    "research_markdown",
    "wants_research",
]

RESEARCH_LANGUAGE = "de"
DISCOVER_LIMIT = 5
SEARCH_LIMIT = 8
RESEARCH_INPUT_ID = "__web-research__"
TITLE_CHARS = 60  # of the objective, in a research input's title

# JS `\b` is ASCII-only and the `i` flag (without `u`) folds ASCII only: re.ASCII gives both.
# No trailing `\b`: prefixes count ("newsletter", "Suchen", "findet").
RESEARCH_TRIGGER = re.compile(
    r"\b(recherchier|research|news|finde|suche|aktuelle|neueste|today|history|historisch|on this day)",
    re.IGNORECASE | re.ASCII,
)

SOURCES_FOOTER = "Nutze diese Quellen fuer deinen Plan. Verwende nur URLs die oben stehen; erfinde keine."


def wants_research(objective: str, concept: str) -> bool:
    """True when the objective or the concept markdown mentions research (the TypeScript service's regex)."""
    return RESEARCH_TRIGGER.search(objective) is not None or RESEARCH_TRIGGER.search(concept) is not None


@dataclass(frozen=True, slots=True)
class Article:
    """One article of mana-api's search answer, reduced to what the markdown shows."""

    url: str
    title: str
    excerpt: str | None = None
    published_at: str | None = None

    @classmethod
    def from_json(cls, raw: object) -> Article | None:
        """A ``ScoredArticle`` of mana-api's news research as an ``Article``; None without a usable url.

        The TypeScript service interpolates whatever is there (``URL: undefined``, ``## undefined``).
        We drop an article without a non-empty string url (nothing to cite), and a missing,
        non-string or empty title falls back to the url so the heading still names the source.
        A non-string excerpt or publishedAt counts as absent (mana-api sends a string or null).
        """
        if not isinstance(raw, Mapping):
            return None
        url = raw.get("url")
        if not isinstance(url, str) or not url:
            return None
        title = raw.get("title")
        excerpt = raw.get("excerpt")
        published_at = raw.get("publishedAt")
        return cls(
            url=url,
            title=title if isinstance(title, str) and title else url,
            excerpt=excerpt if isinstance(excerpt, str) else None,
            published_at=published_at if isinstance(published_at, str) else None,
        )


def research_markdown(query: str, feed_count: int, articles: Sequence[Article]) -> str:
    """The TypeScript service's research markdown, lines joined by ``\\n`` (no trailing newline)."""
    lines = [
        f'# Web-Research: "{query}"',
        "",
        f"{feed_count} Quellen durchsucht, {len(articles)} relevante Artikel gefunden:",
        "",
    ]
    for article in articles:
        lines.append(f"## {article.title}")
        if article.excerpt:                          # JS truthiness: None and "" are skipped
            lines.append(f"> {article.excerpt}")
        lines.append(f"URL: {article.url}")
        if article.published_at:
            lines.append(f"Datum: {article.published_at}")
        lines.append("")
    lines += ["---", SOURCES_FOOTER]
    return "\n".join(lines)


def research_input(objective: str, markdown: str, *, label: str = "Web-Research") -> ResolvedInput:
    """The ``__web-research__`` input; its title is `label` and the objective's first 60 characters
    in quotes (the deep research's input differs only by its label).

    JS ``slice(0, 60)`` counts UTF-16 units, we count code points: the titles differ only when
    the first 60 characters hold an astral character (emoji), where JS may also cut a pair.
    """
    return ResolvedInput(
        id=RESEARCH_INPUT_ID,
        module="news-research",
        table="web",
        title=f'{label}: "{objective[:TITLE_CHARS]}"',
        content=markdown,
    )
