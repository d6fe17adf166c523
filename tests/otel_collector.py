"""A fake OTLP/HTTP trace collector: a real HTTP server on 127.0.0.1 that decodes exports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from quart import Response, request
from quart_trio import QuartTrio

from loopback import serving

PATH = "/v1/traces"


class FakeCollector:
    """Accepts OTLP/HTTP protobuf trace exports and keeps what it decoded."""

    def __init__(self) -> None:
        self.url = ""
        self.exports: list[ExportTraceServiceRequest] = []
        self.content_types: list[str] = []
        self.app = QuartTrio("fake_collector")
        self.app.post(PATH)(self._traces)

    async def _traces(self) -> Response:
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.get_data())
        self.exports.append(export)
        self.content_types.append(request.headers.get("content-type", ""))
        body = ExportTraceServiceResponse().SerializeToString()
        return Response(body, status=200, content_type="application/x-protobuf")

    def spans(self) -> dict[str, Span]:
        """Every span received, by name (names are unique within a test)."""
        return {
            span.name: span
            for export in self.exports
            for resource_spans in export.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        }

    def resources(self) -> list[dict[str, object]]:
        return [attributes(rs.resource.attributes) for export in self.exports for rs in export.resource_spans]


def attributes(pairs: Iterable[KeyValue]) -> dict[str, object]:
    out: dict[str, object] = {}
    for pair in pairs:
        kind = pair.value.WhichOneof("value")
        assert kind is not None
        out[pair.key] = getattr(pair.value, kind)
    return out


@asynccontextmanager
async def running_collector() -> AsyncIterator[FakeCollector]:
    collector = FakeCollector()
    async with serving(collector.app) as url:
        collector.url = url
        yield collector
