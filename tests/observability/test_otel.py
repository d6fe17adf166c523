"""OtelTracing against a real OTLP/HTTP collector stand-in on 127.0.0.1.

The exporter posts from the SDK's worker thread while the fake collector runs in the trio
thread, so nothing here calls the SDK's blocking flush/shutdown on the trio thread: spans are
flushed with `aclose()`, which runs the shutdown in a worker thread.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
import trio
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from observability.otel import CANCELLED_ATTRIBUTE, OtelTracing
from otel_collector import FakeCollector, attributes, running_collector
from observability.tracing import NoTracing
from observability.tracing_setup import open_tracing

ROOT = Path(__file__).resolve().parents[2]
EXPORT_THREAD = "OtelBatchSpanRecordProcessor"   # the BatchSpanProcessor's worker thread name


async def closed_port_url() -> str:
    """A loopback URL nothing listens on: connections are refused at once."""
    sock = trio.socket.socket()
    with sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def flushed(collector: FakeCollector, tracing: OtelTracing) -> dict[str, Span]:
    with trio.fail_after(10):
        await tracing.aclose()
    return collector.spans()


async def test_nested_spans_arrive_as_parent_and_child() -> None:
    async with running_collector() as collector:
        tracing = OtelTracing(collector.url + "/", service_version="9.8.7")   # a trailing slash is fine
        with tracing.span("mission.plan", {"mission.id": "m1", "agent.id": "a1"}) as outer:
            with tracing.span("chat gpt-4o-mini", {"gen_ai.request.model": "gpt-4o-mini"}, client=True) as inner:
                inner.set_attributes({"gen_ai.usage.input_tokens": 11, "gen_ai.usage.output_tokens": 7})
            outer.set_attributes({"mana_ai.steps": 2, "mana_ai.ratio": 0.5, "mana_ai.dry_run": False})
        spans = await flushed(collector, tracing)

    parent, child = spans["mission.plan"], spans["chat gpt-4o-mini"]
    assert parent.kind == Span.SpanKind.SPAN_KIND_INTERNAL
    assert child.kind == Span.SpanKind.SPAN_KIND_CLIENT
    assert parent.parent_span_id == b""
    assert child.parent_span_id == parent.span_id
    assert child.trace_id == parent.trace_id
    assert attributes(parent.attributes) == {
        "mission.id": "m1", "agent.id": "a1", "mana_ai.steps": 2, "mana_ai.ratio": 0.5, "mana_ai.dry_run": False,
    }
    assert attributes(child.attributes) == {
        "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 11, "gen_ai.usage.output_tokens": 7,
    }
    assert parent.status.code == child.status.code == Status.StatusCode.STATUS_CODE_UNSET
    assert collector.resources() == [{"service.name": "mana-ai", "service.version": "9.8.7"}]
    assert collector.content_types == ["application/x-protobuf"]


async def test_sibling_spans_after_a_span_are_not_its_children() -> None:
    async with running_collector() as collector:
        tracing = OtelTracing(collector.url, service_version="0")
        with tracing.span("first", {}):
            pass
        with tracing.span("second", {}):
            pass
        spans = await flushed(collector, tracing)
    assert spans["first"].parent_span_id == spans["second"].parent_span_id == b""
    assert spans["first"].trace_id != spans["second"].trace_id


async def test_child_tasks_inherit_the_current_span() -> None:
    async def child(tracing: OtelTracing) -> None:
        with tracing.span("in.task", {}, client=True):
            await trio.lowlevel.checkpoint()

    async with running_collector() as collector:
        tracing = OtelTracing(collector.url, service_version="0")
        with tracing.span("around.nursery", {}):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(child, tracing)
        spans = await flushed(collector, tracing)
    assert spans["in.task"].parent_span_id == spans["around.nursery"].span_id


async def test_fail_marks_error_with_a_bounded_message() -> None:
    async with running_collector() as collector:
        tracing = OtelTracing(collector.url, service_version="0")
        with tracing.span("short", {}) as span:
            span.fail("llm timeout")
        with tracing.span("long", {}) as span:
            span.fail("x" * 500)
        spans = await flushed(collector, tracing)
    assert spans["short"].status.code == Status.StatusCode.STATUS_CODE_ERROR
    assert spans["short"].status.message == "llm timeout"
    assert spans["long"].status.message == "x" * 200
    assert "error.type" not in attributes(spans["short"].attributes)


async def test_an_escaping_exception_marks_error_and_propagates_without_its_message() -> None:
    async with running_collector() as collector:
        tracing = OtelTracing(collector.url, service_version="0")
        with pytest.raises(ValueError, match="user's mission title"):
            with tracing.span("raises", {"mission.id": "m1"}):
                raise ValueError("user's mission title")
        with pytest.raises(KeyError):
            with tracing.span("fails.then.raises", {}) as span:
                span.fail("planner gave up")
                raise KeyError("k")
        spans = await flushed(collector, tracing)

    raised = spans["raises"]
    assert raised.status.code == Status.StatusCode.STATUS_CODE_ERROR
    assert raised.status.message == "ValueError"
    assert attributes(raised.attributes) == {"mission.id": "m1", "error.type": "builtins.ValueError"}
    assert list(raised.events) == []                         # no exception event, no stack trace
    assert b"user's mission title" not in collector.exports[0].SerializeToString()
    kept = spans["fails.then.raises"]
    assert kept.status.code == Status.StatusCode.STATUS_CODE_ERROR
    assert kept.status.message == "planner gave up"          # the explicit message wins
    assert attributes(kept.attributes) == {"error.type": "builtins.KeyError"}


async def test_cancellation_is_not_an_error() -> None:
    async with running_collector() as collector:
        tracing = OtelTracing(collector.url, service_version="0")
        with trio.CancelScope() as scope:
            with tracing.span("cancelled", {"mission.id": "m1"}):
                scope.cancel()
                await trio.lowlevel.checkpoint()
        assert scope.cancelled_caught
        with trio.move_on_after(0.01) as deadline:             # a nursery re-raises Cancelled in a group
            with tracing.span("cancelled.nursery", {}):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(trio.sleep_forever)
                    await trio.sleep_forever()
        assert deadline.cancelled_caught
        spans = await flushed(collector, tracing)

    for name in ("cancelled", "cancelled.nursery"):
        assert spans[name].status.code == Status.StatusCode.STATUS_CODE_UNSET
        assert attributes(spans[name].attributes).get(CANCELLED_ATTRIBUTE) is True
        assert "error.type" not in attributes(spans[name].attributes)


async def test_a_group_with_a_real_error_is_an_error() -> None:
    async def boom() -> None:
        raise RuntimeError("boom")

    async with running_collector() as collector:
        tracing = OtelTracing(collector.url, service_version="0")
        with pytest.RaisesGroup(RuntimeError):
            with tracing.span("group", {}):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(trio.sleep_forever)
                    nursery.start_soon(boom)
        spans = await flushed(collector, tracing)
    assert spans["group"].status.code == Status.StatusCode.STATUS_CODE_ERROR
    assert attributes(spans["group"].attributes) == {"error.type": "builtins.ExceptionGroup"}


async def test_aclose_is_bounded_when_the_collector_is_down(caplog: pytest.LogCaptureFixture) -> None:
    before = set(threading.enumerate())
    tracing = OtelTracing(await closed_port_url(), service_version="0", shutdown_timeout_s=0.5)
    exporting = [t for t in threading.enumerate() if t.name == EXPORT_THREAD and t not in before]
    assert len(exporting) == 1
    with tracing.span("lost", {}):
        pass
    started = trio.current_time()
    with trio.fail_after(5):
        await tracing.aclose()                                 # no exception, no hang
    assert trio.current_time() - started < 2
    assert "tracing.shutdown_timed_out" in caplog.messages
    # The abandoned export thread stops soon too: the exporter's shutdown ends its retry back-off.
    with trio.fail_after(5):
        await trio.to_thread.run_sync(exporting[0].join, 4.0)
    assert not exporting[0].is_alive()


async def test_aclose_is_bounded_when_cancelled() -> None:
    """aclose shields its own bounded shutdown: an outer cancel cannot cut the flush short."""
    async with running_collector() as collector:
        tracing = OtelTracing(collector.url, service_version="0")
        with tracing.span("flushed.anyway", {}):
            pass
        with trio.CancelScope() as scope:
            scope.cancel()
            with trio.fail_after(10):
                await tracing.aclose()
        spans = collector.spans()
    assert "flushed.anyway" in spans


async def test_open_tracing_picks_the_implementation() -> None:
    assert isinstance(open_tracing(None, service_version="0"), NoTracing)
    async with running_collector() as collector:
        tracing = open_tracing(collector.url, service_version="0")
        assert isinstance(tracing, OtelTracing)
        with tracing.span("via.seam", {}):
            pass
        with trio.fail_after(10):
            await tracing.aclose()
    assert "via.seam" in collector.spans()


async def test_no_tracing_spans_are_no_ops() -> None:
    tracing = NoTracing()
    with tracing.span("x", {"a": 1}, client=True) as span:
        span.set_attributes({"b": 2})
        span.fail("nothing happens")
    await tracing.aclose()


def test_the_seam_does_not_import_opentelemetry() -> None:
    code = (
        "import observability.tracing, supervisor, sys; "
        "assert not any(m.startswith('opentelemetry') for m in sys.modules), "
        "sorted(m for m in sys.modules if m.startswith('opentelemetry'))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
