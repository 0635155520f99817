"""Tracing set-up: the tracer provider, the OTLP exporter, and the exporter's rate-limited error lines.

``setup_tracing`` installs the process-wide tracer provider. Code everywhere else only uses the API
(``trace.get_tracer(attrs.TRACER_NAME)``), so it traces when a provider is set up and costs almost nothing
when not.

Export is OTLP over gRPC and happens only when an endpoint is configured: ``settings.otlp_endpoint``
(``ARGO_OTLP_ENDPOINT``) or the standard ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_ENDPOINT``.
Without one, spans are still created (so log lines carry trace and span ids) but go nowhere.
``OTEL_SDK_DISABLED=true`` turns the SDK off entirely; ``OTEL_TRACES_EXPORTER=none`` turns export off.

The batch processor sends spans every few seconds: call ``TracingHandle.shutdown()`` (or ``aclose()``)
on SIGTERM, before the process exits, or the last requests' spans are lost. An unreachable collector is
logged once, then at most once a minute (``ExportFailureFilter`` in :mod:`xapp.telemetry.library_output`,
on the log handler that :mod:`xapp.telemetry.logging` installs).

Propagation of the trace context in gRPC metadata is :mod:`xapp.telemetry.propagation`; the span per RPC is
:mod:`xapp.telemetry.interceptor`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

import xapp
from xapp.config import Settings
from xapp.errors import ConfigError
from xapp.telemetry import attrs

log = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "argo-xapp"

Install = Callable[[trace.TracerProvider], Callable[[], None]]
"""Makes a provider the one spans go to; returns what to call at shutdown to stop using it."""


def install_global(provider: trace.TracerProvider) -> Callable[[], None]:
    """The OpenTelemetry API's global provider: set once per process (a later set is refused by the API).

    Tracers obtained before (module-level ``trace.get_tracer``) bind to it on first use. A provider set by
    someone else (an auto-instrumentation agent) is left alone: argo-xapp's spans go there.
    """
    current = trace.get_tracer_provider()
    if isinstance(current, trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)
    else:
        log.warning("a global tracer provider is already set (%s); argo-xapp spans go there", type(current).__name__)
    return _keep


def _keep() -> None:
    """Shutdown of a global provider: nothing to undo (the stopped SDK provider exports nothing more)."""


@dataclass
class TracingHandle:
    """What ``setup_tracing`` installed; ``shutdown()`` flushes the last spans and stops the provider."""

    provider: TracerProvider | None  # None when OTEL_SDK_DISABLED
    resource: Resource
    endpoint: str | None  # where spans are exported (OTLP gRPC); None: not exported
    exporter: str  # "otlp", "console" or "none"
    _release: Callable[[], None] = _keep  # what install returned: stops sending spans to ``provider``
    _closed: bool = False

    @property
    def exporting(self) -> bool:
        return self.exporter != "none"

    @property
    def closed(self) -> bool:
        return self._closed

    def force_flush(self, timeout_s: float = 5.0) -> bool:
        """Export every ended span now; False when it did not finish within ``timeout_s``."""
        provider = self.provider
        if provider is None or self._closed:
            return True
        return _bounded(lambda: provider.force_flush(int(timeout_s * 1000)), timeout_s)

    def shutdown(self, timeout_s: float = 5.0) -> bool:
        """Flush, then stop the processors and the exporter. Idempotent. Blocks at most ``timeout_s``.

        Returns False when the spans could not be delivered in time (collector down or slow).
        """
        provider = self.provider
        if self._closed:
            return True
        self._closed = True
        if provider is None:
            return True
        self._release()

        def flush_and_stop() -> bool:
            flushed = provider.force_flush(int(timeout_s * 1000))
            provider.shutdown()
            return flushed

        # The SDK's flush and shutdown can wait far longer than asked when the collector hangs
        # (export retries, a 30 s worker join); a SIGTERM grace period is shorter than that.
        ok = _bounded(flush_and_stop, timeout_s)
        if not ok:
            log.warning("tracing: spans not delivered within %.1fs (endpoint %s)", timeout_s, self.endpoint)
        return ok

    async def aclose(self, timeout_s: float = 5.0) -> bool:
        """``shutdown`` off the event loop (the flush is a blocking network call)."""
        return await asyncio.to_thread(self.shutdown, timeout_s)


def _bounded(fn: Callable[[], bool], timeout_s: float) -> bool:
    """Run ``fn`` in a daemon thread; its result, or False when it did not return within ``timeout_s``."""
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(bool(fn())), name="otel-flush", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(result and result[0])


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def normalize_endpoint(endpoint: str) -> str:
    """``host:port`` → ``http://host:port``: a bare address means plaintext gRPC (in-cluster collectors).

    Without a scheme the OTLP exporter parses the host as the scheme and dials TLS.
    """
    endpoint = endpoint.strip()
    if "://" not in endpoint:
        endpoint = "http://" + endpoint
    parsed = urlparse(endpoint)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"otlp_endpoint: expected host:port or http(s)://host:port, got {endpoint!r}")
    return endpoint


def resolve_endpoint(settings: Settings, environ: Mapping[str, str]) -> str | None:
    """The OTLP endpoint for traces, or None when nothing asks for export."""
    if settings.otlp_endpoint:
        return normalize_endpoint(settings.otlp_endpoint)
    for key in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        if environ.get(key, "").strip():
            return normalize_endpoint(environ[key])
    return None


def build_resource(service_name: str, environ: Mapping[str, str]) -> Resource:
    """service.name/version and, inside Kubernetes, the pod and namespace (downward API env vars)."""
    values: dict[str, str] = {
        attrs.SERVICE_NAME: environ.get("OTEL_SERVICE_NAME") or service_name,
        attrs.SERVICE_VERSION: xapp.__version__,
        attrs.SERVICE_NAMESPACE: "oran-ric",
    }
    if environ.get("POD_NAME"):
        values[attrs.K8S_POD_NAME] = environ["POD_NAME"]
        values[attrs.SERVICE_INSTANCE_ID] = environ["POD_NAME"]
    if environ.get("POD_NAMESPACE"):
        values[attrs.K8S_NAMESPACE_NAME] = environ["POD_NAMESPACE"]
    if environ.get("NODE_NAME"):
        values[attrs.K8S_NODE_NAME] = environ["NODE_NAME"]
    # Resource.create adds telemetry.sdk.* and OTEL_RESOURCE_ATTRIBUTES; ours win over the latter.
    return Resource.create(values)


def setup_tracing(
    settings: Settings,
    service_name: str = DEFAULT_SERVICE_NAME,
    *,
    environ: Mapping[str, str] | None = None,
    span_processors: Iterable[SpanProcessor] = (),
    schedule_delay_ms: int | None = None,
    install: Install = install_global,
) -> TracingHandle:
    """Install the process-wide tracer provider; returns the handle to flush and shut it down.

    ``span_processors`` are added after the exporter's (tests add a SimpleSpanProcessor with an
    InMemorySpanExporter). ``schedule_delay_ms`` overrides the batch delay (default: the SDK's 5 s or
    ``OTEL_BSP_SCHEDULE_DELAY``). ``install`` makes the provider current (default: the API's global
    provider; tests and the tracing-overhead bench switch providers in one process with
    :mod:`xapp.bench.tracer_switch`). Raises ConfigError for an unusable exporter configuration.
    """
    env = os.environ if environ is None else environ
    resource = build_resource(service_name, env)
    if _truthy(env.get("OTEL_SDK_DISABLED")):
        release = install(trace.NoOpTracerProvider())  # off, even where an earlier setup switched it on
        return TracingHandle(provider=None, resource=resource, endpoint=None, exporter="none", _release=release)

    exporter_kind = (env.get("OTEL_TRACES_EXPORTER") or "otlp").strip().lower()
    if exporter_kind not in ("otlp", "console", "none"):
        raise ConfigError(f"OTEL_TRACES_EXPORTER={exporter_kind!r}: argo-xapp exports otlp, console or none")
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    if exporter_kind == "otlp" and protocol.strip().lower() != "grpc":
        raise ConfigError(
            f"OTLP protocol {protocol!r} is not supported: argo-xapp exports OTLP over gRPC "
            "(port 4317); unset OTEL_EXPORTER_OTLP_PROTOCOL or set it to grpc"
        )

    endpoint = resolve_endpoint(settings, env) if exporter_kind == "otlp" else None
    exporter: SpanExporter | None = None
    if exporter_kind == "otlp" and endpoint is not None:
        # Imported here: the gRPC exporter pulls in protobuf code that a no-export run never needs.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint)
    elif exporter_kind == "console":
        exporter = ConsoleSpanExporter()
    else:
        exporter_kind = "none"

    provider = TracerProvider(resource=resource)
    processors: list[SpanProcessor] = []
    if exporter is not None:
        kwargs: dict[str, Any] = {}
        if schedule_delay_ms is not None:
            kwargs["schedule_delay_millis"] = schedule_delay_ms
        processors.append(BatchSpanProcessor(exporter, **kwargs))
    processors.extend(span_processors)
    for processor in processors:
        provider.add_span_processor(processor)
    release = install(provider)
    log.info(
        "tracing: exporter=%s endpoint=%s service=%s",
        exporter_kind,
        endpoint,
        resource.attributes.get(attrs.SERVICE_NAME),
    )
    return TracingHandle(
        provider=provider, resource=resource, endpoint=endpoint, exporter=exporter_kind, _release=release
    )
