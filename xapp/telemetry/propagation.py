"""The W3C trace context (``traceparent``/``tracestate``, baggage) in gRPC metadata, both ways.

:func:`inject_metadata` is what a caller sends (:mod:`xapp.client`); :func:`extract_context` is what the
server's span continues (:mod:`xapp.telemetry.interceptor`). Only the OpenTelemetry API is needed here: the
client installs without the SDK.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.propagators.textmap import Getter

Metadata = Sequence[tuple[str, str | bytes]]


class _MetadataGetter(Getter[Metadata]):
    """Reads gRPC metadata (a sequence of (key, value) tuples; keys are lower-case on the wire)."""

    def get(self, carrier: Metadata, key: str) -> list[str] | None:
        key = key.lower()
        values = [v.decode("latin-1") if isinstance(v, bytes) else v for k, v in carrier if k.lower() == key]
        return values or None

    def keys(self, carrier: Metadata) -> list[str]:
        return [k for k, _ in carrier]


_GETTER = _MetadataGetter()


def inject_metadata(extra: Sequence[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """Outgoing metadata: ``extra`` plus the current OpenTelemetry context (W3C traceparent, tracestate)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [*extra, *((k.lower(), v) for k, v in carrier.items())]  # gRPC metadata keys are lower-case


def _metadata_of(source: Any) -> Metadata:
    if source is None:
        return ()
    if hasattr(source, "invocation_metadata"):  # grpc / grpc.aio ServicerContext
        return tuple(source.invocation_metadata() or ())
    if isinstance(source, Mapping):
        return tuple(source.items())
    return tuple(source)


def extract_context(source: Any) -> otel_context.Context:
    """The OpenTelemetry Context carried by the caller (W3C ``traceparent``/``tracestate``, baggage).

    ``source``: a grpc(.aio) ServicerContext, a metadata sequence of (key, value), a dict, or None.
    Returns a context to pass as ``context=`` when starting the server span; an empty one when the
    caller sent no (valid) traceparent, so the span starts a new trace.
    """
    return propagate.extract(_metadata_of(source), getter=_GETTER, context=otel_context.Context())
