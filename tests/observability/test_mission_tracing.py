"""Mission and LLM spans from a real cycle: gen_ai attributes, errors, and no user content."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import asyncpg
import trio
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from fake_llm import Reply, plan_reply, running_fake_llm
from observability.metrics import Metrics
from observability.otel import OtelTracing
from otel_collector import attributes, running_collector
from planning import CREATE_TASK
from seed import insert_rows, mission
from settings import Settings
from runtime import open_runtime

PAST = datetime.now(timezone.utc) - timedelta(minutes=5)


async def test_spans_per_mission_and_llm_call_without_user_content(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m-ok", title="SECRET-TITLE-OK"), "created_at": PAST},
                      {**mission("m-bad", title="SECRET-TITLE-BAD"), "created_at": PAST})
    async with running_collector() as collector, running_fake_llm() as llm:
        llm.responder = lambda body: (Reply(status=400, body="nope")
                                      if "SECRET-TITLE-BAD" in body["messages"][1]["content"]
                                      else plan_reply([CREATE_TASK]))
        tracing = OtelTracing(collector.url, service_version="test", shutdown_timeout_s=5)
        settings = Settings(mana_llm_url=llm.url, tick_enabled=False, snapshot_lag_ms=0, retry_base_s=0,
                            instance_id="t", otlp_endpoint=collector.url)
        async with open_runtime(settings, pool, Metrics(), tracing=tracing) as runtime:
            stats = await runtime.snapshots.run_cycle()
        with trio.fail_after(10):
            await tracing.aclose()
        spans: list[Span] = [s for e in collector.exports for rs in e.resource_spans
                             for ss in rs.scope_spans for s in ss.spans]
        raw = b"".join(e.SerializeToString() for e in collector.exports)
    assert stats.plans_written_back == 1 and len(stats.errors) == 1
    missions = {attributes(s.attributes)["mana_ai.mission.id"]: s for s in spans if s.name == "mana_ai.mission"}
    calls = [s for s in spans if s.name == "chat gpt-4o-mini"]
    assert set(missions) == {"m-ok", "m-bad"} and len(calls) == 2
    ok, bad = missions["m-ok"], missions["m-bad"]
    assert attributes(ok.attributes)["mana_ai.outcome"] == "planned" and ok.status.code != Status.STATUS_CODE_ERROR
    assert bad.status.code == Status.STATUS_CODE_ERROR and attributes(bad.attributes)["mana_ai.outcome"] == "error"
    ok_call = next(c for c in calls if c.parent_span_id == ok.span_id)
    assert ok_call.kind == Span.SPAN_KIND_CLIENT
    assert {k: v for k, v in attributes(ok_call.attributes).items() if k.startswith("gen_ai.")} == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.request.temperature": 0.3, "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 11, "gen_ai.usage.output_tokens": 7}
    bad_call = next(c for c in calls if c.parent_span_id == bad.span_id)
    assert bad_call.status.code == Status.STATUS_CODE_ERROR
    assert attributes(bad_call.attributes)["error.type"] == "upstream.errors.LlmHttpError"
    assert b"SECRET-TITLE" not in raw


async def test_the_llm_span_names_the_token_limit_when_one_is_set(pool: asyncpg.Pool) -> None:
    await insert_rows(pool, {**mission("m1"), "created_at": PAST})
    async with running_collector() as collector, running_fake_llm(plan_reply([CREATE_TASK])) as llm:
        tracing = OtelTracing(collector.url, service_version="test", shutdown_timeout_s=5)
        settings = Settings(mana_llm_url=llm.url, tick_enabled=False, snapshot_lag_ms=0, retry_base_s=0,
                            instance_id="t", otlp_endpoint=collector.url, llm_max_tokens=900)
        async with open_runtime(settings, pool, Metrics(), tracing=tracing) as runtime:
            await runtime.snapshots.run_cycle()
        with trio.fail_after(10):
            await tracing.aclose()
        [call] = [s for e in collector.exports for rs in e.resource_spans for ss in rs.scope_spans
                  for s in ss.spans if s.name == "chat gpt-4o-mini"]
    assert attributes(call.attributes)["gen_ai.request.max_tokens"] == 900
