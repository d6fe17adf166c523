"""`mana-ai demo`'s stand-in LLM answers each seeded mission with a plan a person would accept.

The stand-in is served for real on loopback and asked with the prompt the planner builds for
each seeded mission (its agent's policy applied), as in the demo's cycle.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

import httpx

from demo.seeds import AGENTS, MISSIONS, PLANS
from demo.stand_in_llm import stand_in_app
from loopback import serving
from planner import (
    AI_AVAILABLE_TOOLS, Accepted, Plan, PromptMission, allowed_tool_names, build_planner_prompt,
    filter_tools_by_agent_policy, parse_planner_response, validate_tool_call,
)

#: common German words: the demo speaks one language, English, like the rest of its output
GERMAN = re.compile(r"\b(und|der|die|das|für|nicht|mit|ein|eine|nächster|schritt|sammeln|finden|planen|"
                    r"sichten|vorbereiten|später|noch)\b", re.IGNORECASE)
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)


async def ask(url: str, system: str, user: str) -> str:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        response = await client.post("/v1/chat/completions", json={
            "model": "demo", "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]})
    response.raise_for_status()
    content: str = response.json()["choices"][0]["message"]["content"]
    return content


def texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in texts(v)]
    if isinstance(value, list):
        return [t for v in value for t in texts(v)]
    return []


async def test_every_seeded_mission_gets_a_plan_a_person_would_accept() -> None:
    agents = {a["id"]: a for a in AGENTS}
    missions = [m.record(NOW, None) for m in MISSIONS]
    async with serving(stand_in_app(PLANS)) as url:
        for mission in missions:
            agent = agents.get(mission.get("agentId", ""))
            tools = filter_tools_by_agent_policy(AI_AVAILABLE_TOOLS, agent["policy"] if agent else None)
            offered = {t.name: t for t in tools}
            prompt = build_planner_prompt(PromptMission(mission["title"], mission["conceptMarkdown"],
                                                        mission["objective"]), [], tools)
            plan = parse_planner_response(await ask(url, prompt.system, prompt.user), allowed_tool_names(tools))
            assert isinstance(plan, Plan), (mission["id"], plan)
            assert plan.steps, mission["id"]
            for step in plan.steps:
                assert isinstance(step.params, dict)
                verdict = validate_tool_call(step.tool_name, json.dumps(step.params), offered, steps_recorded=0,
                                             max_steps=10)
                assert isinstance(verdict, Accepted), (mission["id"], verdict)
                # a step names an existing record only by an id the prompt shows: ids are never made up
                for name, value in step.params.items():
                    if name.endswith("Id"):
                        assert isinstance(value, str) and value in prompt.user, (mission["id"], step)
            written = texts([plan.summary, *[[s.summary, s.params] for s in plan.steps]])
            seeded = texts([mission["title"], mission["objective"], mission["conceptMarkdown"]])
            assert [t for t in written + seeded if GERMAN.search(t)] == [], mission["id"]
