"""The span per RPC: a grpc.aio server interceptor, the request's outcome on that span, the RPC's log line.

:class:`TelemetryInterceptor` opens a SERVER span in the caller's trace (context from
:mod:`xapp.telemetry.propagation`), counts the RPC in :class:`~xapp.telemetry.metrics.Metrics` and writes one
log line when it ends. Inside the handler, :func:`annotate_question` / :func:`annotate_answer` put the request
and its outcome on that span and :func:`note_rpc` adds fields to the log line. Names come from
:mod:`xapp.telemetry.attrs`.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
import structlog
import structlog.contextvars as scv
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

import xapp
from xapp.domain import Answer
from xapp.telemetry import attrs
from xapp.telemetry.metrics import Metrics
from xapp.telemetry.propagation import extract_context

# The one line per RPC (``"event": "answered"``) is written by the interceptor under this logger name.
RPC_LOGGER = "xapp.server.rpc"

# Health probes (kubelet, RIC) and reflection would drown the traces of real requests.
DEFAULT_UNTRACED_SERVICES: tuple[str, ...] = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)


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


def annotate_answer(answer: Answer, span: trace.Span | None = None, *, include_text: bool = False) -> None:
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
        metrics: Metrics,
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
        # One handler factory per RPC shape; a unary reply is wrapped as unary, a stream as a stream.
        for behavior, factory, wrap in (
            (handler.unary_unary, grpc.unary_unary_rpc_method_handler, self._wrap_unary),
            (handler.unary_stream, grpc.unary_stream_rpc_method_handler, self._wrap_stream),
            (handler.stream_unary, grpc.stream_unary_rpc_method_handler, self._wrap_unary),
            (handler.stream_stream, grpc.stream_stream_rpc_method_handler, self._wrap_stream),
        ):
            if behavior is not None:
                return factory(
                    wrap(behavior, service, method, traced),
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
            context=extract_context(context),
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

    def __init__(self, metrics: Metrics | None, span: trace.Span, method: str) -> None:
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
                span.set_attribute(attrs.RPC_MESSAGES_SENT, self.messages)
            # Server spans are errors only for codes that point at the server (OpenTelemetry rpc conventions).
            if code in _SERVER_ERROR_CODES:
                span.set_status(Status(StatusCode.ERROR, f"{code.name}: {_details(context)}"))
                if exc is not None and not isinstance(exc, (asyncio.CancelledError, grpc.aio.AbortError)):
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
    # The caller went away: a unary handler is cancelled; a streamed one is closed at its yield (GeneratorExit),
    # which once was recorded as UNKNOWN.
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
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
        self._tokens = scv.bind_contextvars(rpc=self._method)

    def __exit__(self, *exc: object) -> None:
        scv.reset_contextvars(**self._tokens)
