"""Tracing seam: one span per mission and per LLM call, or nothing at all.

Without `OTEL_EXPORTER_OTLP_ENDPOINT` the daemon uses `NoTracing`, and no OpenTelemetry code is
imported or run. With it, `observability/otel.py` exports spans over OTLP/HTTP;
`observability/tracing_setup.py` picks one. This module holds only the seam and the no-op and
imports neither of the others. Attributes carry ids, model names and token counts only — never
mission titles or other user content.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

AttributeValue = str | int | float | bool
Attributes = Mapping[str, AttributeValue]


class Span(Protocol):
    def set_attributes(self, attributes: Attributes) -> None: ...
    def fail(self, message: str) -> None: ...


class Tracing(Protocol):
    def span(self, name: str, attributes: Attributes, *, client: bool = False) -> AbstractContextManager[Span]:
        """A span around the block, current for nested spans; `client` marks an outgoing call."""
        ...

    async def aclose(self) -> None: ...


class _NoSpan:
    def set_attributes(self, attributes: Attributes) -> None:
        pass

    def fail(self, message: str) -> None:
        pass


class NoTracing:
    """Tracing switched off: spans are free no-ops."""

    @contextmanager
    def span(self, name: str, attributes: Attributes, *, client: bool = False) -> Iterator[Span]:
        yield _NoSpan()

    async def aclose(self) -> None:
        pass
