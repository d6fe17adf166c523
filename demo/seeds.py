"""What `mana-ai demo` seeds for its one user, and the plan the stand-in LLM proposes for each mission.

The data is what a user's devices would have written to `sync_changes`: two agents, five
missions and two notes encrypted in the browser. Each mission carries the plan a good planner
would answer with: a new task with a title, a note with content, a news search. It never names
a record by an id the prompt does not show.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from grants.cipher import encrypt_value
from grants.derive import Derivation, derive_mdk
from planner import iso_ms

USER = "demo-user"
PAST = "2026-01-01T00:00:00.000Z"  # long due: the cycle picks these missions up at once
MASTER_KEY = bytes(range(1, 33))  # the user's vault key, as mana-auth would hold it
WEEKLY_REVIEW = "mission-weekly-review"
NOTE_DERIVATION = Derivation(WEEKLY_REVIEW, ("notes",), ("notes:note-1",))  # the grant covers note-1 only

AGENTS: tuple[dict[str, Any], ...] = (
    {"id": "agent-researcher", "name": "Researcher", "role": "Finds and collects what a mission needs",
     "state": "active", "maxConcurrentMissions": 1, "maxTokensPerDay": 50_000,
     "policy": {"tools": {"create_task": "deny"}, "defaultForAi": "propose"}},  # may not create tasks
    {"id": "agent-travel", "name": "Travel planner", "role": "Plans trips", "state": "paused",
     "maxConcurrentMissions": 1, "policy": {"tools": {}, "defaultForAi": "propose"}},
)


def _step(summary: str, tool: str, params: Mapping[str, object], rationale: str) -> dict[str, Any]:
    return {"summary": summary, "toolName": tool, "params": dict(params), "rationale": rationale}


@dataclass(frozen=True)
class DemoMission:
    id: str
    title: str
    objective: str
    concept: str
    plan_summary: str
    steps: tuple[dict[str, Any], ...]
    agent_id: str | None = None  # None: the user's default agent
    due_in: timedelta | None = None  # None: due long ago
    inputs: tuple[dict[str, str], ...] = field(default=())

    def record(self, now: datetime, grant: Mapping[str, object] | None) -> dict[str, Any]:
        """The mission as the webapp stores it."""
        record: dict[str, Any] = {
            "id": self.id, "title": self.title, "objective": self.objective, "conceptMarkdown": self.concept,
            "state": "active", "cadence": {"kind": "interval", "everyMinutes": 60}, "iterations": [],
            "inputs": [dict(i) for i in self.inputs],
            "nextRunAt": PAST if self.due_in is None else iso_ms(now + self.due_in)}
        if self.agent_id is not None:
            record["agentId"] = self.agent_id
        if grant is not None:
            record["grant"] = dict(grant)
        return record

    def answer(self) -> dict[str, Any]:
        """The stand-in LLM's plan for this mission."""
        return {"summary": self.plan_summary, "steps": list(self.steps)}


MISSIONS: tuple[DemoMission, ...] = (
    DemoMission(
        WEEKLY_REVIEW, "Weekly review", "Review the week's progress against my strategy note",
        "# Concept\nEvery Friday: what moved, what stalled, what comes next.",
        "Set up this week's review: a task to do it and a note to write it in.",
        (_step("Schedule the weekly review", "create_task",
               {"title": "Do the weekly review", "priority": "medium",
                "description": "What moved, what stalled, what comes next, measured against the strategy note."},
               "The mission asks for a review every Friday."),
         _step("Start the review note", "create_note",
               {"title": "Weekly review", "content": "## What moved\n\n## What stalled\n\n## Next week\n"},
               "A fixed outline makes the weeks comparable.")),
        inputs=({"module": "notes", "table": "notes", "id": "note-1"},
                {"module": "notes", "table": "notes", "id": "note-2"})),
    DemoMission(
        "mission-newsletters", "Skim newsletters", "Find this week's news on open-source AI tools",
        "# Concept\nOnly what matters for our own tools; no hype.",
        "Search this week's sources for news on open-source AI tools.",
        (_step("Search news on open-source AI tools", "research_news",
               {"query": "open-source AI tools", "language": "en", "limit": 5},
               "The mission follows this topic week by week."),),
        agent_id="agent-researcher"),
    DemoMission(
        "mission-taxes", "Prepare tax return", "Collect the receipts for the 2026 tax return",
        "# Concept\nEverything in one place before the accountant asks.",
        "List the receipts to collect for the tax return in one note.",
        (_step("List the receipts to collect", "create_note",
               {"title": "Tax return 2026: receipts",
                "content": "- Payslips and the annual salary statement\n- Health insurance statement\n"
                           "- Donation receipts\n- Invoices for repairs and household services"},
               "A checklist is the first step; this agent may not create tasks."),),
        agent_id="agent-researcher"),
    DemoMission(
        "mission-vacation", "Plan vacation", "Compare three destinations for the summer vacation",
        "# Concept\nBy train if possible, two weeks in July.",
        "Compare three summer destinations in one note.",
        (_step("Compare the destinations", "create_note",
               {"title": "Summer vacation: destinations",
                "content": "| Destination | By train | Cost for two weeks |\n|---|---|---|\n"
                           "| Lake Garda | 9 h | |\n| Vienna | 7 h | |\n| Copenhagen | 11 h | |"},
               "Side by side, the choice is quick."),),
        agent_id="agent-travel"),
    DemoMission(
        "mission-photos", "Sort photos", "Sort this year's photos into albums",
        "# Concept\nOne album per month.",
        "Plan an afternoon to sort the photos.",
        (_step("Plan the photo sorting", "create_task", {"title": "Sort this year's photos into albums"},
               "The mission is due tomorrow."),),
        due_in=timedelta(days=1)),
)

#: the stand-in LLM's answers, by mission title (the prompt names a mission by its title)
PLANS: Mapping[str, dict[str, Any]] = {m.title: m.answer() for m in MISSIONS}

_NOTES = (("Strategy", "Be bold, ship early."), ("Private", "Not shared with any mission."))


def notes() -> list[dict[str, Any]]:
    """Two notes encrypted in the browser; the weekly review's grant covers only the first."""
    mdk = derive_mdk(MASTER_KEY, NOTE_DERIVATION)
    return [{"id": f"note-{i}", "title": encrypt_value(mdk, title, os.urandom(12)),
             "content": encrypt_value(mdk, content, os.urandom(12))}
            for i, (title, content) in enumerate(_NOTES, start=1)]
