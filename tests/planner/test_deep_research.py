"""planner/deep_research.py, pure: the trigger, the answer, the markdown and the input."""

from __future__ import annotations

import pytest

from planner.deep_research import (
    MAX_ANSWER_CHARS,
    MAX_QUERY_CHARS,
    Citation,
    DeepAnswer,
    deep_research_input,
    deep_research_markdown,
    research_query,
    wants_deep_research,
)


@pytest.mark.parametrize("text", [
    "Deep research zu Trio", "DEEP RESEARCH", "ein deep dive in asyncio", "Tiefe Recherche bitte",
    "umfassende Recherche", "Hintergrundrecherche: Rust", "(deep dive)",
])
def test_the_trigger_matches(text: str) -> None:
    assert wants_deep_research(text, "")
    assert wants_deep_research("Plan", f"# Konzept\n{text}")


@pytest.mark.parametrize("text", [
    "Research the market",          # shallow research only
    "deep researcher",              # word-bounded at the end
    "Hintergrundrecherchen",        # likewise
    "deepdive",                     # no space
    "tiefe Recherchen",
    "deep\u00a0research",           # not a plain space
    "xdeep dive",                   # word-bounded at the start
])
def test_the_trigger_does_not_match(text: str) -> None:
    assert not wants_deep_research(text, "")


def test_non_ascii_letters_are_word_boundaries_as_in_js() -> None:
    # JS \b without the u flag counts only [A-Za-z0-9_] as word characters
    assert wants_deep_research("ädeep dive", "")


def test_the_query_is_the_objective_cut_to_mana_researchs_limit() -> None:
    assert research_query("  Deep dive  ") == "Deep dive"
    assert len(research_query("x" * 5000)) == MAX_QUERY_CHARS


@pytest.mark.parametrize("raw", [None, "text", [], {}, {"answer": ""}, {"answer": "  "}, {"answer": 3},
                                 {"text": "wrong key"}])
def test_an_unusable_answer_is_none(raw: object) -> None:
    assert DeepAnswer.from_json(raw) is None


def test_citations_are_read_tolerantly() -> None:
    answer = DeepAnswer.from_json({"answer": " Text ", "citations": [
        {"url": "https://a.example", "title": " A ", "snippet": ""}, {"url": ""}, {"title": "no url"}, "junk",
        {"url": "https://a.example", "title": "dupe"}, {"url": "https://b.example", "title": 5, "snippet": "S"}]})
    assert answer == DeepAnswer("Text", (Citation("https://a.example", "A", None),
                                         Citation("https://b.example", None, "S")))
    assert DeepAnswer.from_json({"answer": "T", "citations": "nope"}) == DeepAnswer("T", ())


def test_the_markdown() -> None:
    answer = DeepAnswer("Die Antwort.\nZweite Zeile.", (
        Citation("https://a.example", "Quelle A", "Ein\nAuszug"), Citation("https://b.example")))
    assert deep_research_markdown("Deep dive: Trio", answer) == (
        '# Deep Research: "Deep dive: Trio"\n\nDie Antwort.\nZweite Zeile.\n\n## Quellen\n\n'
        "- [Quelle A](https://a.example) — Ein Auszug\n- [https://b.example](https://b.example)\n\n---\n"
        "Nutze diese Quellen fuer deinen Plan. Verwende nur URLs die oben stehen; erfinde keine.")
    assert "## Quellen\n\n(keine)\n" in deep_research_markdown("x", DeepAnswer("a", ()))
    long = deep_research_markdown("x", DeepAnswer("y" * (MAX_ANSWER_CHARS + 10), ()))
    assert "y" * MAX_ANSWER_CHARS + "…\n" in long and "y" * (MAX_ANSWER_CHARS + 1) not in long


def test_the_input_is_the_references_web_research_input() -> None:
    found = deep_research_input("o" * 80, "md")
    assert (found.id, found.module, found.table, found.title, found.content) == (
        "__web-research__", "news-research", "web", f'Deep Research: "{"o" * 60}"', "md")
