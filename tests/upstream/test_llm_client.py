"""upstream/llm.py against a real fake mana-llm on loopback (tests/fake_llm.py)."""

from __future__ import annotations

import dataclasses
import gzip
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import httpx
import pytest
import trio

from fake_llm import FakeLlm, Reply, call, completion, plan_reply, running_fake_llm, tool_turn
from planner.chat import AssistantTurn, RawToolCall
from planner.parse import ParseFailure, parse_planner_response
from upstream.errors import LlmBadResponse, LlmClosed, LlmError, LlmHttpError, LlmTimeout, LlmUnavailable
from upstream.fair_slots import FairSlots
from upstream.h11_transport import H11Client
from upstream.llm import Completion, LlmClient, backoff_s, open_llm_http_client, retry_after_s

API_KEY = "service-key"
MODEL = "gpt-4o-mini"


@dataclass
class Seen:
    """What the client reported through its callbacks."""

    retries: list[str] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)


@pytest.fixture
async def http() -> AsyncIterator[H11Client]:
    async with open_llm_http_client(10) as client:
        yield client


def make_client(http: H11Client, url: str, seen: Seen | None = None, **overrides: Any) -> LlmClient:
    seen = seen if seen is not None else Seen()
    options: dict[str, Any] = {
        "api_key": API_KEY, "model": MODEL, "timeout_s": 5.0, "retries": 2,
        "limiter": FairSlots(4), "observe_duration": seen.durations.append,
        "on_retry": seen.retries.append, "backoff_base_s": 0.01, "backoff_max_s": 0.05,
    }
    return LlmClient(http, base_url=url, **(options | overrides))


def with_delay(reply: Reply, delay_s: float) -> Reply:
    return dataclasses.replace(reply, delay_s=delay_s)


def closed_port() -> int:
    """A loopback port nobody listens on (bound by the OS, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- the request ----------------------------------------------------------------------------


async def test_request_is_the_reference_request(http: H11Client) -> None:
    with trio.fail_after(10):
        async with running_fake_llm() as fake:
            await make_client(http, fake.url + "/").complete("You plan.", "# Mission: Ä")
        assert fake.requests == [{
            "model": MODEL, "temperature": 0.3,
            "messages": [{"role": "system", "content": "You plan."},
                         {"role": "user", "content": "# Mission: Ä"}],
        }]
        body = fake.requests[0]
        assert list(body) == ["model", "temperature", "messages"]   # no max_tokens, no stream
        assert [list(m) for m in body["messages"]] == [["role", "content"], ["role", "content"]]
        assert fake.headers[0]["content-type"] == "application/json"
        assert fake.headers[0]["authorization"] == f"Bearer {API_KEY}"
        assert fake.headers[0]["x-api-key"] == API_KEY  # what mana-llm checks when its own key is set


async def test_max_tokens_is_sent_only_when_set_in_both_requests(http: H11Client) -> None:
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    with trio.fail_after(10):
        async with running_fake_llm() as fake:
            await make_client(http, fake.url, max_tokens=512).complete("You plan.", "# Mission")
            fake.script(tool_turn(content="fertig"))
            await make_client(http, fake.url, max_tokens=512).chat_with_tools(messages, [TOOL])
            await make_client(http, fake.url).chat_with_tools(messages, [TOOL])
    assert fake.requests[0] == {"model": MODEL, "temperature": 0.3,
                                "messages": [{"role": "system", "content": "You plan."},
                                             {"role": "user", "content": "# Mission"}],
                                "max_tokens": 512}
    assert fake.requests[1] == {"model": MODEL, "temperature": 0.3, "messages": messages, "tools": [TOOL],
                                "tool_choice": "auto", "max_tokens": 512}
    assert "max_tokens" not in fake.requests[2]


@pytest.mark.parametrize("max_tokens", [0, -1])
async def test_max_tokens_must_be_positive(http: H11Client, max_tokens: int) -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        make_client(http, "http://127.0.0.1:9", max_tokens=max_tokens)


async def test_without_a_key_no_credential_is_sent(http: H11Client) -> None:
    with trio.fail_after(10):
        async with running_fake_llm() as fake:
            await make_client(http, fake.url, api_key=None).complete("s", "u")
    assert "authorization" not in fake.headers[0] and "x-api-key" not in fake.headers[0]


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
async def test_a_base_url_with_or_without_v1_reaches_the_endpoint(http: H11Client, suffix: str) -> None:
    with trio.fail_after(10):
        async with running_fake_llm() as fake:
            await make_client(http, fake.url + suffix).complete("s", "u")
    assert len(fake.requests) == 1


async def test_errors_never_show_url_credentials_or_query(http: H11Client) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connects are refused
    client = make_client(http, f"http://user:s3cret@127.0.0.1:{port}/?token=t0ken", retries=0)
    with pytest.raises(LlmUnavailable) as caught:
        await client.complete("s", "u")
    assert "s3cret" not in str(caught.value) and "t0ken" not in str(caught.value)
    assert "user@" not in str(caught.value)


async def test_health_follows_the_last_calls(http: H11Client) -> None:
    async with running_fake_llm(Reply(status=500, body="a body that may echo user text")) as fake:
        client = make_client(http, fake.url, retries=0)
        assert client.health().ok and client.health().last_success_at is None
        for expected in (1, 2):
            with pytest.raises(LlmHttpError):
                await client.complete("s", "u")
            health = client.health()
            assert not health.ok and health.consecutive_failures == expected
            assert health.last_error == "mana-llm 500"  # the status, never the body
        fake.script(completion("ok"))
        await client.complete("s", "u")
        health = client.health()
        assert health.ok and health.consecutive_failures == 0 and health.last_error is None
        assert health.last_success_at is not None


async def test_a_lone_surrogate_is_sent_escaped(http: H11Client) -> None:
    with trio.fail_after(10):
        async with running_fake_llm() as fake:
            await make_client(http, fake.url).complete("s", "broken \ud800 text")
    assert fake.requests[0]["messages"][1]["content"] == "broken \ud800 text"


async def test_the_path_is_v1_chat_completions(http: H11Client) -> None:
    with trio.fail_after(10):
        async with running_fake_llm() as fake:
            with pytest.raises(LlmHttpError) as caught:            # the fake serves only that path
                await make_client(http, fake.url + "/prefix").complete("s", "u")
        assert caught.value.status == 404 and fake.requests == []


# --- the answer -----------------------------------------------------------------------------


async def test_content_usage_and_model_are_read(http: H11Client) -> None:
    seen = Seen()
    with trio.fail_after(10):
        async with running_fake_llm(completion("hello", prompt_tokens=5, completion_tokens=3,
                                               model="ollama/gemma3:4b")) as fake:
            result = await make_client(http, fake.url, seen).complete("s", "u")
    assert result == Completion("hello", 5, 3, "ollama/gemma3:4b", attempts=1)
    assert len(seen.durations) == 1 and seen.retries == []


@pytest.mark.parametrize("finish", ["stop", "length", None])
async def test_the_finish_reason_is_read(http: H11Client, finish: str | None) -> None:
    reply = completion("abc")
    reply.body["choices"][0]["finish_reason"] = finish
    with trio.fail_after(10):
        async with running_fake_llm(reply) as fake:
            result = await make_client(http, fake.url).complete("s", "u")
    assert result.finish_reason == (finish or "stop")  # absent: a complete answer, as before


async def test_a_plan_reply_round_trips_through_the_parser(http: H11Client) -> None:
    with trio.fail_after(10):
        async with running_fake_llm(plan_reply([], summary="Nothing to do")) as fake:
            result = await make_client(http, fake.url).complete("s", "u")
    assert result.content.startswith("```json\n") and '"summary": "Nothing to do"' in result.content


async def test_bad_usage_counts_as_zero_and_model_falls_back(http: H11Client) -> None:
    body = {"model": 42, "choices": [{"message": {"content": "x"}}],
            "usage": {"prompt_tokens": -1, "completion_tokens": True}}
    with trio.fail_after(10):
        async with running_fake_llm(Reply(body=body)) as fake:
            result = await make_client(http, fake.url).complete("s", "u")
    assert result == Completion("x", 0, 0, MODEL, attempts=1)


@pytest.mark.parametrize("body", [
    completion(None).body,                                      # content null
    {"choices": [{"index": 0, "message": {"role": "assistant"}}]},  # content missing
    {"choices": [{"index": 0}]},                                # message missing
])
async def test_missing_content_is_empty_like_the_reference(http: H11Client, body: Any) -> None:
    with trio.fail_after(10):
        async with running_fake_llm(Reply(body=body)) as fake:
            result = await make_client(http, fake.url).complete("s", "u")
    assert result.content == ""
    parsed = parse_planner_response(result.content, {"create_task"})
    assert isinstance(parsed, ParseFailure) and parsed.reason == "no JSON block found"


@pytest.mark.parametrize(("reply", "message"), [
    (Reply(body="not json"), "mana-llm returned invalid JSON"),
    (Reply(body=b"\xff\xfe\x00garbage"), "mana-llm returned invalid JSON"),
    (Reply(body="[" * 100_000), "mana-llm returned invalid JSON"),   # too deep for json.loads
    (Reply(), "mana-llm returned invalid JSON"),                      # empty body
    (Reply(body={"id": "x"}), "mana-llm response has no choices"),
    (Reply(body=["choices"]), "mana-llm response has no choices"),
    (Reply(body={"choices": []}), "mana-llm response has no choices"),
    (Reply(body={"choices": {"0": {}}}), "mana-llm response has no choices"),
    (completion(["a", "list"]), "mana-llm content is not a string"),
    (completion({"text": "x"}), "mana-llm content is not a string"),
    (Reply(body=b"x" * 200_001), "mana-llm response larger than 200000 bytes"),
])
async def test_unusable_bodies_are_bad_responses(http: H11Client, reply: Reply, message: str) -> None:
    seen = Seen()
    with trio.fail_after(10):
        async with running_fake_llm(reply) as fake:
            with pytest.raises(LlmBadResponse) as caught:
                await make_client(http, fake.url, seen, max_response_bytes=200_000).complete("s", "u")
    assert str(caught.value) == message
    assert len(fake.requests) == 1 and seen.retries == []             # never retried


async def test_the_size_cap_is_inclusive(http: H11Client) -> None:
    body = json.dumps(completion("ok").body).encode()
    with trio.fail_after(10):
        async with running_fake_llm(Reply(body=body)) as fake:
            result = await make_client(http, fake.url, max_response_bytes=len(body)).complete("s", "u")
            assert result.content == "ok"
            with pytest.raises(LlmBadResponse, match="larger than"):
                await make_client(http, fake.url, max_response_bytes=len(body) - 1).complete("s", "u")


async def test_the_cap_applies_to_the_decoded_stream(http: H11Client) -> None:
    """A small gzip body (small Content-Length) that inflates past the cap is cut while streaming."""
    inflated = json.dumps(completion("y" * 50_000).body).encode()
    reply = Reply(body=gzip.compress(inflated), headers={"content-encoding": "gzip"})
    assert len(reply.body) < 10_000
    with trio.fail_after(10):
        async with running_fake_llm(reply) as fake:
            with pytest.raises(LlmBadResponse) as caught:
                await make_client(http, fake.url, max_response_bytes=10_000).complete("s", "u")
            assert str(caught.value) == "mana-llm response larger than 10000 bytes"
            result = await make_client(http, fake.url, max_response_bytes=len(inflated)).complete("s", "u")
            assert result.content == "y" * 50_000


# --- HTTP errors and retries ----------------------------------------------------------------


async def test_500_then_200_is_retried(http: H11Client) -> None:
    seen = Seen()
    with trio.fail_after(10):
        async with running_fake_llm(Reply(status=500, body={"detail": "boom"}), completion("ok")) as fake:
            result = await make_client(http, fake.url, seen).complete("s", "u")
    assert result.content == "ok" and result.attempts == 2
    assert seen.retries == ["5xx"] and len(seen.durations) == 2
    assert len(fake.requests) == 2 and fake.requests[0] == fake.requests[1]


async def test_5xx_until_retries_run_out(http: H11Client) -> None:
    seen = Seen()
    with trio.fail_after(10):
        async with running_fake_llm(Reply(status=502, body="bad gateway")) as fake:
            with pytest.raises(LlmHttpError) as caught:
                await make_client(http, fake.url, seen, retries=2).complete("s", "u")
    assert str(caught.value) == "mana-llm 502: bad gateway"
    assert seen.retries == ["5xx", "5xx"] and len(seen.durations) == 3 and len(fake.requests) == 3


async def test_429_retry_after_zero_is_honoured(http: H11Client) -> None:
    """The computed backoff would be 100 s; Retry-After: 0 makes it immediate."""
    seen = Seen()
    with trio.fail_after(5):
        async with running_fake_llm(Reply(status=429, headers={"Retry-After": "0"}), completion("ok")) as fake:
            client = make_client(http, fake.url, seen, backoff_base_s=100.0, backoff_max_s=100.0,
                                 random=lambda: 1.0)
            result = await client.complete("s", "u")
    assert result.attempts == 2 and seen.retries == ["429"]


async def test_retry_after_as_a_past_http_date_is_immediate(http: H11Client) -> None:
    seen = Seen()
    with trio.fail_after(5):
        async with running_fake_llm(Reply(status=503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
                                    completion("ok")) as fake:
            client = make_client(http, fake.url, seen, backoff_base_s=100.0, backoff_max_s=100.0,
                                 random=lambda: 1.0)
            assert (await client.complete("s", "u")).attempts == 2
    assert seen.retries == ["5xx"]


async def test_retry_after_too_long_is_not_waited_for(http: H11Client) -> None:
    seen = Seen()
    with trio.fail_after(5):
        async with running_fake_llm(Reply(status=429, body="slow down", headers={"Retry-After": "31"}),
                                    completion("ok")) as fake:
            with pytest.raises(LlmHttpError) as caught:
                await make_client(http, fake.url, seen, backoff_max_s=10.0).complete("s", "u")
    assert str(caught.value) == "mana-llm 429: slow down" and caught.value.status == 429
    assert seen.retries == [] and len(fake.requests) == 1


async def test_400_is_not_retried_and_keeps_the_reference_message(http: H11Client) -> None:
    seen = Seen()
    detail = {"detail": "Provider 'x' not available. Available providers: ['ollama']"}
    with trio.fail_after(10):
        async with running_fake_llm(Reply(status=400, body=detail), completion("ok")) as fake:
            with pytest.raises(LlmHttpError) as caught:
                await make_client(http, fake.url, seen).complete("s", "u")
    assert str(caught.value) == f"mana-llm 400: {json.dumps(detail)}"
    assert caught.value.status == 400 and seen.retries == [] and len(fake.requests) == 1


async def test_error_text_is_truncated_to_500_characters(http: H11Client) -> None:
    with trio.fail_after(10):
        async with running_fake_llm(Reply(status=503, body="é" * 100_000)) as fake:
            with pytest.raises(LlmHttpError) as caught:
                await make_client(http, fake.url, retries=0).complete("s", "u")
    assert str(caught.value) == "mana-llm 503: " + "é" * 500 and caught.value.body == "é" * 500


async def test_the_limiter_is_free_during_backoff(http: H11Client) -> None:
    limiter = FairSlots(1)
    borrowed: list[int] = []
    with trio.fail_after(10):
        async with running_fake_llm(Reply(status=500), completion("ok")) as fake:
            client = make_client(http, fake.url, limiter=limiter,
                                 on_retry=lambda reason: borrowed.append(limiter.borrowed_tokens))
            assert (await client.complete("s", "u")).attempts == 2
    assert borrowed == [0]


# --- transport failures and timeouts --------------------------------------------------------


async def test_a_closed_port_is_retried_then_unavailable(http: H11Client) -> None:
    seen = Seen()
    port = closed_port()
    with trio.fail_after(10):
        with pytest.raises(LlmUnavailable) as caught:
            await make_client(http, f"http://127.0.0.1:{port}", seen, retries=2).complete("s", "u")
    assert str(caught.value).startswith(f"mana-llm unreachable at http://127.0.0.1:{port}/v1/chat/completions: ")
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert seen.retries == ["connect", "connect"] and len(seen.durations) == 3


async def test_a_hanging_server_times_out_once_and_frees_the_limiter(http: H11Client) -> None:
    seen = Seen()
    limiter = FairSlots(1)
    with trio.fail_after(10):
        async with running_fake_llm(Reply(hang=True)) as fake:
            started = trio.current_time()
            with pytest.raises(LlmTimeout) as caught:
                await make_client(http, fake.url, seen, timeout_s=0.3, limiter=limiter).complete("s", "u")
            elapsed = trio.current_time() - started
    assert str(caught.value) == "mana-llm timed out after 0.3s"
    assert 0.3 <= elapsed < 1.5
    assert seen.retries == [] and len(seen.durations) == 1 and len(fake.requests) == 1  # not retried
    assert limiter.borrowed_tokens == 0


async def test_a_slow_body_counts_against_the_same_budget(http: H11Client) -> None:
    """fail_after bounds the whole attempt, not each httpx phase."""
    with trio.fail_after(10):
        async with running_fake_llm(with_delay(completion("late"), 0.5)) as fake:
            with pytest.raises(LlmTimeout):
                await make_client(http, fake.url, timeout_s=0.2).complete("s", "u")


# --- concurrency and cancellation -----------------------------------------------------------


async def test_the_limiter_bounds_requests_in_flight(http: H11Client) -> None:
    limiter = FairSlots(3)
    results: list[Completion] = []
    with trio.fail_after(10):
        async with running_fake_llm(with_delay(completion("ok"), 0.1)) as fake:
            client = make_client(http, fake.url, limiter=limiter)

            async def call() -> None:
                results.append(await client.complete("s", "u"))

            async with trio.open_nursery() as nursery:
                for _ in range(10):
                    nursery.start_soon(call)
    assert len(results) == 10 and all(r.content == "ok" for r in results)
    assert fake.max_in_flight == 3 and fake.in_flight == 0
    assert limiter.borrowed_tokens == 0


async def test_cancellation_in_flight_propagates_and_frees_the_limiter(http: H11Client) -> None:
    seen = Seen()
    limiter = FairSlots(1)
    arrived = trio.Event()
    outcome: list[str] = []

    def hang_and_tell(body: dict[str, Any]) -> Reply:
        arrived.set()
        return Reply(hang=True)

    with trio.fail_after(10):
        async with running_fake_llm() as fake:
            fake.responder = hang_and_tell
            client = make_client(http, fake.url, seen, limiter=limiter)

            async def call() -> None:
                try:
                    await client.complete("s", "u")
                except trio.Cancelled:
                    outcome.append("cancelled")
                    raise
                outcome.append("returned")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call)
                await arrived.wait()
                assert limiter.borrowed_tokens == 1
                nursery.cancel_scope.cancel()
            assert outcome == ["cancelled"] and limiter.borrowed_tokens == 0
            assert len(seen.durations) == 1
            fake.responder = None                                 # the client is still usable
            assert (await client.complete("s", "u")).attempts == 1


async def test_close_ends_waiting_calls_and_starts_no_request(http: H11Client) -> None:
    async with running_fake_llm(dataclasses.replace(completion("ok"), delay_s=0.3)) as fake:
        client = make_client(http, fake.url, limiter=FairSlots(1))
        results: list[object] = []

        async def call() -> None:
            try:
                results.append(await client.complete("s", "u"))
            except LlmClosed as exc:
                results.append(exc)

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(call)
            with trio.fail_after(5):
                while fake.in_flight == 0:
                    await trio.sleep(0.01)
            client.close()  # shutdown: the one in flight goes on, the two waiting end at once
        assert sum(isinstance(r, Completion) for r in results) == 1
        assert sum(isinstance(r, LlmClosed) for r in results) == 2
        with pytest.raises(LlmClosed):
            await client.complete("s", "u")
        assert len(fake.requests) == 1


async def test_the_fake_counts_concurrent_requests(http: H11Client) -> None:
    """The fake's own bookkeeping, which other suites rely on."""
    fake: FakeLlm
    with trio.fail_after(10):
        async with running_fake_llm(with_delay(completion("a"), 0.1)) as fake:
            client = make_client(http, fake.url, limiter=FairSlots(5))
            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(client.complete, "s", "u")
            fake.script(completion("one"), completion("two"))
            contents = [(await client.complete("s", "u")).content for _ in range(3)]
    assert fake.max_in_flight == 5 and fake.in_flight == 0 and len(fake.requests) == 8
    assert contents == ["one", "two", "two"]                     # the last reply repeats


# --- pure parts -----------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), ("0", 0.0), (" 120 ", 120.0), ("soon", None), ("-1", None), ("1.5", None), ("", None),
    ("Wed, 21 Oct 2015 07:28:05 GMT", 5.0),
    ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),                      # in the past
])
def test_retry_after_is_delta_seconds_or_http_date(value: str | None, expected: float | None) -> None:
    now = 1445412480.0                                           # Wed, 21 Oct 2015 07:28:00 GMT
    assert formatdate(now, usegmt=True) == "Wed, 21 Oct 2015 07:28:00 GMT"
    assert retry_after_s(value, now) == expected


def test_backoff_is_exponential_capped_and_jittered() -> None:
    assert [backoff_s(n, base_s=0.5, max_s=10.0, jitter=1.0) for n in range(6)] == [0.5, 1, 2, 4, 8, 10]
    assert backoff_s(3, base_s=0.5, max_s=10.0, jitter=0.25) == 1.0
    assert backoff_s(10_000, base_s=0.5, max_s=10.0, jitter=0.5) == 5.0   # no overflow


def test_errors_have_docstring_defaults_and_one_base() -> None:
    assert str(LlmError()) == "mana-llm gave no usable answer."
    assert str(LlmTimeout()) == "A mana-llm attempt did not finish within its time budget."
    for error in (LlmUnavailable, LlmHttpError, LlmTimeout, LlmBadResponse):
        assert issubclass(error, LlmError) and not issubclass(error, trio.TooSlowError)


def test_the_http_client_is_bounded() -> None:
    http = open_llm_http_client(3)
    assert http.timeout.connect == 5.0 and http.timeout.read is not None
    with pytest.raises(ValueError):
        open_llm_http_client(0)


# --- the tool-calling request ---------------------------------------------------------------

TOOL = {"type": "function", "function": {"name": "undo_drink", "description": "d",
                                         "parameters": {"type": "object", "properties": {}, "required": []}}}


async def test_a_tools_request_carries_messages_tools_and_auto_choice(http: H11Client) -> None:
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    with trio.fail_after(10):
        async with running_fake_llm(tool_turn(call("undo_drink", {}, call_id="c1"), content="hm")) as fake:
            turn = await make_client(http, fake.url).chat_with_tools(messages, [TOOL])
    assert fake.requests == [{"model": MODEL, "temperature": 0.3, "messages": messages, "tools": [TOOL],
                              "tool_choice": "auto"}]
    assert turn == AssistantTurn("hm", (RawToolCall("c1", "undo_drink", "{}"),), "tool_calls", 11, 7, MODEL, 1)


async def test_tool_calls_are_read_leniently_for_the_validator(http: H11Client) -> None:
    calls = [{"function": {"name": "a", "arguments": {"x": 1}}},          # no id, object arguments
             {"id": "c2", "function": {"arguments": 5}},                  # no name, bad arguments
             "junk"]
    reply = Reply(body={"choices": [{"message": {"content": None, "tool_calls": calls}}]})
    with trio.fail_after(10):
        async with running_fake_llm(reply) as fake:
            turn = await make_client(http, fake.url).chat_with_tools([], [])
    assert turn.content == "" and turn.finish_reason == "stop" and turn.model == MODEL
    assert turn.tool_calls == (RawToolCall("call_0", "a", '{"x": 1}'), RawToolCall("c2", "", ""),
                               RawToolCall("call_2", "", ""))


async def test_the_tools_request_shares_retries_and_health(http: H11Client) -> None:
    seen = Seen()
    with trio.fail_after(10):
        async with running_fake_llm(Reply(status=503), tool_turn(content="fertig")) as fake:
            client = make_client(http, fake.url, seen)
            turn = await client.chat_with_tools([], [])
            assert turn.attempts == 2 and seen.retries == ["5xx"] and client.health().ok
            fake.script(Reply(body={"choices": []}))
            with pytest.raises(LlmBadResponse):
                await client.chat_with_tools([], [])
            assert client.health().consecutive_failures == 1
            client.close()
            with pytest.raises(LlmClosed):
                await client.chat_with_tools([], [])


# --- structured output and reasoning output ---------------------------------------------------

PLAN_TEXT = json.dumps({"summary": "real", "steps": [{"toolName": "create_task", "params": {"title": "R"},
                                                       "rationale": "r"}]})
DRAFT_TEXT = json.dumps({"summary": "draft", "steps": [{"toolName": "create_task", "params": {"title": "D"},
                                                        "rationale": "d"}]})


async def test_a_response_format_is_sent_only_when_given(http: H11Client) -> None:
    fmt = {"type": "json_object", "schema": {"type": "object"}}
    with trio.fail_after(10):
        async with running_fake_llm() as fake:
            await make_client(http, fake.url, max_tokens=64).complete("S", "U", response_format=fmt)
            await make_client(http, fake.url).complete("S", "U", response_format=None)
    assert fake.requests[0] == {"model": MODEL, "temperature": 0.3,
                                "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
                                "response_format": fmt, "max_tokens": 64}
    assert list(fake.requests[1]) == ["model", "temperature", "messages"]


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_reasoning_content_is_measured_never_taken_as_the_plan(http: H11Client, field: str) -> None:
    with_plan = completion("```json\n" + PLAN_TEXT + "\n```")
    reasoning = "Draft:\n```json\n" + DRAFT_TEXT + "\n```"
    with_plan.body["choices"][0]["message"][field] = reasoning
    only_reasoning = completion(None)
    only_reasoning.body["choices"][0]["message"][field] = DRAFT_TEXT
    with trio.fail_after(10):
        async with running_fake_llm(with_plan, only_reasoning) as fake:
            client = make_client(http, fake.url)
            answered, empty = await client.complete("s", "u"), await client.complete("s", "u")
    assert answered.reasoning_chars == len(reasoning)
    plan = parse_planner_response(answered.content, {"create_task"}, reasoning_chars=answered.reasoning_chars)
    assert not isinstance(plan, ParseFailure) and plan.summary == "real"
    assert empty.content == "" and empty.reasoning_chars == len(DRAFT_TEXT)
    failure = parse_planner_response(empty.content, {"create_task"}, reasoning_chars=empty.reasoning_chars)
    assert isinstance(failure, ParseFailure)
    assert failure.reason == "no JSON block found: only reasoning, no answer after it"


async def test_think_blocks_in_the_content_are_measured(http: H11Client) -> None:
    content = "<think>\n" + DRAFT_TEXT + "\n</think>\n\n" + PLAN_TEXT
    with trio.fail_after(10):
        async with running_fake_llm(completion(content)) as fake:
            result = await make_client(http, fake.url).complete("s", "u")
    assert result.content == content  # the parser sets the reasoning aside
    assert result.reasoning_chars == len(content) - len(PLAN_TEXT)


async def test_a_tool_turn_loses_its_think_block_and_its_reasoning_content(http: H11Client) -> None:
    with_calls = tool_turn(call("undo_drink", {}, call_id="c1"), content="<think>I call " + DRAFT_TEXT + "</think>")
    with_calls.body["choices"][0]["message"]["reasoning_content"] = "more thinking"
    final = tool_turn(content="<think>\nfertig? " + DRAFT_TEXT + "\n</think>\nFertig: ein Task.")
    unclosed = tool_turn(content="<think>\nI should call create_task with " + DRAFT_TEXT)
    with trio.fail_after(10):
        async with running_fake_llm(with_calls, final, unclosed) as fake:
            client = make_client(http, fake.url)
            first, second, third = [await client.chat_with_tools([], [TOOL]) for _ in range(3)]
    assert first.content == "" and first.tool_calls == (RawToolCall("c1", "undo_drink", "{}"),)
    assert first.reasoning_chars == len("<think>I call " + DRAFT_TEXT + "</think>") + len("more thinking")
    assert second.content == "Fertig: ein Task." and second.reasoning_chars > len(DRAFT_TEXT)
    assert third.content == "" and third.reasoning_chars > len(DRAFT_TEXT)  # the answer never came
