"""Observability: OpenTelemetry tracing (``tracing``), structlog logs (``logging``), Prometheus metrics
(``metrics``) and the shared span/attribute names (``attrs``). See docs/observability.md."""
