"""Picks the `Tracing` at start-up: `NoTracing`, or OpenTelemetry when an endpoint is set.

A module of its own so that the seam (`observability/tracing.py`) and its OpenTelemetry side
(`observability/otel.py`, which implements the seam's protocols) never import each other, and
OpenTelemetry is imported only when an endpoint asks for it.
"""

from __future__ import annotations

from observability.tracing import NoTracing, Tracing

__all__ = ["open_tracing"]


def open_tracing(endpoint: str | None, *, service_version: str) -> Tracing:
    """`NoTracing` without an endpoint; else the OpenTelemetry exporter (imported only then)."""
    if endpoint is None:
        return NoTracing()
    from observability.otel import OtelTracing  # noqa: PLC0415 - keep OpenTelemetry out unless asked for

    return OtelTracing(endpoint, service_version=service_version)
