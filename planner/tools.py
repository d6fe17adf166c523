"""The server's tool allow-list: the TypeScript service's 17 tools, in its order, descriptions verbatim.

The descriptions are part of the planner prompt, so every string here is byte-exact to the
TypeScript service, German spellings ("Faelligkeitsdatum", "zurueck") and U+2014 dashes included.
``AI_PROPOSABLE_TOOL_NAMES`` is the separate canonical name list; importing this module
runs the drift guard, so a mismatch stops the process at startup as the TypeScript service does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from planner.errors import ToolDriftError

__all__ = [
    "AI_AVAILABLE_TOOLS",
    "AI_AVAILABLE_TOOL_NAMES",
    "AI_PROPOSABLE_TOOL_NAMES",
    "Tool",
    "ToolParam",
    "check_tool_drift",
]


@dataclass(frozen=True, slots=True)
class ToolParam:
    """One parameter of a tool as the prompt shows it."""

    name: str
    type: str
    description: str
    required: bool = False
    enum: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool the planner may propose; ``module`` is the webapp module that owns it."""

    name: str
    module: str
    description: str
    params: tuple[ToolParam, ...] = ()


def _req(name: str, description: str, *, type: str = "string") -> ToolParam:
    return ToolParam(name, type, description, required=True)


def _opt(
    name: str, description: str, *, type: str = "string", enum: tuple[str, ...] | None = None
) -> ToolParam:
    return ToolParam(name, type, description, required=False, enum=enum)


AI_AVAILABLE_TOOLS: tuple[Tool, ...] = (
    Tool("create_task", "todo",
        "Erstellt einen neuen Task mit optionalem Faelligkeitsdatum und Prioritaet",
        (
            _req("title", "Titel des Tasks"),
            _opt("dueDate", "Faelligkeitsdatum (YYYY-MM-DD)"),
            _opt("priority", "Prioritaet", enum=("low", "medium", "high")),
            _opt("description", "Beschreibung"),
        ),
    ),
    Tool("complete_task", "todo",
        "Markiert einen Task als erledigt",
        (_req("taskId", "ID des Tasks"),),
    ),
    Tool("complete_tasks_by_title", "todo",
        "Markiert alle Tasks deren Titel den Substring enthält (case-insensitive)",
        (_req("titleSubstring", "Teil des Task-Titels"),),
    ),
    Tool("create_event", "calendar",
        "Erstellt einen Kalender-Event",
        (
            _req("title", "Event-Titel"),
            _req("startIso", "Start (ISO)"),
            _opt("endIso", "Ende (ISO)"),
        ),
    ),
    Tool("create_place", "places",
        "Fügt einen neuen Ort hinzu",
        (
            _req("name", "Name des Ortes"),
            _opt("category", "Kategorie"),
        ),
    ),
    Tool("visit_place", "places",
        "Vermerkt einen Besuch an einem bereits erfassten Ort",
        (_req("placeId", "ID des Ortes"),),
    ),
    Tool("undo_drink", "drink",
        "Macht den letzten Drink-Eintrag rückgängig",
        (),
    ),
    Tool("save_news_article", "news",
        (
            "Speichert einen Artikel von einer URL in die Leseliste. "
            "URL wird serverseitig per Readability extrahiert."
        ),
        (
            _req("url", "Die Artikel-URL"),
            _opt("title", "Anzeigetitel für den Approval-Dialog (informativ)"),
            _opt("summary", "Kurze Begründung warum dieser Artikel relevant ist"),
        ),
    ),
    Tool("update_note", "notes",
        (
            "Überschreibt Titel und/oder Inhalt einer bestehenden Notiz. "
            "Destruktiv — bevorzuge append_to_note oder add_tag_to_note wenn du nur ergänzen willst."
        ),
        (
            _req("noteId", "ID der Notiz"),
            _opt("title", "Neuer Titel"),
            _opt("content", "Neuer Inhalt (überschreibt vollständig)"),
        ),
    ),
    Tool("append_to_note", "notes",
        (
            "Hängt Text ans Ende des Inhalts einer bestehenden Notiz an (neue Zeile getrennt). "
            "Nicht-destruktiv."
        ),
        (
            _req("noteId", "ID der Notiz"),
            _req("content", "Text zum Anhängen"),
        ),
    ),
    Tool("add_tag_to_note", "notes",
        (
            "Fügt einen Hashtag (z.B. "
            '"#Natur") an eine bestehende Notiz an. '
            "Idempotent — wenn der Tag schon vorhanden ist, passiert nichts."
        ),
        (
            _req("noteId", "ID der Notiz"),
            _req("tag", 'Tag-Name (ohne #; z.B. "Natur", "Arbeit"). Leerzeichen werden durch _ ersetzt.'),
        ),
    ),
    Tool("create_note", "notes",
        "Erstellt eine neue Notiz. Gibt die ID der angelegten Notiz zurueck.",
        (
            _req("title", "Titel der Notiz"),
            _opt("content", "Inhalt der Notiz (Markdown)"),
        ),
    ),
    Tool("create_journal_entry", "journal",
        (
            "Erstellt einen neuen Tagebuch-Eintrag fuer den heutigen Tag. "
            "Gibt die ID zurueck."
        ),
        (
            _req("content", "Inhalt des Eintrags (Markdown)"),
            _opt("title", "Optionaler Titel"),
            _opt("mood", "Stimmung", enum=("great", "good", "neutral", "bad", "terrible")),
        ),
    ),
    Tool("create_habit", "habits",
        "Erstellt einen neuen Habit-Tracker. Gibt die ID des neuen Habits zurueck.",
        (
            _req("title", "Titel des Habits"),
            _req("icon", "Emoji-Icon"),
            _req("color", "Hex-Farbe (z.B. #EF4444)"),
        ),
    ),
    Tool("log_habit", "habits",
        (
            "Loggt eine Ausfuehrung eines existierenden Habits fuer heute. "
            "Optional mit Notiz."
        ),
        (
            _req("habitId", "ID des Habits"),
            _opt("note", "Optionale Notiz zum Log"),
        ),
    ),
    Tool("research_news", "news-research",
        (
            "Durchsucht RSS-Feeds und Web-Quellen nach relevanten Artikeln zu einem Thema. "
            "Gibt gefundene Artikel-URLs + Titel + Zusammenfassung zurueck. "
            "Nuetzlich als Vorstufe zu save_news_article."
        ),
        (
            _req("query", 'Suchbegriff / Thema (z.B. "TypeScript 5.8 release")'),
            _opt("language", 'Sprache (z.B. "de" oder "en")'),
            _opt("limit", "Max. Anzahl Ergebnisse (Standard: 10)", type="number"),
        ),
    ),
    Tool("create_contact", "contacts",
        "Erstellt einen neuen Kontakt. Felder die nicht bekannt sind einfach weglassen.",
        (
            _req("firstName", "Vorname"),
            _opt("lastName", "Nachname"),
            _opt("email", "E-Mail-Adresse"),
            _opt("phone", "Telefonnummer"),
            _opt("company", "Firma / Organisation"),
            _opt("notes", "Freitext-Notizen zum Kontakt"),
        ),
    ),
)

#: shared-ai ``AI_PROPOSABLE_TOOL_NAMES``: the canonical list, grouped by module.
AI_PROPOSABLE_TOOL_NAMES: tuple[str, ...] = (
    "create_task",
    "complete_task",
    "complete_tasks_by_title",
    "create_event",
    "create_place",
    "visit_place",
    "undo_drink",
    "save_news_article",
    "create_note",
    "update_note",
    "append_to_note",
    "add_tag_to_note",
    "create_journal_entry",
    "create_habit",
    "log_habit",
    "research_news",
    "create_contact",
)

AI_AVAILABLE_TOOL_NAMES: frozenset[str] = frozenset(t.name for t in AI_AVAILABLE_TOOLS)


def check_tool_drift(
    tools: Sequence[Tool] = AI_AVAILABLE_TOOLS,
    proposable: Sequence[str] = AI_PROPOSABLE_TOOL_NAMES,
) -> None:
    """Raise ``ToolDriftError`` unless the catalog's names equal the proposable names.

    The message is the TypeScript service's, whose code formats both lists with ``JSON.stringify``
    (``extra=["a","b"] missing=[]``); ``extra`` keeps catalog order, ``missing`` list order.
    """
    names = list(dict.fromkeys(t.name for t in tools))
    wanted = list(dict.fromkeys(proposable))
    extra = [n for n in names if n not in wanted]
    missing = [n for n in wanted if n not in names]
    if extra or missing:
        raise ToolDriftError(
            "[mana-ai] AI_AVAILABLE_TOOLS drift vs AI_PROPOSABLE_TOOL_NAMES. "
            f"extra={_js_stringify(extra)} missing={_js_stringify(missing)}"
        )


def _js_stringify(names: list[str]) -> str:
    return json.dumps(names, ensure_ascii=False, separators=(",", ":"))


check_tool_drift()  # the TypeScript service refuses to start on drift; so do we
