"""planner/research.py: the trigger regex, the article shape, the markdown and the input."""

from __future__ import annotations

import pytest

from planner.prompt import ResolvedInput
from planner.research import (
    DISCOVER_LIMIT,
    RESEARCH_LANGUAGE,
    SEARCH_LIMIT,
    Article,
    research_input,
    research_markdown,
    wants_research,
)


def test_constants() -> None:
    assert (RESEARCH_LANGUAGE, DISCOVER_LIMIT, SEARCH_LIMIT) == ("de", 5, 8)


# --- trigger --------------------------------------------------------------------------------


@pytest.mark.parametrize("objective", [
    "Recherchiere KI-Trends",
    "recherchieren",
    "Research the market",
    "Neue News zu Rust",
    "Abonniere den newsletter",        # a prefix counts
    "Finde drei Artikel",
    "findet heraus",                   # prefix
    "Suche nach Quellen",
    "Suchen und sammeln",              # prefix, capitalised
    "Was ist AKTUELLE Lage?",
    "die neueste Version",
    "What happened today",
    "history of Berlin",
    "historisch betrachtet",
    "Was geschah on this day?",
    "On This Day in 1989",
    "(news)",                          # punctuation is a boundary
    "KI-News",
    "ünews",                           # JS \b is ASCII-only: ü is not a word character
])
def test_trigger_matches(objective: str) -> None:
    assert wants_research(objective, "")


@pytest.mark.parametrize("objective", [
    "",
    "Wochenreview",
    "Plane meine Woche",
    "Renews the lease",                # no boundary before "news"
    "Versuche es morgen",              # no boundary before "suche"
    "Befinde mich in Berlin",          # no boundary before "finde"
    "on thisday",
    "ontoday",
    "\u017fuche",                      # long s: the JS `i` flag folds ASCII only
    "newz",
])
def test_trigger_does_not_match(objective: str) -> None:
    assert not wants_research(objective, "")


def test_trigger_on_concept_alone() -> None:
    assert wants_research("Plane die Woche", "# Konzept\nAktuelle Themen sammeln")
    assert not wants_research("Plane die Woche", "# Konzept\nTermine sammeln")


# --- article --------------------------------------------------------------------------------


def test_article_from_full_json() -> None:
    raw = {"url": "https://a.example/1", "title": "A", "excerpt": "Kurz", "content": "…",
           "htmlContent": None, "author": None, "imageUrl": None,
           "publishedAt": "2025-05-01T08:00:00.000Z", "feedUrl": "https://a.example/feed", "score": 4}
    assert Article.from_json(raw) == Article("https://a.example/1", "A", "Kurz", "2025-05-01T08:00:00.000Z")


@pytest.mark.parametrize(("raw", "expected"), [
    ({"url": "u"}, Article("u", "u")),                                        # title -> url
    ({"url": "u", "title": ""}, Article("u", "u")),
    ({"url": "u", "title": None, "excerpt": None, "publishedAt": None}, Article("u", "u")),
    ({"url": "u", "title": 7, "excerpt": 3, "publishedAt": 1700000000}, Article("u", "u")),
    ({"url": "u", "title": "T", "excerpt": ""}, Article("u", "T", "")),
])
def test_article_from_partial_json(raw: object, expected: Article) -> None:
    assert Article.from_json(raw) == expected


@pytest.mark.parametrize("raw", [None, "u", ["u"], {}, {"url": None}, {"url": ""}, {"url": 5}, {"title": "T"}])
def test_article_without_url_is_dropped(raw: object) -> None:
    assert Article.from_json(raw) is None


# --- markdown -------------------------------------------------------------------------------

FOOTER = "Nutze diese Quellen fuer deinen Plan. Verwende nur URLs die oben stehen; erfinde keine."


def test_markdown_golden_two_articles() -> None:
    articles = [
        Article("https://a.example/1", "KI-Gesetz beschlossen", "Das Parlament hat …", "2025-05-01T08:00:00.000Z"),
        Article("https://b.example/2", "Ohne Auszug"),
    ]
    assert research_markdown("Aktuelle KI-News", 3, articles) == (
        '# Web-Research: "Aktuelle KI-News"\n'
        "\n"
        "3 Quellen durchsucht, 2 relevante Artikel gefunden:\n"
        "\n"
        "## KI-Gesetz beschlossen\n"
        "> Das Parlament hat …\n"
        "URL: https://a.example/1\n"
        "Datum: 2025-05-01T08:00:00.000Z\n"
        "\n"
        "## Ohne Auszug\n"
        "URL: https://b.example/2\n"
        "\n"
        "---\n"
        + FOOTER
    )


def test_markdown_skips_empty_excerpt_and_date() -> None:
    articles = [Article("u1", "T1", "", ""), Article("u2", "T2", None, "2025-01-01")]
    assert research_markdown("q", 1, articles).split("\n") == [
        '# Web-Research: "q"', "", "1 Quellen durchsucht, 2 relevante Artikel gefunden:", "",
        "## T1", "URL: u1", "",
        "## T2", "URL: u2", "Datum: 2025-01-01", "",
        "---", FOOTER,
    ]


def test_markdown_without_articles() -> None:
    assert research_markdown("q", 0, []) == (
        '# Web-Research: "q"\n\n0 Quellen durchsucht, 0 relevante Artikel gefunden:\n\n---\n' + FOOTER
    )


def test_markdown_keeps_text_verbatim() -> None:
    """As in the TypeScript service, nothing is escaped: quotes, newlines and markdown pass through."""
    text = research_markdown('say "hi"', 1, [Article("u", "# T", "a\nb")])
    assert text.startswith('# Web-Research: "say "hi""\n')
    assert "## # T\n> a\nb\nURL: u\n" in text


# --- the resolved input ---------------------------------------------------------------------


def test_research_input() -> None:
    assert research_input("Aktuelle KI-News", "MD") == ResolvedInput(
        id="__web-research__", module="news-research", table="web",
        title='Web-Research: "Aktuelle KI-News"', content="MD",
    )


def test_research_input_title_slices_60_characters() -> None:
    objective = "x" * 59 + "äöü" + "y" * 10
    assert research_input(objective, "").title == 'Web-Research: "' + "x" * 59 + 'ä"'
    assert research_input("z" * 60, "").title == 'Web-Research: "' + "z" * 60 + '"'
    # Code points, not UTF-16 units: JS counts the emoji as 2 and keeps only its high surrogate.
    assert research_input("a" * 59 + "😀b", "").title == 'Web-Research: "' + "a" * 59 + '😀"'
