"""The system prompt of the tool-calling planner (docs/planner-tools.md): pure.

Compact and German like the TypeScript service's later (tool-calling) prompt, but written for
the server: no read tools are offered, every call is a proposal the user reviews, and a call
may be rejected with a reason to correct. The user message is the JSON planner's, unchanged
(mission, concept, objective, inputs, last iterations), so both modes see the same context.
"""

from __future__ import annotations

from collections.abc import Sequence

from planner.prompt import PlannerMessages, PromptMission, ResolvedInput, build_planner_prompt

__all__ = ["build_tools_prompt", "tools_system_prompt"]

_SYSTEM = """\
Du bist eine KI, die im Auftrag des Nutzers an einer langlebigen Mission arbeitet.

Plane die nächste Iteration, indem du die angebotenen Tools aufrufst. Kein Aufruf wird sofort \
ausgeführt: jeder wird als Vorschlag aufgezeichnet und dem Nutzer zur Freigabe vorgelegt. Du \
bekommst deshalb keine Daten zurück, nur eine Bestätigung ("success": true) oder eine Ablehnung \
("success": false) mit dem Grund.

Regeln:
1. Nutze nur die angebotenen Tools und halte dich an ihre Parameter: Pflichtfelder, JSON-Typen, \
erlaubte Werte.
2. Es gibt keine Lese-Tools. Plane auf Basis des Kontexts im Nutzer-Prompt und erfinde keine IDs, \
die dort nicht stehen.
3. Gib zusammengehörige Vorschläge gebündelt in EINEM Zug ab (mehrere Tool-Aufrufe).
4. Wird ein Aufruf abgelehnt, korrigiere ihn im nächsten Zug oder lass ihn weg.
5. Berücksichtige das Feedback aus früheren Iterationen; wiederhole abgelehnte Vorschläge nicht \
unverändert.
6. Du hast höchstens {max_rounds} Züge. Wenn du fertig bist, antworte ohne Tool-Aufruf mit einem \
Satz, was du in dieser Iteration vorschlägst: er ist die Zusammenfassung für den Nutzer."""


def tools_system_prompt(max_rounds: int) -> str:
    return _SYSTEM.format(max_rounds=max_rounds)


def build_tools_prompt(mission: PromptMission, resolved_inputs: Sequence[ResolvedInput],
                       *, max_rounds: int) -> PlannerMessages:
    """The tool planner's system message and the JSON planner's user message."""
    user = build_planner_prompt(mission, resolved_inputs, ()).user  # the user frame ignores tools
    return PlannerMessages(tools_system_prompt(max_rounds), user)
