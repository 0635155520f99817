"""Telemetry: span structure (in-memory exporter), the OTLP wire (a real receiver), W3C context from gRPC
metadata through a real grpc.aio server, log correlation, Prometheus metrics and the O-RAN SC HTTP
endpoints on a real port."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import grpc
import pytest
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from otlp_receiver import OtlpReceiver, ancestors

import xapp
from xapp.bench.tracer_switch import activate, setup_tracing
from xapp.config import Settings
from xapp.domain import Action, Answer, Cause, Component, Fallback, PathKind, Step, Usage
from xapp.errors import ConfigError
from xapp.server.http import ALIVE_PATH, METRICS_PATH, READY_PATH, HttpEndpoints, grpc_health_ready
from xapp.telemetry import attrs
from xapp.telemetry.interceptor import TelemetryInterceptor, annotate_answer
from xapp.telemetry.logging import configure_logging, route_logger, set_log_level
from xapp.telemetry.metrics import Metrics
from xapp.telemetry.propagation import extract_context, inject_metadata
from xapp.telemetry.setup import normalize_endpoint

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"

# Obtained at import, before any provider exists — as the pipeline's module-level tracer will be.
MODULE_TRACER = trace.get_tracer(attrs.TRACER_NAME)


@pytest.fixture
def memory_tracing() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    handle = setup_tracing(Settings(), environ={}, span_processors=[SimpleSpanProcessor(exporter)])
    try:
        yield exporter
    finally:
        handle.shutdown()


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = configure_logging(Settings(log_format="json", log_level="INFO"), stream=stream)
    try:
        yield stream
    finally:
        logging.getLogger().removeHandler(handler)
        structlog.reset_defaults()


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def make_answer(**changes: Any) -> Answer:
    steps = [
        Step(
            action=Action.RETRIEVE,
            path=PathKind.TEMPLATE,
            progress_before=0.0,
            progress_after=0.3,
            latency_ms=12.0,
            timings_ms={"retrieve": 11.0},
        ),
        Step(
            action=Action.REASON,
            path=PathKind.LLM,
            progress_before=0.3,
            progress_after=0.45,
            latency_ms=80.0,
            usage=Usage(prompt_tokens=120, completion_tokens=30, ttft_ms=25.0),
            timings_ms={"generate": 78.0},
        ),
    ]
    base: dict[str, Any] = dict(
        answer="The E2 interface.",
        choice=2,
        path=PathKind.MIXED,
        fallback_reason=None,
        steps=steps,
        elapsed_ms=140.0,
        strategy="mdp",
        deadline_ms=1000.0,
        timings_ms={"policy": 0.2, "retrieve": 11.0, "reason": 80.0, "synthesize": 40.0},
        synthesis_usage=Usage(prompt_tokens=200, completion_tokens=10, ttft_ms=30.0),
        model="qwen",
    )
    base.update(changes)
    return Answer(**base)


# --------------------------------------------------------------------------------------------------
# Tracing: setup, structure, context extraction


def test_module_level_tracer_records_into_provider_set_up_later(memory_tracing: InMemorySpanExporter) -> None:
    with MODULE_TRACER.start_as_current_span(attrs.SPAN_RETRIEVE) as parent:
        parent.set_attribute(attrs.RETRIEVAL_TOP_K, 4)
        with MODULE_TRACER.start_as_current_span(attrs.SPAN_GENERATE) as child:
            child.set_attribute(attrs.GEN_AI_USAGE_OUTPUT_TOKENS, 7)
    spans = {s.name: s for s in memory_tracing.get_finished_spans()}
    assert set(spans) == {attrs.SPAN_RETRIEVE, attrs.SPAN_GENERATE}
    gen, ret = spans[attrs.SPAN_GENERATE], spans[attrs.SPAN_RETRIEVE]
    assert gen.parent is not None and gen.parent.span_id == ret.context.span_id
    assert gen.context.trace_id == ret.context.trace_id
    assert ret.parent is None
    assert ret.attributes is not None and ret.attributes[attrs.RETRIEVAL_TOP_K] == 4
    assert ret.resource.attributes["service.name"] == "argo-xapp"


def test_shutdown_switches_tracing_off_and_setup_switches_it_back_on() -> None:
    first, second = InMemorySpanExporter(), InMemorySpanExporter()
    handle = setup_tracing(Settings(), environ={}, span_processors=[SimpleSpanProcessor(first)])
    MODULE_TRACER.start_span("a").end()
    assert handle.shutdown() is True
    span = MODULE_TRACER.start_span("after-shutdown")
    assert not span.is_recording()
    span.end()
    handle2 = setup_tracing(Settings(), environ={}, span_processors=[SimpleSpanProcessor(second)])
    MODULE_TRACER.start_span("b").end()
    handle2.shutdown()
    assert [s.name for s in first.get_finished_spans()] == ["a"]
    assert [s.name for s in second.get_finished_spans()] == ["b"]
    assert handle.shutdown() is True  # idempotent
    with pytest.raises(RuntimeError):
        activate(handle)


def test_handles_can_be_switched_in_one_process() -> None:
    exported = InMemorySpanExporter()
    on = setup_tracing(Settings(), environ={}, span_processors=[SimpleSpanProcessor(exported)])
    off = setup_tracing(Settings(), environ={"OTEL_SDK_DISABLED": "true"})  # switches tracing off
    try:
        MODULE_TRACER.start_span("while-off").end()
        activate(on)
        MODULE_TRACER.start_span("while-on").end()
        activate(off)
        assert not MODULE_TRACER.start_span("off-again").is_recording()
    finally:
        on.shutdown()
        off.shutdown()
    assert [s.name for s in exported.get_finished_spans()] == ["while-on"]


def test_traceparent_in_grpc_metadata_makes_span_a_child_of_the_remote_caller(
    memory_tracing: InMemorySpanExporter,
) -> None:
    metadata = (("user-agent", "grpc-python"), ("traceparent", TRACEPARENT), ("tracestate", "ric=1"))
    ctx = extract_context(metadata)
    with (
        MODULE_TRACER.start_as_current_span("server", context=ctx, kind=SpanKind.SERVER),
        MODULE_TRACER.start_as_current_span(attrs.SPAN_POLICY),
    ):
        pass
    spans = {s.name: s for s in memory_tracing.get_finished_spans()}
    server = spans["server"]
    assert format(server.context.trace_id, "032x") == CALLER_TRACE
    assert server.parent is not None and server.parent.is_remote
    assert format(server.parent.span_id, "016x") == CALLER_SPAN
    assert server.context.trace_state.get("ric") == "1"
    policy = spans[attrs.SPAN_POLICY]
    assert policy.parent is not None and policy.parent.span_id == server.context.span_id


def test_missing_or_malformed_traceparent_starts_a_new_trace(memory_tracing: InMemorySpanExporter) -> None:
    for metadata in ((), (("traceparent", "00-zz-yy-01"),), None):
        with MODULE_TRACER.start_as_current_span("root", context=extract_context(metadata)):
            pass
    spans = memory_tracing.get_finished_spans()
    assert len(spans) == 3
    assert all(s.parent is None for s in spans)
    assert len({s.context.trace_id for s in spans}) == 3
    assert all(format(s.context.trace_id, "032x") != CALLER_TRACE for s in spans)


def test_inject_then_extract_round_trips_the_current_context(memory_tracing: InMemorySpanExporter) -> None:
    with MODULE_TRACER.start_as_current_span("client") as span:
        metadata = inject_metadata([("x-request-id", "1")])
    assert metadata[0] == ("x-request-id", "1")
    traceparent = dict(metadata)["traceparent"]
    version, trace_id, span_id, flags = traceparent.split("-")
    assert (version, trace_id, span_id) == (
        "00",
        f"{span.get_span_context().trace_id:032x}",
        f"{span.get_span_context().span_id:016x}",
    )
    assert int(flags, 16) & 1  # sampled
    ctx = extract_context(metadata)
    assert trace.get_current_span(ctx).get_span_context().span_id == span.get_span_context().span_id


def test_the_client_sends_the_context_through_the_one_helper_without_the_sdk() -> None:
    script = (
        "import sys\n"
        "import xapp.client, xapp.telemetry.propagation as p\n"
        "assert xapp.client.inject_metadata is p.inject_metadata\n"
        "print(sorted(m for m in sys.modules if m.startswith(('xapp.telemetry', 'opentelemetry.sdk'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['xapp.telemetry', 'xapp.telemetry.propagation']"


def test_resource_names_service_version_pod_and_namespace() -> None:
    import xapp

    env = {
        "POD_NAME": "argo-xapp-7c9d-abcde",
        "POD_NAMESPACE": "ricxapp",
        "OTEL_RESOURCE_ATTRIBUTES": "team=ric",
    }
    handle = setup_tracing(Settings(), environ=env)
    try:
        res = dict(handle.resource.attributes)
    finally:
        handle.shutdown()
    assert res["service.name"] == "argo-xapp"
    assert res["service.version"] == xapp.__version__
    assert res["k8s.pod.name"] == "argo-xapp-7c9d-abcde"
    assert res["k8s.namespace.name"] == "ricxapp"
    assert handle.exporter == "none" and handle.endpoint is None and not handle.exporting


def test_no_endpoint_means_no_exporter_and_sdk_disabled_means_no_provider() -> None:
    handle = setup_tracing(Settings(), environ={})
    assert handle.provider is not None and handle.exporter == "none"
    handle.shutdown()
    off = setup_tracing(Settings(otlp_endpoint="localhost:4317"), environ={"OTEL_SDK_DISABLED": "true"})
    assert off.provider is None and not off.exporting
    assert not MODULE_TRACER.start_span("x").is_recording()
    assert off.shutdown() is True
    none = setup_tracing(Settings(otlp_endpoint="localhost:4317"), environ={"OTEL_TRACES_EXPORTER": "none"})
    assert none.exporter == "none" and none.endpoint is None
    none.shutdown()


def test_the_servers_setup_sets_the_global_provider_once_and_leaves_a_foreign_one_alone() -> None:
    # A fresh process: the API's global provider can be set only once, and this one must stay unset.
    script = textwrap.dedent(
        """
        import logging
        from opentelemetry import trace
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from xapp.config import Settings
        from xapp.telemetry.setup import setup_tracing

        logging.basicConfig(level=logging.WARNING)
        early = trace.get_tracer("xapp")  # module-level, before any provider
        exported = InMemorySpanExporter()
        handle = setup_tracing(Settings(), environ={}, span_processors=[SimpleSpanProcessor(exported)])
        assert trace.get_tracer_provider() is handle.provider
        early.start_span("recorded").end()
        second = setup_tracing(Settings(), environ={})  # refused: the first stays
        assert trace.get_tracer_provider() is handle.provider
        second.shutdown()
        assert handle.shutdown() is True
        assert [s.name for s in exported.get_finished_spans()] == ["recorded"]
        print("OK")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "OK", done.stderr
    assert "a global tracer provider is already set (TracerProvider)" in done.stderr


def test_endpoint_resolution_and_bad_configuration() -> None:
    assert normalize_endpoint("jaeger:4317") == "http://jaeger:4317"
    assert normalize_endpoint("https://otel.example:4317") == "https://otel.example:4317"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}
    handle = setup_tracing(Settings(), environ=env)
    assert handle.endpoint == "http://collector:4317" and handle.exporter == "otlp"
    handle.shutdown(timeout_s=0.5)
    traces_env = {**env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "traces:4317"}
    handle = setup_tracing(Settings(), environ=traces_env)
    assert handle.endpoint == "http://traces:4317"
    handle.shutdown(timeout_s=0.5)
    handle = setup_tracing(Settings(otlp_endpoint="mine:4317"), environ=traces_env)  # the setting wins
    assert handle.endpoint == "http://mine:4317"
    handle.shutdown(timeout_s=0.5)
    with pytest.raises(ConfigError, match="grpc"):
        setup_tracing(Settings(otlp_endpoint="x:4318"), environ={"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER"):
        setup_tracing(Settings(), environ={"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(ConfigError, match="otlp_endpoint"):
        normalize_endpoint("ftp://x:1")


# --------------------------------------------------------------------------------------------------
# The OTLP wire: the real exporter to a real TraceService receiver


def test_spans_reach_a_real_otlp_receiver_on_shutdown_flush() -> None:
    with OtlpReceiver() as receiver:
        # Bare host:port, as in a Helm value: must be plaintext gRPC, not TLS.
        handle = setup_tracing(
            Settings(otlp_endpoint=f"127.0.0.1:{receiver.port}"),
            environ={"POD_NAME": "pod-1", "POD_NAMESPACE": "ricxapp"},
        )
        assert handle.exporter == "otlp"
        ctx = extract_context([("traceparent", TRACEPARENT)])
        with (
            MODULE_TRACER.start_as_current_span("argo.v1.ArgoService/Answer", context=ctx, kind=SpanKind.SERVER),
            MODULE_TRACER.start_as_current_span(attrs.SPAN_SYNTHESIZE) as span,
        ):
            span.set_attributes(
                {
                    attrs.PATH: "template",
                    attrs.DEADLINE_MS: 1000,
                    attrs.ABORTED: False,
                    attrs.PROGRESS_AFTER: 0.45,
                    attrs.GEN_AI_FINISH_REASON: ("stop",),
                }
            )
        # Default batch delay is 5 s: nothing is expected yet; the flush on shutdown delivers.
        assert handle.shutdown(timeout_s=10) is True
        spans = receiver.wait_for(lambda s: len(s) >= 2, timeout=5)
    by_name = {s.name: s for s in spans}
    server, synth = by_name["argo.v1.ArgoService/Answer"], by_name[attrs.SPAN_SYNTHESIZE]
    assert server.trace_id == synth.trace_id == CALLER_TRACE
    assert server.parent_span_id == CALLER_SPAN and server.kind == 2  # SPAN_KIND_SERVER
    assert synth.parent_span_id == server.span_id
    assert ancestors(synth, spans) == [server.span_id, CALLER_SPAN]
    assert synth.attributes == {
        attrs.PATH: "template",
        attrs.DEADLINE_MS: 1000,
        attrs.ABORTED: False,
        attrs.PROGRESS_AFTER: 0.45,
        attrs.GEN_AI_FINISH_REASON: ("stop",),
    }
    assert synth.resource["service.name"] == "argo-xapp"
    assert synth.resource["k8s.pod.name"] == "pod-1" and synth.resource["k8s.namespace.name"] == "ricxapp"
    assert synth.scope == attrs.TRACER_NAME


def test_shutdown_is_bounded_when_the_collector_is_down() -> None:
    with OtlpReceiver() as receiver:
        port = receiver.port
    # Nothing listens on ``port`` any more: the exporter retries UNAVAILABLE for up to 10 s.
    handle = setup_tracing(Settings(otlp_endpoint=f"127.0.0.1:{port}"), environ={})
    MODULE_TRACER.start_span("lost").end()
    start = time.monotonic()
    assert handle.shutdown(timeout_s=1.0) is False
    assert time.monotonic() - start < 2.5


def test_an_unreachable_collector_is_logged_once(log_stream: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:
    with OtlpReceiver() as receiver:
        port = receiver.port
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "1")  # each failed export gives up after 1 s
    handle = setup_tracing(Settings(otlp_endpoint=f"127.0.0.1:{port}"), environ={})
    raw: list[logging.LogRecord] = []
    counter = logging.Handler()
    counter.emit = raw.append  # type: ignore[method-assign]
    exporter_logger = logging.getLogger("opentelemetry.exporter.otlp.proto.grpc.exporter")
    exporter_logger.addHandler(counter)
    try:
        end = time.monotonic() + 15
        i = 0
        # Batches until the real OTLP exporter has complained three times (it retries, then drops each).
        while len([r for r in raw if r.levelno >= logging.WARNING]) < 3 and time.monotonic() < end:
            MODULE_TRACER.start_span(f"lost-{i}").end()
            handle.force_flush(timeout_s=3)
            i += 1
    finally:
        handle.shutdown(timeout_s=1)
        exporter_logger.removeHandler(counter)
    assert len([r for r in raw if r.levelno >= logging.WARNING]) >= 3  # what the exporter said
    exporter_lines = [line for line in json_lines(log_stream) if line["logger"].startswith("opentelemetry")]
    assert len(exporter_lines) == 1, exporter_lines
    assert str(port) in exporter_lines[0]["event"]


def test_stray_stderr_text_becomes_json_lines() -> None:
    from xapp.telemetry.library_output import JsonStderr

    out = io.StringIO()
    err = JsonStderr(out)
    err.write('{"event": "already json", "level": "info"}\n')
    err.write("Process EngineCore:\nTraceback (most recent call last):\n  File ")
    err.write('"x.py", line 1\n\nValueError: no memory')
    err.flush()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == [
        "already json", "Process EngineCore:", "Traceback (most recent call last):", '  File "x.py", line 1',
        "ValueError: no memory",
    ]  # fmt: skip
    assert all(line["logger"] == "stderr" and line["timestamp"].endswith("Z") for line in lines[1:])


def test_export_failures_at_most_once_a_minute_saying_how_many_were_left_out() -> None:
    from xapp.telemetry.library_output import ExportFailureFilter

    now = [0.0]
    f = ExportFailureFilter(interval_s=60, clock=lambda: now[0])

    def record(name: str = "opentelemetry.exporter.otlp.proto.grpc.exporter") -> logging.LogRecord:
        return logging.LogRecord(name, logging.WARNING, __file__, 1, "Failed to export traces", None, None)

    passed = []
    for t in (0, 5, 10, 59.9, 61, 65, 200):
        now[0] = t
        r = record()
        if f.filter(r):
            passed.append((t, getattr(r, "suppressed", 0)))
    assert passed == [(0, 0), (61, 3), (200, 1)]
    assert f.filter(record("xapp.server.rpc"))  # other loggers untouched


# --------------------------------------------------------------------------------------------------
# The interceptor on a real grpc.aio server


def _identity(b: bytes) -> bytes:
    return b


async def _say(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    with trace.get_tracer(attrs.TRACER_NAME).start_as_current_span(attrs.SPAN_POLICY):
        structlog.get_logger("xapp.test").info("deciding", question=request.decode())
    if request == b"bad":
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "question: blank")
    if request == b"boom":
        raise RuntimeError("unexpected")
    return b"ok:" + request


async def _stream(request: bytes, context: grpc.aio.ServicerContext) -> Any:
    tracer = trace.get_tracer(attrs.TRACER_NAME)
    for i in range(3):
        with tracer.start_as_current_span(attrs.SPAN_RETRIEVE):
            await asyncio.sleep(0)
        yield f"step{i}".encode()


async def _call_test_server(metrics: Metrics) -> dict[str, Any]:
    handlers = grpc.method_handlers_generic_handler(
        "test.v1.Echo",
        {
            "Say": grpc.unary_unary_rpc_method_handler(_say, _identity, _identity),
            "Steps": grpc.unary_stream_rpc_method_handler(_stream, _identity, _identity),
        },
    )
    health = HealthServicer()
    server = grpc.aio.server(interceptors=[TelemetryInterceptor(metrics)])
    server.add_generic_rpc_handlers((handlers,))
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    out: dict[str, Any] = {}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            say = channel.unary_unary("/test.v1.Echo/Say", _identity, _identity)
            steps = channel.unary_stream("/test.v1.Echo/Steps", _identity, _identity)
            out["ok"] = await say(b"hi", metadata=(("traceparent", TRACEPARENT),))
            for payload in (b"bad", b"boom"):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await say(payload)
                out[payload.decode()] = err.value.code()
            out["stream"] = [m async for m in steps(b"", metadata=(("traceparent", TRACEPARENT),))]
            check = health_pb2_grpc.HealthStub(channel).Check
            out["health"] = (await check(health_pb2.HealthCheckRequest(service=""))).status
    finally:
        await server.stop(0)
    return out


def test_interceptor_opens_server_span_in_callers_trace_with_metrics_and_log_context(
    memory_tracing: InMemorySpanExporter, log_stream: io.StringIO
) -> None:
    metrics = Metrics()
    out = asyncio.run(_call_test_server(metrics))
    assert out["ok"] == b"ok:hi"
    assert out["bad"] == grpc.StatusCode.INVALID_ARGUMENT and out["boom"] == grpc.StatusCode.UNKNOWN
    assert out["stream"] == [b"step0", b"step1", b"step2"]
    assert out["health"] == health_pb2.HealthCheckResponse.SERVING

    spans = memory_tracing.get_finished_spans()
    servers = [s for s in spans if s.kind == SpanKind.SERVER]
    # Health checks are not traced; Say ×3 and Steps ×1 are.
    assert sorted(s.name for s in servers) == ["test.v1.Echo/Say"] * 3 + ["test.v1.Echo/Steps"]
    codes = sorted(s.attributes[attrs.RPC_GRPC_STATUS_CODE] for s in servers)  # type: ignore[index]
    assert codes == [0, 0, 2, 3]  # OK (Say), OK (Steps), UNKNOWN, INVALID_ARGUMENT
    for s in servers:
        assert s.attributes is not None
        assert s.attributes[attrs.RPC_SYSTEM] == "grpc" and s.attributes[attrs.RPC_SERVICE] == "test.v1.Echo"
        code = s.attributes[attrs.RPC_GRPC_STATUS_CODE]
        # A caller's mistake is not a server error; an unexpected exception is.
        assert (s.status.status_code == StatusCode.ERROR) == (code == 2)

    traced = [s for s in servers if format(s.context.trace_id, "032x") == CALLER_TRACE]
    assert len(traced) == 2
    for server in traced:
        assert server.parent is not None and format(server.parent.span_id, "016x") == CALLER_SPAN
        children = [s for s in spans if s.parent is not None and s.parent.span_id == server.context.span_id]
        assert children, f"no child span under {server.name}"
        expected = attrs.SPAN_POLICY if server.name.endswith("Say") else attrs.SPAN_RETRIEVE
        assert {c.name for c in children} == {expected}
        assert len(children) == (1 if expected == attrs.SPAN_POLICY else 3)

    sample = metrics.registry.get_sample_value
    assert sample("argo_xapp_rpc_requests_total", {"rpc": "Say", "code": "OK"}) == 1
    assert sample("argo_xapp_rpc_requests_total", {"rpc": "Say", "code": "INVALID_ARGUMENT"}) == 1
    assert sample("argo_xapp_rpc_requests_total", {"rpc": "Say", "code": "UNKNOWN"}) == 1
    assert sample("argo_xapp_rpc_requests_total", {"rpc": "Steps", "code": "OK"}) == 1
    assert sample("argo_xapp_rpc_requests_total", {"rpc": "Check", "code": "OK"}) is None  # probes: not counted
    assert sample("argo_xapp_rpc_latency_seconds_count", {"rpc": "Say", "code": "OK"}) == 1
    assert sample("argo_xapp_rpc_in_flight", {"rpc": "Say"}) == 0

    lines = [line for line in json_lines(log_stream) if line.get("event") == "deciding"]
    assert len(lines) == 3
    ok_line = next(line for line in lines if line["question"] == "hi")
    policy = next(
        s for s in spans if s.name == attrs.SPAN_POLICY and format(s.context.trace_id, "032x") == CALLER_TRACE
    )
    assert ok_line["trace_id"] == CALLER_TRACE
    assert ok_line["span_id"] == format(policy.context.span_id, "016x")
    assert ok_line["rpc"] == "Say" and ok_line["level"] == "info" and ok_line["logger"] == "xapp.test"

    # One line per RPC, its values as fields, inside the server span; none for the health check.
    rpc_lines = [line for line in json_lines(log_stream) if line.get("logger") == "xapp.server.rpc"]
    assert sorted((line["event"], line["rpc"], line["code"]) for line in rpc_lines) == [
        ("answered", "Say", "OK"),
        ("answered", "Steps", "OK"),
        ("failed", "Say", "UNKNOWN"),
        ("refused", "Say", "INVALID_ARGUMENT"),
    ]
    answered = next(line for line in rpc_lines if line["rpc"] == "Say" and line["code"] == "OK")
    assert answered["trace_id"] == CALLER_TRACE and isinstance(answered["elapsed_ms"], float)
    say_span = next(s for s in servers if s.name.endswith("Say") and s.attributes[attrs.RPC_GRPC_STATUS_CODE] == 0)
    assert answered["span_id"] == format(say_span.context.span_id, "016x")
    assert next(line for line in rpc_lines if line["code"] == "UNKNOWN")["level"] == "error"


# --------------------------------------------------------------------------------------------------
# Logs


def test_log_lines_carry_trace_and_span_ids_and_library_loggers_share_the_format(
    memory_tracing: InMemorySpanExporter, log_stream: io.StringIO
) -> None:
    log = structlog.get_logger("xapp.pipeline")
    # vLLM, when it configured logging itself, put its own handler on "vllm" and stopped propagation.
    vllm_logger = logging.getLogger("vllm")
    private = logging.StreamHandler(io.StringIO())
    vllm_logger.addHandler(private)
    vllm_logger.propagate = False
    route_logger("vllm")
    log.info("outside")
    with MODULE_TRACER.start_as_current_span(attrs.SPAN_GENERATE) as span:
        log.info("inside", step=1)
        vllm_logger.error("Added request %s", "req-1")  # library loggers pass at ERROR
        vllm_logger.warning("Triton is not installed")  # noise to an operator: silenced
        logging.getLogger("chromadb.api").warning("collection %s missing", "oran")
        logging.getLogger("chromadb.api").debug("below the level")
    lines = json_lines(log_stream)
    by_event = {line["event"]: line for line in lines}
    assert "trace_id" not in by_event["outside"]
    trace_id = format(span.get_span_context().trace_id, "032x")
    span_id = format(span.get_span_context().span_id, "016x")
    for event, logger in (
        ("inside", "xapp.pipeline"),
        ("Added request req-1", "vllm"),
        ("collection oran missing", "chromadb.api"),
    ):
        line = by_event[event]
        assert line["trace_id"] == trace_id and line["span_id"] == span_id
        assert line["logger"] == logger
        assert "timestamp" in line and "level" in line
    assert by_event["inside"]["step"] == 1
    assert by_event["collection oran missing"]["level"] == "warning"
    assert "below the level" not in log_stream.getvalue()
    assert "Triton" not in log_stream.getvalue()
    assert vllm_logger.handlers == [] and vllm_logger.propagate


def test_log_format_and_level_settings() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    root = logging.getLogger()
    try:
        tty = Tty()
        handler = configure_logging(Settings(log_format="auto", log_level="debug"), stream=tty)
        structlog.get_logger("t").debug("hello", k=1)
        text = tty.getvalue()
        assert "hello" in text and not text.lstrip().startswith("{")  # console renderer on a terminal
        root.removeHandler(handler)
        pipe = io.StringIO()
        handler = configure_logging(Settings(log_format="auto", log_level="WARNING"), stream=pipe)
        structlog.get_logger("t").info("dropped")
        structlog.get_logger("t").error("kept")
        assert [line["event"] for line in json_lines(pipe)] == ["kept"]  # JSON when not a terminal
        set_log_level("debug")  # hot reload of log_level
        logging.getLogger("chromadb").debug("now visible")
        assert json_lines(pipe)[-1]["event"] == "now visible"
        root.removeHandler(handler)
        with pytest.raises(ConfigError, match="log_level"):
            configure_logging(Settings(log_level="LOUD"), stream=io.StringIO())
    finally:
        for h in [h for h in root.handlers if getattr(h, "_argo_xapp_handler", False)]:
            root.removeHandler(h)
        structlog.reset_defaults()


# --------------------------------------------------------------------------------------------------
# Metrics


def test_question_and_subquery_text_only_with_trace_text(memory_tracing: InMemorySpanExporter) -> None:
    from xapp.telemetry.interceptor import annotate_question

    answer = make_answer()
    object.__setattr__(answer.steps[0], "query", "E2 node interface")
    for include in (False, True):
        with MODULE_TRACER.start_as_current_span(f"server-{include}"):
            annotate_question("What is E2?", 4, include_text=include)
            annotate_answer(answer, include_text=include)
    spans = {s.name: s.attributes for s in memory_tracing.get_finished_spans()}
    off, on = spans["server-False"], spans["server-True"]
    assert off[attrs.QUESTION_CHARS] == 11 and off[attrs.OPTIONS] == 4 and off[attrs.SUBQUERIES_CHARS] == (17,)
    assert attrs.QUESTION not in off and attrs.SUBQUERIES not in off
    assert on[attrs.QUESTION] == "What is E2?" and on[attrs.SUBQUERIES] == ("E2 node interface",)


def test_build_info_and_engine_statistics() -> None:
    from xapp.llm.engine import EngineStats

    class Engine:
        model_name = "Qwen2.5-Coder-1.5B-Instruct"
        quantization = "compressed-tensors"
        stats = EngineStats(requests=3, running=1, waiting=2, kv_cache_usage=0.25, prompt_tokens=90)

    metrics = Metrics()
    sample = metrics.registry.get_sample_value
    assert sample("argo_xapp_build_info", {"version": xapp.__version__, "model": "", "quantization": ""}) == 1
    assert sample("argo_xapp_llm_engine_running_requests") == 0  # no engine: zeros, not gaps
    metrics.watch_engine(Engine())
    labels = {"version": xapp.__version__, "model": "Qwen2.5-Coder-1.5B-Instruct", "quantization": "compressed-tensors"}
    assert sample("argo_xapp_build_info", labels) == 1
    assert sample("argo_xapp_llm_engine_running_requests") == 1
    assert sample("argo_xapp_llm_engine_waiting_requests") == 2
    assert sample("argo_xapp_llm_engine_kv_cache_usage_ratio") == 0.25
    assert sample("argo_xapp_llm_engine_requests_total") == 3
    assert sample("argo_xapp_llm_engine_prompt_tokens_total") == 90
    Engine.stats.running = 0  # read at each scrape
    assert sample("argo_xapp_llm_engine_running_requests") == 0


def test_record_answer_updates_every_metric() -> None:
    metrics = Metrics()
    sample = metrics.registry.get_sample_value
    # Zero from the start: a dashboard's rates are 0, not "no data", before the first miss or fallback.
    assert sample("argo_xapp_deadline_misses_total", {"rpc": "Answer", "strategy": "mdp"}) == 0
    assert sample("argo_xapp_fallbacks_total", {"component": "synthesizer", "cause": "no_time"}) == 0
    assert "_created" not in metrics.render().decode()
    metrics.record_answer(make_answer(), rpc="Answer")
    assert sample("argo_xapp_answers_total", {"rpc": "Answer", "path": "mixed", "strategy": "mdp"}) == 1
    assert sample("argo_xapp_deadline_misses_total", {"rpc": "Answer", "strategy": "mdp"}) == 0
    assert sample("argo_xapp_llm_tokens_total", {"type": "prompt"}) == 320
    assert sample("argo_xapp_llm_tokens_total", {"type": "completion"}) == 40
    assert sample("argo_xapp_llm_time_to_first_token_seconds_count") == 2
    assert sample("argo_xapp_component_latency_seconds_count", {"component": "reason"}) == 1
    assert sample("argo_xapp_component_latency_seconds_sum", {"component": "reason"}) == pytest.approx(0.08)
    assert sample("argo_xapp_steps_total", {"action": "retrieve", "path": "template"}) == 1
    assert sample("argo_xapp_answer_latency_seconds_count", {"path": "mixed", "strategy": "mdp"}) == 1

    late = make_answer(
        path=PathKind.TEMPLATE,
        elapsed_ms=1012.0,
        deadline_ms=1000.0,
        fallback_reason="synthesizer: LLM ran out of time and was aborted; retriever: connection refused",
        synthesis_usage=Usage(aborted=True),
        fallbacks=[
            Fallback(Component.SYNTHESIZER, Cause.ABORTED, "LLM ran out of time and was aborted"),
            Fallback(Component.RETRIEVER, Cause.STORE_ERROR, "connection refused"),
        ],
    )
    metrics.record_answer(late, rpc="AnswerStream")
    assert sample("argo_xapp_deadline_misses_total", {"rpc": "AnswerStream", "strategy": "mdp"}) == 1
    assert sample("argo_xapp_fallbacks_total", {"component": "synthesizer", "cause": "aborted"}) == 1
    assert sample("argo_xapp_fallbacks_total", {"component": "retriever", "cause": "store_error"}) == 1
    # Aborts are counted by the engine where they happen (a cancelled caller gets no answer), not from answers.
    assert sample("argo_xapp_llm_aborted_generations_total") == 0
    assert sample("argo_xapp_answers_total", {"rpc": "AnswerStream", "path": "template", "strategy": "mdp"}) == 1
    assert sample("argo_xapp_component_latency_seconds_count", {"component": "reason"}) == 2


def test_annotate_answer_puts_the_outcome_on_the_current_span(memory_tracing: InMemorySpanExporter) -> None:
    with MODULE_TRACER.start_as_current_span("argo.v1.ArgoService/Answer", kind=SpanKind.SERVER):
        annotate_answer(make_answer(elapsed_ms=1200.0, fallback_reason="synthesize: no time"))
    annotate_answer(make_answer())  # no current span: nothing to annotate, no error
    (span,) = memory_tracing.get_finished_spans()
    a = dict(span.attributes or {})
    assert a[attrs.PATH] == "mixed" and a[attrs.STRATEGY] == "mdp" and a[attrs.STEPS] == 2
    assert a[attrs.DEADLINE_MS] == 1000.0 and a[attrs.ELAPSED_MS] == 1200.0 and a[attrs.DEADLINE_MISSED] is True
    assert a[attrs.FALLBACK_REASON] == "synthesize: no time" and a[attrs.CHOICE] == 2
    assert a[attrs.GEN_AI_USAGE_INPUT_TOKENS] == 320 and a[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == 40
    assert a[attrs.GEN_AI_REQUEST_MODEL] == "qwen"


def test_record_step() -> None:
    metrics = Metrics()
    step = Step(
        action=Action.RETRIEVE,
        path=PathKind.TEMPLATE,
        progress_before=0,
        progress_after=0.3,
        latency_ms=5,
        timings_ms={"retriever": 4.0},
    )
    metrics.record_step(step)
    sample = metrics.registry.get_sample_value
    assert sample("argo_xapp_steps_total", {"action": "retrieve", "path": "template"}) == 1
    assert sample("argo_xapp_component_latency_seconds_count", {"component": "retriever"}) == 1


# --------------------------------------------------------------------------------------------------
# HTTP endpoints


async def _probe_http() -> dict[str, Any]:
    metrics = Metrics()
    health = HealthServicer()
    await health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    out: dict[str, Any] = {}
    async with HttpEndpoints(ready=grpc_health_ready(health), metrics=metrics, port=0, host="127.0.0.1") as http:
        assert http.port != 0
        base = f"http://127.0.0.1:{http.port}"
        async with aiohttp.ClientSession() as session:

            async def get(path: str) -> tuple[int, str, str]:
                async with session.get(base + path) as resp:
                    return resp.status, await resp.text(), resp.headers.get("Content-Type", "")

            out["alive"] = await get(ALIVE_PATH)
            out["ready_before"] = await get(READY_PATH)
            await health.set("", health_pb2.HealthCheckResponse.SERVING)
            out["ready_after"] = await get(READY_PATH)
            await health.enter_graceful_shutdown()
            out["ready_draining"] = await get(READY_PATH)
            out["metrics_before"] = await get(METRICS_PATH)
            metrics.record_answer(make_answer(path=PathKind.TEMPLATE), rpc="Answer")
            out["metrics_after"] = await get(METRICS_PATH)
            out["missing"] = await get("/nope")
    return out


def test_http_endpoints_alive_ready_and_metrics() -> None:
    out = asyncio.run(_probe_http())
    assert out["alive"][0] == 200
    assert out["ready_before"][0] == 503
    assert out["ready_after"][0] == 200
    assert out["ready_draining"][0] == 503
    assert out["missing"][0] == 404
    status, before, ctype = out["metrics_before"]
    assert status == 200 and ctype.startswith("text/plain") and "version=0.0.4" in ctype
    assert 'argo_xapp_answers_total{path="template",rpc="Answer",strategy="mdp"}' not in before
    after = out["metrics_after"][1]
    assert 'argo_xapp_answers_total{path="template",rpc="Answer",strategy="mdp"} 1.0' in after
    assert "argo_xapp_rpc_latency_seconds" in after and 'argo_xapp_llm_tokens_total{type="prompt"} 320.0' in after


def test_ready_check_errors_and_unregistered_services_mean_not_ready() -> None:
    async def run() -> list[int]:
        def broken() -> bool:
            raise RuntimeError("probe crashed")

        statuses = []
        for ready in (broken, grpc_health_ready(HealthServicer(), "argo.v1.unknown"), lambda: True):
            async with (
                HttpEndpoints(ready=ready, metrics=Metrics(), port=0, host="127.0.0.1") as http,
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{http.port}{READY_PATH}") as resp,
            ):
                statuses.append(resp.status)
        return statuses

    assert asyncio.run(run()) == [503, 503, 200]


def test_http_port_in_use_fails_loudly() -> None:
    async def run() -> None:
        async with HttpEndpoints(ready=lambda: True, metrics=Metrics(), port=0, host="127.0.0.1") as first:
            with pytest.raises(OSError):
                await HttpEndpoints(ready=lambda: True, metrics=Metrics(), port=first.port, host="127.0.0.1").start()

    asyncio.run(run())


def test_http_on_every_interface_serves_ipv4_and_ipv6_on_the_one_logged_port() -> None:
    # With port 0, an IPv4 and an IPv6 socket that each picked a port would leave the logged port dead on
    # one of them (the cause of a CI failure: the test read the IPv6 port and dialled 127.0.0.1).
    async def run() -> list[int]:
        statuses = []
        async with HttpEndpoints(ready=lambda: True, metrics=Metrics(), port=0) as http:
            hosts = ["127.0.0.1"] + (["[::1]"] if socket.has_ipv6 else [])
            async with aiohttp.ClientSession() as session:
                for host in hosts:
                    async with session.get(f"http://{host}:{http.port}{ALIVE_PATH}") as resp:
                        statuses.append(resp.status)
        return statuses

    assert set(asyncio.run(run())) == {200}
