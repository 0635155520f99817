"""Bounded resources on the gRPC port: what one request, one connection and the whole server may hold.

* **Receive limit** — derived from the validation limits: the largest request that validation would accept
  (every text field at its maximum in 4-byte UTF-8, every count at its maximum, protobuf framing) plus
  headroom. gRPC refuses a larger message with RESOURCE_EXHAUSTED before it is parsed, so a flood of 3.9 MB
  requests never reaches Python (before this limit, 128 of them raised the server's resident memory by
  ~0.5 GB for good).
* **Streams, connections, timeouts** — gRPC core options: calls per connection, connections at once, the
  HTTP/2 handshake timeout, an idle connection's lifetime, keepalive pings to find dead peers.
* **In-flight admission** — :class:`InFlightLimit`, a server interceptor: at most ``max_in_flight_requests``
  ArgoService calls are handled at once (running or waiting for one of ``max_concurrency`` pipeline slots);
  one more is refused with RESOURCE_EXHAUSTED before its work starts. With the receive limit this bounds the
  request bytes the server holds: ``max_in_flight_requests × max_request_bytes``.

The options are read once, when the server is built: the text limits (``max_question_chars`` …) are hot, but
a receive limit raised live takes effect at the next restart.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from xapp._proto.argo.v1 import argo_pb2 as pb
from xapp.config import STRATEGIES, Settings
from xapp.server import validation

SERVICE = pb.DESCRIPTOR.services_by_name["ArgoService"].full_name

UTF8_MAX_BYTES = 4  # a character's worst case on the wire
FIELD_BYTES = 6  # a length-delimited field's tag (1 byte below field 16) and length (varint, <= 5 bytes)
NUMBER_BYTES = 11  # a tagged varint or double
STEP_FIXED_BYTES = 6 * FIELD_BYTES + 8 * NUMBER_BYTES  # the step's framing, enums, progress, latency, usage
PASSAGE_FIXED_BYTES = 5 * FIELD_BYTES + NUMBER_BYTES  # the passage's framing, four strings' framing, score
TIMING_FIXED_BYTES = 3 * FIELD_BYTES + NUMBER_BYTES  # a map entry: framing, key framing, value
HEADROOM_FRACTION = 0.25
HEADROOM_BYTES = 16 * 1024

MAX_METADATA_BYTES = 16 * 1024  # request headers (trace context, auth): gRPC refuses larger ones
KEEPALIVE_TIME_MS = 60_000  # the server pings a connection silent for this long …
KEEPALIVE_TIMEOUT_MS = 20_000  # … and closes it when the ping is not answered in time


def largest_request_bytes(settings: Settings) -> int:
    """The serialized size of the largest request validation accepts (a Synthesize / Decompose request with
    a full history; Answer and Retrieve requests are smaller)."""
    text = settings.max_question_chars * UTF8_MAX_BYTES + FIELD_BYTES
    options = settings.max_options * (settings.max_option_chars * UTF8_MAX_BYTES + FIELD_BYTES)
    strategy = max(map(len, STRATEGIES)) + FIELD_BYTES
    per_step = (
        STEP_FIXED_BYTES
        + validation.MAX_PASSAGES_PER_STEP * (PASSAGE_FIXED_BYTES + FIELD_BYTES)  # passages and sources
        + validation.MAX_TIMINGS_PER_STEP * TIMING_FIXED_BYTES
    )
    history = validation.MAX_HISTORY_CHARS * UTF8_MAX_BYTES + validation.MAX_HISTORY_STEPS * per_step
    return text + options + strategy + history + 3 * NUMBER_BYTES


def max_request_bytes(settings: Settings) -> int:
    """gRPC's receive limit: the largest valid request plus headroom."""
    largest = largest_request_bytes(settings)
    return int(largest * (1 + HEADROOM_FRACTION)) + HEADROOM_BYTES


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """The grpc.aio server's channel arguments."""
    return [
        # A port already taken must fail loudly, not split traffic with a stale server.
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", max_request_bytes(settings)),
        ("grpc.max_metadata_size", MAX_METADATA_BYTES),
        ("grpc.max_concurrent_streams", settings.max_streams_per_connection),
        ("grpc.max_allowed_incoming_connections", settings.max_connections),
        ("grpc.server_handshake_timeout_ms", int(settings.handshake_timeout_s * 1000)),
        ("grpc.max_connection_idle_ms", int(settings.grpc_idle_timeout_s * 1000)),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ]


def describe(settings: Settings) -> dict[str, Any]:
    """The limits in force, for the start-up log line."""
    return {
        "max_request_bytes": max_request_bytes(settings),
        "max_in_flight_requests": settings.max_in_flight_requests,
        "max_streams_per_connection": settings.max_streams_per_connection,
        "max_connections": settings.max_connections,
    }


class InFlightLimit(grpc.aio.ServerInterceptor):
    """At most ``limit`` ArgoService calls handled at once; one more gets RESOURCE_EXHAUSTED before any work.

    Health and reflection are not counted: a probe must answer however busy the server is. Put it after the
    telemetry interceptor, so that refusals are counted and logged like any other status."""

    def __init__(self, limit: int, service: str = SERVICE) -> None:
        self.limit = limit
        self.service = service
        self.in_flight = 0
        self.refused = 0

    def _message(self) -> str:
        return (
            f"server busy: {self.in_flight} calls in flight, the most max_in_flight_requests allows; "
            "retry with backoff or call another replica"
        )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        if handler is None or not method.startswith(f"/{self.service}/"):
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # no other shapes in ArgoService

    def _admit(self) -> bool:
        # Counted when the handler starts (the request has arrived): a call that never gets here, refused by
        # the receive limit or cancelled on the way, holds nothing.
        if self.in_flight >= self.limit:
            self.refused += 1
            return False
        self.in_flight += 1
        return True

    def _unary(self, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if not self._admit():
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self._message())
            try:
                return await behavior(request, context)
            finally:
                self.in_flight -= 1

        return wrapper

    def _stream(self, behavior: Callable[..., AsyncGenerator[Any, None]]) -> Callable[..., AsyncIterator[Any]]:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if not self._admit():
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self._message())
            stream = behavior(request, context)
            try:
                async for item in stream:
                    yield item
            finally:
                self.in_flight -= 1
                await stream.aclose()  # the caller went away: the handler's own clean-up runs now

        return wrapper
