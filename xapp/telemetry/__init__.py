"""Observability: tracing set-up (``setup``), trace context in gRPC metadata (``propagation``), the span per
RPC (``interceptor``), structlog logs (``logging``), Prometheus metrics (``metrics``) and the shared
span/attribute names (``attrs``). See docs/observability.md."""
