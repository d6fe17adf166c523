"""`OtelTracing`: the `Tracing` seam backed by the OpenTelemetry SDK, exporting OTLP/HTTP.

Imported only by `observability.tracing_setup.open_tracing` when an endpoint is configured.

* Its own `TracerProvider`, never the process-global one (no `trace.set_tracer_provider`), and no
  atexit hook: the runtime (`open_runtime`, runtime.py) owns shutdown and calls `aclose()`.
* Spans are ended in the trio thread and queued; the `BatchSpanProcessor`'s worker thread does
  the HTTP export (`requests`, blocking), so no network I/O happens on the trio thread.
* Status: `fail(message)` → ERROR with the message (≤ 200 chars). An exception escaping the block
  → ERROR, `error.type` = the exception's qualified class name; the description is the class name
  only, never `str(exc)` and no exception event with a stack trace, since messages can carry user
  content. `trio.Cancelled` (alone or a group of only Cancelled) is not a failure: the status stays
  UNSET and `mana_ai.cancelled=true` is set. The exception always propagates.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import trio
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.trace import SpanKind, Status, StatusCode

from observability.tracing import Attributes, Span

__all__ = ["CANCELLED_ATTRIBUTE", "DESCRIPTION_MAX_CHARS", "OtelTracing"]

log = logging.getLogger(__name__)

SERVICE = "mana-ai"
CANCELLED_ATTRIBUTE = "mana_ai.cancelled"
DESCRIPTION_MAX_CHARS = 200
EXPORT_TIMEOUT_S = 10


class _OtelSpan:
    """The `Span` handed to the block: attributes and an explicit failure, nothing else."""

    def __init__(self, span: trace.Span) -> None:
        self._span = span
        self.failed = False

    def set_attributes(self, attributes: Attributes) -> None:
        self._span.set_attributes(attributes)

    def fail(self, message: str) -> None:
        self.failed = True
        self._span.set_status(Status(StatusCode.ERROR, message[:DESCRIPTION_MAX_CHARS]))

    def end_with(self, exc: BaseException) -> None:
        """Record how the block was left by `exc` (which the caller re-raises)."""
        if _only_cancelled(exc):
            self._span.set_attribute(CANCELLED_ATTRIBUTE, True)   # status stays UNSET: not a failure
            return
        kind = type(exc)
        self._span.set_attribute(ERROR_TYPE, f"{kind.__module__}.{kind.__qualname__}")
        if not self.failed:                                       # keep an explicit fail() message
            self._span.set_status(Status(StatusCode.ERROR, kind.__qualname__))


def _only_cancelled(exc: BaseException) -> bool:
    if isinstance(exc, trio.Cancelled):
        return True
    if isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split(trio.Cancelled)
        return rest is None
    return False


class OtelTracing:
    """Spans exported over OTLP/HTTP to `<endpoint>/v1/traces` by a batch processor."""

    def __init__(self, endpoint: str, *, service_version: str, shutdown_timeout_s: float = 5.0) -> None:
        # The exporter takes the full signal URL; only the env-var form appends `/v1/traces` itself.
        self._exporter = OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces", timeout=EXPORT_TIMEOUT_S)
        self._provider = TracerProvider(
            sampler=ParentBased(ALWAYS_ON),          # explicit, so OTEL_TRACES_SAMPLER cannot change it
            resource=Resource({SERVICE_NAME: SERVICE, SERVICE_VERSION: service_version}),
            shutdown_on_exit=False,                  # no atexit hook: aclose() is the shutdown
        )
        self._provider.add_span_processor(BatchSpanProcessor(self._exporter))
        self._tracer = self._provider.get_tracer("mana_ai", service_version)
        self._shutdown_timeout_s = shutdown_timeout_s

    @contextmanager
    def span(self, name: str, attributes: Attributes, *, client: bool = False) -> Iterator[Span]:
        # The SDK's own exception handling is off: it would put str(exc) into the status and a
        # stack trace into an event (user content), and it only looks at `Exception`, so it
        # could neither mark a cancel nor see a `BaseExceptionGroup`. `end_with` does both.
        with self._tracer.start_as_current_span(
            name,
            kind=SpanKind.CLIENT if client else SpanKind.INTERNAL,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as otel_span:
            span = _OtelSpan(otel_span)
            try:
                yield span
            except BaseException as exc:
                span.end_with(exc)
                raise

    async def aclose(self) -> None:
        """Export what is queued and stop, within `shutdown_timeout_s`, even if cancelled.

        `TracerProvider.shutdown` blocks (it joins the export thread, whose retries can last the
        whole export timeout), so it runs in a worker thread. On timeout that thread is abandoned
        and the exporter is shut down, which ends its retry back-off so the thread finishes soon.
        """
        with trio.CancelScope(shield=True), trio.move_on_after(self._shutdown_timeout_s) as cs:
            await trio.to_thread.run_sync(self._provider.shutdown, abandon_on_cancel=True)
        if cs.cancelled_caught:
            # Non-blocking: sets the exporter's shutdown event and closes its HTTP session.
            self._exporter.shutdown()  # type: ignore[no-untyped-call]
            log.warning("tracing.shutdown_timed_out", extra={"timeout_s": self._shutdown_timeout_s})
