"""A stand-in for mana-llm: answers each demo mission with its prepared plan (demo/seeds.py).

It reads the mission's title from the prompt and keeps only the steps whose tools the prompt
offers, as a model would: a tool the agent's policy denies never appears in its plan.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from quart import jsonify, request
from quart_trio import QuartTrio

_TITLE = re.compile(r"^# Mission: (.*)$", re.MULTILINE)
_OFFERED = re.compile(r"^  • (\w+) \(", re.MULTILINE)


MODEL = "demo-stand-in"


def stand_in_app(plans: Mapping[str, Mapping[str, Any]],
                 on_answer: Callable[[str, int], None] | None = None) -> QuartTrio:
    """`plans`: the answer for each mission title; an unknown mission gets a plan without steps.
    `on_answer(title, steps)` is told of every answer. `GET /v1/models` names the one model."""
    app = QuartTrio("mana-ai-demo-llm")

    @app.get("/v1/models")
    async def models() -> Any:
        return jsonify({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "mana-ai"}]})

    @app.post("/v1/chat/completions")
    async def complete() -> Any:
        body = await request.get_json()
        system, user = body["messages"][0]["content"], body["messages"][1]["content"]
        named = _TITLE.search(user)
        title = named[1] if named else ""
        offered = set(_OFFERED.findall(system))
        plan = plans.get(title, {"summary": f"Nothing to propose for {title!r}.", "steps": []})
        answer = {"summary": plan["summary"], "steps": [s for s in plan["steps"] if s["toolName"] in offered]}
        content = "```json\n" + json.dumps(answer, ensure_ascii=False, indent=2) + "\n```"
        if on_answer is not None:
            on_answer(title, len(answer["steps"]))
        return jsonify({"id": "demo", "object": "chat.completion", "model": MODEL,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": len(system + user) // 4, "completion_tokens": len(content) // 4}})

    return app
