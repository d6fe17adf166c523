"""A stand-in mana-llm: a real HTTP server on 127.0.0.1 (Quart-Trio on hypercorn, port 0).

    async with running_fake_llm(completion("hi"), Reply(status=500)) as fake:
        ...  # point an LlmClient at fake.url; inspect fake.requests / fake.headers afterwards

Replies are scripted (served in order, the last one repeats) or decided per request by
``fake.responder``. With nothing scripted the answer is ``plan_reply([])``. Only
``POST /v1/chat/completions`` exists; any other path is a 404.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
from quart import Response, request
from quart_trio import QuartTrio

from loopback import serving

__all__ = ["FakeLlm", "Reply", "call", "completion", "per_round", "plan_reply", "running_fake_llm", "tool_turn"]

PATH = "/v1/chat/completions"


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list → JSON; str/bytes → sent as is; None → empty
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # trio.sleep before answering
    hang: bool = False  # never answer (cancelled when the client goes away or the server stops)


def completion(content: Any, *, prompt_tokens: int = 11, completion_tokens: int = 7,
               model: str = "gpt-4o-mini", finish_reason: str = "stop") -> Reply:
    """A 200 in OpenAI's chat.completion shape (as mana-llm answers); ``finish_reason="length"``
    is an answer cut off at the request's ``max_tokens``."""
    return Reply(body={
        "id": "chatcmpl-0123456789ab",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    })


def plan_reply(steps: list[dict[str, Any]], summary: str = "Plan", **kw: Any) -> Reply:
    """A completion whose content is a fenced JSON plan, as the planner prompt asks for."""
    content = "```json\n" + json.dumps({"summary": summary, "steps": steps}) + "\n```"
    return completion(content, **kw)


def call(name: str, arguments: Any = None, *, call_id: str | None = None) -> dict[str, Any]:
    """One OpenAI tool call; ``arguments`` dicts are JSON-encoded, strings are sent as they are."""
    args = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
    return {"id": call_id or f"call_{name}", "type": "function", "function": {"name": name, "arguments": args}}


def tool_turn(*calls: dict[str, Any], content: str | None = None, prompt_tokens: int = 11,
              completion_tokens: int = 7, model: str = "gpt-4o-mini", finish_reason: str | None = None) -> Reply:
    """An assistant turn with ``tool_calls`` (none: a final turn whose text is ``content``);
    ``finish_reason`` defaults to ``tool_calls`` or ``stop`` as OpenAI sends them."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = list(calls)
    return Reply(body={
        "id": "chatcmpl-0123456789ab", "object": "chat.completion", "created": 1_700_000_000, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason or ("tool_calls" if calls else "stop")}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    })


def per_round(*turns: Reply) -> Callable[[dict[str, Any]], Reply]:
    """A responder for the tool-calling planner: round n (one more than the assistant turns in
    the request's history) gets ``turns[n-1]``; the last one repeats. Per request, so missions
    planned at the same time each get their own script."""
    def respond(body: dict[str, Any]) -> Reply:
        messages = body.get("messages") or []
        done = sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "assistant")
        return turns[min(done, len(turns) - 1)]
    return respond


class FakeLlm:
    def __init__(self) -> None:
        self.url = ""
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.responder: Callable[[dict[str, Any]], Reply] | None = None
        self.gate: trio.Event | None = None  # when set: every answer waits for it (answers go out together)
        self._script: list[Reply] = []
        self.app = self._build_app()

    def script(self, *replies: Reply) -> None:
        """Serve these in order; the last one repeats. Replaces any earlier script."""
        self._script = list(replies)

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        if self.responder is not None:
            return self.responder(body)
        if not self._script:
            return plan_reply([])
        return self._script.pop(0) if len(self._script) > 1 else self._script[0]

    def _build_app(self) -> QuartTrio:
        app = QuartTrio("fake_llm")

        @app.post(PATH)
        async def chat_completions() -> Response:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:                                   # handlers die on client disconnect
                raw = await request.get_data()
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    body = {}
                self.requests.append(body)
                self.headers.append({k.lower(): v for k, v in request.headers.items()})
                reply = self._next_reply(body)
                if self.gate is not None:
                    await self.gate.wait()
                if reply.hang:
                    await trio.sleep_forever()
                if reply.delay_s:
                    await trio.sleep(reply.delay_s)
                return _response(reply)
            finally:
                self.in_flight -= 1

        return app


def _response(reply: Reply) -> Response:
    headers = dict(reply.headers)
    if isinstance(reply.body, (dict, list)):
        data: bytes | str = json.dumps(reply.body)
        headers.setdefault("content-type", "application/json")
    elif reply.body is None:
        data = b""
    else:
        data = reply.body
    return Response(data, status=reply.status, headers=headers)


@asynccontextmanager
async def running_fake_llm(*replies: Reply) -> AsyncIterator[FakeLlm]:
    """Serve a ``FakeLlm`` until the block exits; a hanging request is cut after 0.2 s."""
    fake = FakeLlm()
    fake.script(*replies)
    async with serving(fake.app) as url:
        fake.url = url
        yield fake
