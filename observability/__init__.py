"""Metrics, logs and traces: the Prometheus families, the log line, the tracing seam, and what of a
URL may be shown."""
