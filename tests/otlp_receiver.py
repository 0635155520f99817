"""A real OTLP/gRPC trace receiver for tests: the collector side of ``TraceService/Export``.

Jaeger cannot be installed here; this speaks the same wire protocol as Jaeger's and the OpenTelemetry
Collector's OTLP port (4317), so the exporter under test does its real work: protobuf encoding, a gRPC
channel, retries. Received spans are flattened into ``ReceivedSpan`` records for assertions.

    with OtlpReceiver() as receiver:                  # listens on 127.0.0.1:<free port>
        settings = Settings(otlp_endpoint=receiver.endpoint)
        ...
        spans = receiver.wait_for(lambda s: len(s) >= 3, timeout=10)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(_value(x) for x in v.array_value.values)
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_span_id: str  # "" for a root span
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind: 1 internal, 2 server, 3 client
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    status_code: int  # 0 unset, 1 ok, 2 error
    start_ns: int
    end_ns: int
    events: tuple[str, ...] = field(default=())

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC method name)
        self._receiver._add(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiver:
    """OTLP TraceService on a free local port, run by a small thread pool."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.requests = 0
        self._spans: list[ReceivedSpan] = []
        self._cond = threading.Condition()
        self._server: grpc.Server | None = None

    @property
    def endpoint(self) -> str:
        """``http://host:port``: plaintext gRPC, as a Jaeger all-in-one or an in-cluster collector."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> OtlpReceiver:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), server)
        self.port = server.add_insecure_port(f"{self.host}:0")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(0).wait(5)
            self._server = None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _add(self, request: Any) -> None:
        out: list[ReceivedSpan] = []
        for rs in request.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    out.append(
                        ReceivedSpan(
                            name=s.name,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_span_id=s.parent_span_id.hex(),
                            kind=int(s.kind),
                            attributes={kv.key: _value(kv.value) for kv in s.attributes},
                            resource=resource,
                            scope=ss.scope.name,
                            status_code=int(s.status.code),
                            start_ns=int(s.start_time_unix_nano),
                            end_ns=int(s.end_time_unix_nano),
                            events=tuple(e.name for e in s.events),
                        )
                    )
        with self._cond:
            self.requests += 1
            self._spans.extend(out)
            self._cond.notify_all()

    def spans(self) -> list[ReceivedSpan]:
        with self._cond:
            return list(self._spans)

    def clear(self) -> None:
        with self._cond:
            self._spans.clear()

    def wait_for(
        self, predicate: Callable[[list[ReceivedSpan]], bool], timeout: float = 10.0
    ) -> list[ReceivedSpan]:
        """Block until ``predicate(spans)`` holds; returns the spans, or raises TimeoutError."""
        end = time.monotonic() + timeout
        with self._cond:
            while not predicate(self._spans):
                left = end - time.monotonic()
                if left <= 0:
                    names = [s.name for s in self._spans]
                    raise TimeoutError(f"OTLP receiver: condition not met within {timeout}s; got {names}")
                self._cond.wait(left)
            return list(self._spans)


def by_id(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    return {s.span_id: s for s in spans}


def ancestors(span: ReceivedSpan, spans: list[ReceivedSpan]) -> list[str]:
    """Parent span ids from ``span`` upwards, including ids of parents not among ``spans`` (remote)."""
    index = by_id(spans)
    chain: list[str] = []
    current: ReceivedSpan | None = span
    while current is not None and current.parent_span_id:
        chain.append(current.parent_span_id)
        current = index.get(current.parent_span_id)
    return chain


def main() -> int:
    """Run a receiver as its own process (the tracing-overhead benchmark keeps it off its own CPU time).

    Prints ``LISTENING <port>``; on end of stdin prints ``SPANS <count> REQUESTS <count>`` and exits.
    """
    import sys

    with OtlpReceiver() as receiver:
        print(f"LISTENING {receiver.port}", flush=True)
        sys.stdin.read()
        print(f"SPANS {len(receiver.spans())} REQUESTS {receiver.requests}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
