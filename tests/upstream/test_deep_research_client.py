"""upstream/deep_research_client.py against loopback stand-ins of mana-research: submit and poll."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from quart import Response, jsonify
from quart_trio import QuartTrio

from loopback import serving
from planner.deep_research import DeepAnswer
from raw_http import Peer, raw_server
from upstream.deep_research_client import CallFailed, DeepResearchClient, JobState, Submitted, open_deep_research_http_client


def stand_in(poll: Any, submit: Any = None, status: int = 200) -> QuartTrio:
    app = QuartTrio("stand-in")

    @app.post("/api/v1/internal/research/async")
    async def post() -> Any:
        return (submit if isinstance(submit, Response) else jsonify(submit)), status

    @app.get("/api/v1/internal/research/async/<path:task_id>")
    async def get(task_id: str) -> Any:
        return (poll if isinstance(poll, Response) else jsonify(poll)), status

    return app


async def _poll(app: QuartTrio) -> JobState | CallFailed:
    async with serving(app) as url, open_deep_research_http_client() as http:
        return await DeepResearchClient(http, base_url=url, service_key="k").poll("u-1", "t-1")


async def _submit(app: QuartTrio) -> Submitted | CallFailed:
    async with serving(app) as url, open_deep_research_http_client() as http:
        return await DeepResearchClient(http, base_url=url, service_key="k").submit("u-1", "q")


@pytest.mark.parametrize(("body", "expected"), [
    ({"status": "running"}, JobState("running")),
    ({"status": "completed", "result": {"answer": {"answer": "A"}}}, JobState("completed", DeepAnswer("A", ()))),
    ({"status": "completed", "result": "garbage"}, JobState("completed", None)),
    ({"status": "completed"}, JobState("completed", None)),
    ({"status": "failed", "error": "quota"}, JobState("failed")),
    ({"status": "weird"}, CallFailed("poll-bad-response")),
    (["not", "an", "object"], CallFailed("poll-bad-response")),
])
async def test_poll_answers_are_read_tolerantly(body: Any, expected: object) -> None:
    assert await _poll(stand_in(body)) == expected


async def test_poll_failures_are_values() -> None:
    assert await _poll(stand_in({"error": "nope"}, status=404)) == CallFailed("poll-404", 404)
    assert await _poll(stand_in(Response("{not json", content_type="application/json"))) == CallFailed(
        "poll-bad-response", None, "JSONDecodeError")
    async with open_deep_research_http_client() as http:
        async with serving(stand_in({})) as url:
            pass
        failed = await DeepResearchClient(http, base_url=url, service_key="k").poll("u", "t")
    assert isinstance(failed, CallFailed) and failed.reason == "poll-unreachable"


async def test_submit_answers() -> None:
    assert await _submit(stand_in({}, {"taskId": "t-1", "status": "queued", "providerId": "gemini-deep-research-max"})
                         ) == Submitted("t-1", "gemini-deep-research-max")
    # an odd providerId never becomes a metric label
    assert await _submit(stand_in({}, {"taskId": "t-1", "providerId": "Spaß {x}"})) == Submitted(
        "t-1", "gemini-deep-research-max")
    assert await _submit(stand_in({}, {"status": "queued"})) == CallFailed("submit-bad-response")
    assert await _submit(stand_in({}, {"error": "provider key missing"}, status=400)) == CallFailed("submit-400", 400)


async def test_a_submit_the_server_read_and_reset_is_not_sent_again() -> None:
    """A poll leaves a keep-alive connection; the submit POST goes out on it, mana-research
    reads it to the end and resets (RST). The job may have started: it is not sent again."""
    async def poll_then_reset(peer: Peer) -> None:
        await peer.read_request()
        await peer.respond(body=json.dumps({"status": "running"}).encode())
        await peer.read_request()
        peer.reset()

    with trio.fail_after(10):
        async with raw_server(poll_then_reset) as server, open_deep_research_http_client() as http:
            deep = DeepResearchClient(http, base_url=server.url, service_key="k")
            assert await deep.poll("u-1", "t-1") == JobState("running")
            failed = await deep.submit("u-1", "q")
    assert isinstance(failed, CallFailed) and failed.reason == "submit-unreachable"
    assert server.accepted == 1 and server.requests == 2
