"""A stand-in for mana-llm: plans one step with the first tool the prompt offers."""

from __future__ import annotations

import json
import re
from typing import Any

from quart import jsonify, request
from quart_trio import QuartTrio

_TITLE = re.compile(r"^# Mission: (.*)$", re.MULTILINE)
_FIRST_TOOL = re.compile(r"^  • (\w+) \(", re.MULTILINE)
_PARAMS = {"create_task": "title", "complete_task": "taskId", "complete_tasks_by_title": "titleSubstring", "create_note": "title", "research_news": "query", "create_contact": "firstName",
           "save_news_article": "url", "create_journal_entry": "content", "create_event": "title"}


def stand_in_app() -> QuartTrio:
    app = QuartTrio("mana-ai-demo-llm")

    @app.post("/v1/chat/completions")
    async def complete() -> Any:
        body = await request.get_json()
        system, user = body["messages"][0]["content"], body["messages"][1]["content"]
        title = (_TITLE.search(user) or [None, "Mission"])[1]
        tool = (_FIRST_TOOL.search(system) or [None, None])[1]
        steps = [] if tool is None else [{
            "summary": f"{tool} für „{title}“", "toolName": tool,
            "params": {_PARAMS[tool]: f"Nächster Schritt: {title}"} if tool in _PARAMS else {},
            "rationale": "Demo: der erste erlaubte Schritt."}]
        content = "```json\n" + json.dumps({"summary": f"Demo-Plan für {title}", "steps": steps},
                                           ensure_ascii=False) + "\n```"
        return jsonify({"id": "demo", "object": "chat.completion", "model": "demo-stand-in",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": len(system + user) // 4, "completion_tokens": 60}})

    return app
