"""OpenTelemetry tracing: tracer provider, OTLP export, W3C context from gRPC metadata, a span per RPC.

``setup_tracing`` installs the process-wide tracer provider. Code everywhere else only uses the API
(``trace.get_tracer("xapp")``), so it traces when a provider is set up and costs almost nothing when not.

Export is OTLP over gRPC and happens only when an endpoint is configured: ``settings.otlp_endpoint``
(``ARGO_OTLP_ENDPOINT``) or the standard ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_ENDPOINT``.
Without one, spans are still created (so log lines carry trace and span ids) but go nowhere.
``OTEL_SDK_DISABLED=true`` turns the SDK off entirely; ``OTEL_TRACES_EXPORTER=none`` turns export off.

The batch processor sends spans every few seconds: call ``TracingHandle.shutdown()`` (or ``aclose()``)
on SIGTERM, before the process exits, or the last requests' spans are lost.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

import xapp
from xapp.config import Settings
from xapp.errors import ConfigError
from xapp.telemetry import attrs

log = logging.getLogger(__name__)
# The one line per RPC (``"event": "answered"``) is written by the interceptor under this logger name.
RPC_LOGGER = "xapp.server.rpc"

DEFAULT_SERVICE_NAME = "argo-xapp"
# Health probes (kubelet, RIC) and reflection would drown the traces of real requests.
DEFAULT_UNTRACED_SERVICES: tuple[str, ...] = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)


# --------------------------------------------------------------------------------------------------
# The process-wide provider: installed once, its delegate swapped by each setup_tracing call.
#
# The OpenTelemetry API lets a process set its global provider only once, and tracers obtained before
# that (module-level ``trace.get_tracer``) bind to it on first use. A tracer that looks up the current
# delegate on each span lets tests and the overhead benchmark switch tracing on and off in one process.


class _SwitchableTracer(trace.Tracer):
    __slots__ = ("_owner", "_args", "_bound_to", "_tracer")

    def __init__(self, owner: _SwitchableTracerProvider, args: tuple[Any, ...]) -> None:
        self._owner = owner
        self._args = args
        self._bound_to: trace.TracerProvider | None = None
        self._tracer: trace.Tracer = trace.NoOpTracer()

    def _current(self) -> trace.Tracer:
        delegate = self._owner.delegate
        if delegate is not self._bound_to:
            self._tracer = delegate.get_tracer(*self._args)
            self._bound_to = delegate
        return self._tracer

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        return self._current().start_span(*args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        return self._current().start_as_current_span(*args, **kwargs)


class _SwitchableTracerProvider(trace.TracerProvider):
    def __init__(self) -> None:
        self.delegate: trace.TracerProvider = trace.NoOpTracerProvider()

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Any = None,
    ) -> trace.Tracer:
        return _SwitchableTracer(
            self, (instrumenting_module_name, instrumenting_library_version, schema_url, attributes)
        )

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the current SDK provider (generic exit hooks call this on the global provider)."""
        flush = getattr(self.delegate, "force_flush", None)
        return bool(flush(timeout_millis)) if callable(flush) else True


_GLOBAL_LOCK = threading.Lock()
_SWITCH: _SwitchableTracerProvider | None = None


def _install(provider: trace.TracerProvider) -> None:
    global _SWITCH
    with _GLOBAL_LOCK:
        if _SWITCH is None:
            current = trace.get_tracer_provider()
            if not isinstance(current, trace.ProxyTracerProvider):
                # Someone else owns the global provider (an auto-instrumentation agent): leave it be.
                log.warning(
                    "a global tracer provider is already set (%s); argo-xapp spans go there",
                    type(current).__name__,
                )
                return
            _SWITCH = _SwitchableTracerProvider()
            trace.set_tracer_provider(_SWITCH)
        _SWITCH.delegate = provider


def _uninstall(provider: trace.TracerProvider) -> None:
    with _GLOBAL_LOCK:
        if _SWITCH is not None and _SWITCH.delegate is provider:
            _SWITCH.delegate = trace.NoOpTracerProvider()


# --------------------------------------------------------------------------------------------------
# Setup


@dataclass
class TracingHandle:
    """What ``setup_tracing`` installed; ``shutdown()`` flushes the last spans and uninstalls it."""

    provider: TracerProvider | None  # None when OTEL_SDK_DISABLED
    resource: Resource
    endpoint: str | None  # where spans are exported (OTLP gRPC); None: not exported
    exporter: str  # "otlp", "console" or "none"
    _closed: bool = False

    @property
    def exporting(self) -> bool:
        return self.exporter != "none"

    def activate(self) -> None:
        """Make this handle's provider the process-wide one again (setup_tracing already did).

        For switching between configurations in one process (the overhead benchmark); a disabled
        handle switches tracing off.
        """
        if self._closed:
            raise RuntimeError("tracing handle already shut down")
        _install(self.provider if self.provider is not None else trace.NoOpTracerProvider())

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
        _uninstall(provider)

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
        "service.name": environ.get("OTEL_SERVICE_NAME") or service_name,
        "service.version": xapp.__version__,
        "service.namespace": "oran-ric",
    }
    if environ.get("POD_NAME"):
        values["k8s.pod.name"] = environ["POD_NAME"]
        values["service.instance.id"] = environ["POD_NAME"]
    if environ.get("POD_NAMESPACE"):
        values["k8s.namespace.name"] = environ["POD_NAMESPACE"]
    if environ.get("NODE_NAME"):
        values["k8s.node.name"] = environ["NODE_NAME"]
    # Resource.create adds telemetry.sdk.* and OTEL_RESOURCE_ATTRIBUTES; ours win over the latter.
    return Resource.create(values)


def setup_tracing(
    settings: Settings,
    service_name: str = DEFAULT_SERVICE_NAME,
    *,
    environ: Mapping[str, str] | None = None,
    span_processors: Iterable[SpanProcessor] = (),
    schedule_delay_ms: int | None = None,
) -> TracingHandle:
    """Install the process-wide tracer provider; returns the handle to flush and shut it down.

    ``span_processors`` are added after the exporter's (tests add a SimpleSpanProcessor with an
    InMemorySpanExporter). ``schedule_delay_ms`` overrides the batch delay (default: the SDK's 5 s or
    ``OTEL_BSP_SCHEDULE_DELAY``). Raises ConfigError for an unusable exporter configuration.
    """
    env = os.environ if environ is None else environ
    resource = build_resource(service_name, env)
    if _truthy(env.get("OTEL_SDK_DISABLED")):
        _install(trace.NoOpTracerProvider())  # off, even if an earlier setup in this process was on
        return TracingHandle(provider=None, resource=resource, endpoint=None, exporter="none")

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
    _install(provider)
    log.info(
        "tracing: exporter=%s endpoint=%s service=%s",
        exporter_kind,
        endpoint,
        resource.attributes.get("service.name"),
    )
    return TracingHandle(provider=provider, resource=resource, endpoint=endpoint, exporter=exporter_kind)


# --------------------------------------------------------------------------------------------------
# The request's outcome on the server span


def annotate_question(
    text: str, options: int = 0, *, include_text: bool = False, span: trace.Span | None = None
) -> None:
    """The request on ``span`` (default: the current, i.e. the RPC's SERVER span): the question's length and
    number of options; its text only with ``include_text`` (the setting ``trace_text``)."""
    span = span or trace.get_current_span()
    if not span.is_recording():
        return
    values: dict[str, Any] = {attrs.QUESTION_CHARS: len(text), attrs.OPTIONS: options}
    if include_text:
        values[attrs.QUESTION] = text
    span.set_attributes(values)


def annotate_answer(answer: Any, span: trace.Span | None = None, *, include_text: bool = False) -> None:
    """Put an Answer's outcome on ``span`` (default: the current span, i.e. the RPC's SERVER span inside a
    handler): strategy, path, fallback reason, deadline, elapsed, miss, steps, tokens, model.

    Called by the service with every reply, so a trace shows at its root what the reply said; the same
    outcome goes into the RPC's log line (:func:`note_rpc`). The sub-queries searched go on the span as
    their lengths, and as text only with ``include_text`` (the setting ``trace_text``).
    """
    note_rpc(
        strategy=answer.strategy,
        path=answer.path.value,
        deadline_ms=round(float(answer.deadline_ms)),
        answer_ms=round(float(answer.elapsed_ms), 1),
        fallbacks=[f"{f.component.value}:{f.cause.value}" for f in answer.fallbacks],
        model=answer.model or None,
    )
    span = span or trace.get_current_span()
    if not span.is_recording():
        return
    values: dict[str, Any] = {
        attrs.STRATEGY: answer.strategy,
        attrs.PATH: answer.path.value,
        # Rounded as the reply rounds them (to 0.1 ms), so that the trace and the reply agree.
        attrs.DEADLINE_MS: round(float(answer.deadline_ms), 1),
        attrs.ELAPSED_MS: round(float(answer.elapsed_ms), 1),
        attrs.DEADLINE_MISSED: bool(answer.deadline_ms > 0 and answer.elapsed_ms > answer.deadline_ms),
        attrs.STEPS: len(answer.steps),
        attrs.GEN_AI_USAGE_INPUT_TOKENS: int(answer.prompt_tokens),
        attrs.GEN_AI_USAGE_OUTPUT_TOKENS: int(answer.completion_tokens),
    }
    if answer.fallback_reason:
        values[attrs.FALLBACK_REASON] = answer.fallback_reason
    if answer.choice is not None:
        values[attrs.CHOICE] = int(answer.choice)
    if answer.model:
        values[attrs.GEN_AI_REQUEST_MODEL] = answer.model
    queries = [step.query for step in answer.steps if step.query and step.action.value == "retrieve"]
    values[attrs.SUBQUERIES_CHARS] = [len(q) for q in queries]
    if include_text:
        values[attrs.SUBQUERIES] = queries
    span.set_attributes(values)


# --------------------------------------------------------------------------------------------------
# The RPC's log line

_RPC_FIELDS: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("argo_rpc_fields", default=None)


def note_rpc(**fields: Any) -> None:
    """Add fields to the log line the interceptor writes when the current RPC ends (no-op outside one)."""
    current = _RPC_FIELDS.get()
    if current is not None:
        current.update({k: v for k, v in fields.items() if v is not None})


# Codes that are the caller's doing (or its choice), logged at INFO; the others point at the server.
_CALLER_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
    }
)


def _log_rpc(method: str, code: grpc.StatusCode, elapsed_s: float, context: Any, fields: dict[str, Any]) -> None:
    import structlog

    logger = structlog.stdlib.get_logger(RPC_LOGGER)
    values: dict[str, Any] = {"rpc": method, "code": code.name, "elapsed_ms": round(elapsed_s * 1000.0, 1), **fields}
    if code is grpc.StatusCode.OK:
        logger.info("answered", **values)
        return
    values["details"] = _details(context)
    if code in _CALLER_CODES:
        logger.info("refused" if code is not grpc.StatusCode.CANCELLED else "cancelled", **values)
    elif code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        logger.warning("overloaded", **values)
    else:
        logger.error("failed", **values)


# --------------------------------------------------------------------------------------------------
# W3C trace context from gRPC metadata

Metadata = Sequence[tuple[str, str | bytes]]


class _MetadataGetter(Getter[Metadata]):
    """Reads gRPC metadata (a sequence of (key, value) tuples; keys are lower-case on the wire)."""

    def get(self, carrier: Metadata, key: str) -> list[str] | None:
        key = key.lower()
        values = [v.decode("latin-1") if isinstance(v, bytes) else v for k, v in carrier if k.lower() == key]
        return values or None

    def keys(self, carrier: Metadata) -> list[str]:
        return [k for k, _ in carrier]


METADATA_GETTER = _MetadataGetter()


def _metadata_of(source: Any) -> Metadata:
    if source is None:
        return ()
    if hasattr(source, "invocation_metadata"):  # grpc / grpc.aio ServicerContext
        return tuple(source.invocation_metadata() or ())
    if isinstance(source, Mapping):
        return tuple(source.items())
    return tuple(source)


def span_from_grpc_metadata(source: Any) -> otel_context.Context:
    """The OpenTelemetry Context carried by the caller (W3C ``traceparent``/``tracestate``, baggage).

    ``source``: a grpc(.aio) ServicerContext, a metadata sequence of (key, value), a dict, or None.
    Returns a context to pass as ``context=`` when starting the server span; an empty one when the
    caller sent no (valid) traceparent, so the span starts a new trace.
    """
    return propagate.extract(_metadata_of(source), getter=METADATA_GETTER, context=otel_context.Context())


def inject_grpc_metadata(metadata: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """Append the current context's ``traceparent`` (and ``tracestate``) to outgoing gRPC metadata."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    out = list(metadata or [])
    out.extend((k.lower(), v) for k, v in carrier.items())
    return out


# --------------------------------------------------------------------------------------------------
# One SERVER span per RPC (plus request metrics and log context), as a grpc.aio server interceptor


def split_method(full_method: str) -> tuple[str, str]:
    """``/argo.v1.ArgoService/Answer`` → (``argo.v1.ArgoService``, ``Answer``)."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service, method


class TelemetryInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every RPC handler: a SERVER span in the caller's trace, request metrics, log context.

    Per RPC it (1) extracts the caller's W3C context from the metadata and opens a SERVER span named
    ``<service>/<method>`` with rpc.system/service/method and rpc.grpc.status_code, (2) counts the
    request, its latency and the in-flight gauge in ``metrics`` (labels: rpc method and status code),
    (3) binds ``rpc`` into structlog's context variables so every log line of the request names it, and
    (4) writes one log line when it ends (``answered``, ``refused``, ``overloaded``, ``failed``) with the rpc,
    status code, elapsed ms and what the handler noted (:func:`note_rpc`: strategy, path, deadline, fallbacks,
    model), inside the span so that it carries ``trace_id``/``span_id``.
    The span is current while the handler runs, so the pipeline's spans become its children.
    Health and reflection (``untraced_services``) are neither traced, counted nor logged: the kubelet probes
    every few seconds.
    """

    def __init__(
        self,
        metrics: Any,  # xapp.telemetry.metrics.Metrics (passed in: tracing does not import metrics)
        *,
        tracer_provider: trace.TracerProvider | None = None,
        untraced_services: Iterable[str] = DEFAULT_UNTRACED_SERVICES,
    ) -> None:
        self._metrics = metrics
        provider = tracer_provider or trace.get_tracer_provider()
        self._tracer = provider.get_tracer(attrs.TRACER_NAME + ".server", xapp.__version__)
        self._untraced = frozenset(untraced_services)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        full_method: str = handler_call_details.method  # type: ignore[attr-defined]
        service, method = split_method(full_method)
        traced = service not in self._untraced
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, service, method, traced),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, service, method, traced),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(handler.stream_unary, service, method, traced),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._wrap_stream(handler.stream_stream, service, method, traced),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    # -- span and metrics bookkeeping shared by the wrappers --------------------------------------

    def _start(self, context: Any, service: str, method: str, traced: bool) -> _RpcScope:
        if not traced:
            return _RpcScope(None, trace.INVALID_SPAN, method)
        span = self._tracer.start_span(
            f"{service}/{method}",
            context=span_from_grpc_metadata(context),
            kind=SpanKind.SERVER,
            attributes={attrs.RPC_SYSTEM: "grpc", attrs.RPC_SERVICE: service, attrs.RPC_METHOD: method},
        )
        return _RpcScope(self._metrics, span, method)

    def _wrap_unary(self, behavior: Callable[..., Any], service: str, method: str, traced: bool) -> Any:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            scope = self._start(context, service, method, traced)
            token = otel_context.attach(trace.set_span_in_context(scope.span))
            fields_token = _RPC_FIELDS.set(scope.fields)
            try:
                with _bound_log_context(method):
                    response = await behavior(request, context)
            except BaseException as exc:
                scope.finish(context, exc)
                raise
            else:
                scope.finish(context, None)
                return response
            finally:
                _RPC_FIELDS.reset(fields_token)
                otel_context.detach(token)

        return wrapper

    def _wrap_stream(self, behavior: Callable[..., Any], service: str, method: str, traced: bool) -> Any:
        if inspect.isasyncgenfunction(behavior):

            async def gen_wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                scope = self._start(context, service, method, traced)
                span_ctx = trace.set_span_in_context(scope.span)
                agen = behavior(request, context)
                try:
                    while True:
                        # Attach only around each step: a context token must not live across a yield.
                        token = otel_context.attach(span_ctx)
                        fields_token = _RPC_FIELDS.set(scope.fields)
                        try:
                            with _bound_log_context(method):
                                item = await agen.__anext__()
                        except StopAsyncIteration:
                            break
                        finally:
                            _RPC_FIELDS.reset(fields_token)
                            otel_context.detach(token)
                        scope.messages += 1
                        yield item
                except BaseException as exc:
                    token = otel_context.attach(span_ctx)
                    try:
                        scope.finish(context, exc)
                    finally:
                        otel_context.detach(token)
                    await agen.aclose()
                    raise
                token = otel_context.attach(span_ctx)
                try:
                    scope.finish(context, None)
                finally:
                    otel_context.detach(token)

            return gen_wrapper
        # A handler that writes with context.write() and returns: same as unary.
        return self._wrap_unary(behavior, service, method, traced)


class _RpcScope:
    """One RPC's bookkeeping; ``metrics`` None: an untraced service (health, reflection), nothing recorded."""

    __slots__ = ("_metrics", "span", "method", "start", "messages", "_done", "fields")

    def __init__(self, metrics: Any, span: trace.Span, method: str) -> None:
        self._metrics = metrics
        self.span = span
        self.method = method
        self.start = time.perf_counter()
        self.messages = 0
        self._done = False
        self.fields: dict[str, Any] | None = None
        if metrics is not None:
            metrics.rpc_started(method)
            self.fields = {}

    def finish(self, context: Any, exc: BaseException | None) -> None:
        if self._done or self._metrics is None:
            return
        self._done = True
        code = _status_code(context, exc)
        elapsed = time.perf_counter() - self.start
        self._metrics.rpc_finished(self.method, code.name, elapsed)
        _log_rpc(self.method, code, elapsed, context, self.fields or {})
        span = self.span
        if span.is_recording():
            span.set_attribute(attrs.RPC_GRPC_STATUS_CODE, code.value[0])
            if self.messages:
                span.set_attribute("rpc.messages_sent", self.messages)
            # Server spans are errors only for codes that point at the server (OpenTelemetry rpc conventions).
            if code in _SERVER_ERROR_CODES:
                span.set_status(Status(StatusCode.ERROR, f"{code.name}: {_details(context)}"))
                if exc is not None and not isinstance(exc, (asyncio.CancelledError, *_abort_errors())):
                    span.record_exception(exc)
        span.end()


_SERVER_ERROR_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def _abort_errors() -> tuple[type[BaseException], ...]:
    # grpc.aio raises AbortError out of context.abort(); the code is already on the context.
    return (grpc.aio.AbortError,)


def _status_code(context: Any, exc: BaseException | None) -> grpc.StatusCode:
    code = None
    try:
        code = context.code()
    except Exception:  # context.code() is missing on very old grpcio
        code = None
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):  # grpc.aio may return the raw integer
        for status in grpc.StatusCode:
            if status.value[0] == code:
                return status
    if exc is None:
        return grpc.StatusCode.OK
    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def _details(context: Any) -> str:
    try:
        details = context.details()
    except Exception:
        return ""
    if isinstance(details, bytes):
        return details.decode("utf-8", "replace")
    return str(details or "")


class _bound_log_context:
    """Bind ``rpc`` into structlog's contextvars for the duration of one handler step."""

    __slots__ = ("_method", "_tokens")

    def __init__(self, method: str) -> None:
        self._method = method
        self._tokens: Any = None

    def __enter__(self) -> None:
        try:
            import structlog.contextvars as scv
        except ImportError:  # structlog is a dependency; stay usable without it
            return
        self._tokens = scv.bind_contextvars(rpc=self._method)

    def __exit__(self, *exc: object) -> None:
        if self._tokens is not None:
            import structlog.contextvars as scv

            scv.reset_contextvars(**self._tokens)
