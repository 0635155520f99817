"""End to end: an Answer call with a W3C traceparent through the real gRPC server and the real pipeline
(Chroma with the shipped knowledge base) produces, at a real OTLP receiver, spans in the caller's trace,
one per component call, with the attributes an operator reads; the metrics endpoint shows the request.

The template-path test needs no LLM; the LLM-path test uses the session's vLLM engine (conftest.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from otlp_receiver import OtlpReceiver, ReceivedSpan, ancestors

from xapp._proto.argo.v1 import argo_pb2 as pb
from xapp._proto.argo.v1 import argo_pb2_grpc as pb_grpc
from xapp.bench.tracer_switch import setup_tracing
from xapp.config import Settings
from xapp.server.app import ArgoServer
from xapp.server.http import METRICS_PATH, http_extension
from xapp.store.knowledge_base import KnowledgeBase
from xapp.telemetry import attrs
from xapp.telemetry.interceptor import TelemetryInterceptor
from xapp.telemetry.metrics import Metrics, default_metrics

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
QUESTION = "What does the E2 interface connect in O-RAN?"
SERVER_SPAN = "argo.v1.ArgoService/Answer"


@pytest.fixture(scope="module")
def kb_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    # Room in the deadline so that a loaded test machine still runs the steps whose spans are checked.
    return Settings(data_dir=tmp_path_factory.mktemp("otel-e2e"), llm=False, max_deadline_ms=5000).validate()


@pytest.fixture(scope="module")
def knowledge_base(kb_settings: Settings) -> KnowledgeBase:
    kb = KnowledgeBase.open(kb_settings)
    kb.ensure_builtin()
    kb.embedder.warm_up()  # as build_pipeline does: the first embedding is slow
    return kb


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


async def _serve_and_ask(
    settings: Settings, pipeline: Any, request: pb.AnswerRequest, metrics: Metrics
) -> tuple[pb.AnswerReply, str]:
    """Real server (interceptor + HTTP endpoints) on free ports; one Answer call; the metrics text after."""
    server = ArgoServer(settings, interceptors=[TelemetryInterceptor(metrics)])
    await server.start(0, "127.0.0.1")
    await server.attach(pipeline)
    try:
        http = http_extension(settings, metrics=metrics, port=0, host="127.0.0.1")(server)
        async with http, grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.ArgoServiceStub(channel)
            reply = await stub.Answer(request, metadata=(("traceparent", TRACEPARENT),), timeout=10)
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{http.port}{METRICS_PATH}") as resp,
            ):
                text = await resp.text()
    finally:
        await server.stop(0)
    return reply, text


def _check_trace(spans: list[ReceivedSpan], reply: pb.AnswerReply) -> dict[str, list[ReceivedSpan]]:
    """Everything in the caller's trace, chained to the caller's span; one span per component call."""
    assert spans, "no spans received"
    assert {s.trace_id for s in spans} == {CALLER_TRACE}
    (server,) = [s for s in spans if s.name == SERVER_SPAN]
    assert server.kind == 2 and server.parent_span_id == CALLER_SPAN
    for s in spans:
        if s is not server:
            chain = ancestors(s, spans)
            assert chain[-2:] == [server.span_id, CALLER_SPAN], f"{s.name} is not under the server span"
    names = Counter(s.name for s in spans)
    assert set(names) <= {SERVER_SPAN, *attrs.COMPONENT_SPANS}, names

    steps = list(reply.steps)
    retrieves = sum(st.action == pb.ACTION_RETRIEVE for st in steps)
    reasons = sum(st.action == pb.ACTION_REASON for st in steps)
    assert names[attrs.SPAN_RETRIEVE] == retrieves
    assert names[attrs.SPAN_DECOMPOSE] == retrieves  # a sub-query for each retrieval
    assert names[attrs.SPAN_REASON] == reasons
    assert names[attrs.SPAN_SYNTHESIZE] == 1
    # The policy decides before each step, and once more to stop unless the step cap or the budget ended it.
    assert len(steps) <= names[attrs.SPAN_POLICY] <= len(steps) + 1

    # The outcome is on the server span, as the reply says it.
    a = server.attributes
    assert a[attrs.RPC_SYSTEM] == "grpc" and a[attrs.RPC_METHOD] == "Answer" and a[attrs.RPC_GRPC_STATUS_CODE] == 0
    assert a[attrs.PATH] == pb.Path.Name(reply.path).removeprefix("PATH_").lower()
    assert a[attrs.STRATEGY] == reply.strategy and a[attrs.STEPS] == len(steps)
    assert a[attrs.DEADLINE_MS] == pytest.approx(reply.deadline_ms)
    assert a.get(attrs.FALLBACK_REASON, "") == reply.fallback_reason
    assert server.resource["service.name"] == "argo-xapp"
    # Privacy by default (trace_text off): the question's length, never its text nor the sub-queries'.
    assert a[attrs.QUESTION_CHARS] == len(QUESTION) and attrs.QUESTION not in a and attrs.SUBQUERIES not in a
    assert len(a[attrs.SUBQUERIES_CHARS]) == retrieves
    texts = {step.query for step in reply.steps if step.query} | {QUESTION}
    for s in spans:
        for key, value in s.attributes.items():
            assert not any(t in str(value) for t in texts), (s.name, key, value)

    by_name: dict[str, list[ReceivedSpan]] = {}
    for s in spans:
        by_name.setdefault(s.name, []).append(s)
    for s in by_name[attrs.SPAN_POLICY]:
        assert s.attributes[attrs.STRATEGY] == reply.strategy
        assert s.attributes[attrs.ACTION] in ("retrieve", "reason", "terminate")
    for s in by_name.get(attrs.SPAN_RETRIEVE, []):
        assert s.attributes[attrs.DB_SYSTEM] == attrs.DB_SYSTEM_CHROMA
        assert s.attributes[attrs.RETRIEVAL_TOP_K] >= 1 and s.attributes[attrs.RETRIEVAL_HITS] >= 1
    for s in by_name.get(attrs.SPAN_REASON, []):
        assert s.attributes[attrs.PROGRESS_AFTER] > s.attributes[attrs.PROGRESS_BEFORE]
    (synth,) = by_name[attrs.SPAN_SYNTHESIZE]
    assert synth.attributes[attrs.PATH] in ("llm", "template")
    assert attrs.BUDGET_REMAINING_MS in synth.attributes
    return by_name


def test_answer_with_traceparent_yields_component_spans_in_callers_trace_template_path(
    kb_settings: Settings, knowledge_base: KnowledgeBase, receiver: OtlpReceiver
) -> None:
    import asyncio

    from xapp.pipeline.runner import ArgoPipeline

    handle = setup_tracing(kb_settings.replace(otlp_endpoint=receiver.endpoint), environ={})
    # The servicer records answers in the process-wide metrics; the endpoint serves those.
    metrics = default_metrics()
    before = {key: _sample(metrics, *key) for key in _KEYS}
    try:
        pipeline = ArgoPipeline(kb_settings, kb=knowledge_base, llm=None)
        request = pb.AnswerRequest(question=QUESTION, strategy="always-retrieve", deadline_ms=5000)
        reply, metrics_text = asyncio.run(_serve_and_ask(kb_settings, pipeline, request, metrics))
    finally:
        assert handle.shutdown(timeout_s=10) is True  # the flush on shutdown delivers the batch
    spans = receiver.wait_for(lambda s: any(x.name == SERVER_SPAN for x in s), timeout=5)

    assert reply.path == pb.PATH_TEMPLATE and len(reply.steps) >= 1
    by_name = _check_trace(spans, reply)
    assert attrs.SPAN_GENERATE not in by_name  # no LLM on this path
    assert by_name[attrs.SPAN_SYNTHESIZE][0].attributes[attrs.PATH] == "template"

    served = _parse(metrics_text)
    for key, value in before.items():
        assert served.get(key, 0.0) == value + 1, key


_KEYS = [
    ("argo_xapp_rpc_requests_total", (("code", "OK"), ("rpc", "Answer"))),
    ("argo_xapp_answers_total", (("path", "template"), ("rpc", "Answer"), ("strategy", "always-retrieve"))),
    ("argo_xapp_component_latency_seconds_count", (("component", "synthesizer"),)),
]


def _sample(metrics: Metrics, name: str, labels: tuple[tuple[str, str], ...]) -> float:
    return metrics.registry.get_sample_value(name, dict(labels)) or 0.0


def _parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.slow
def test_answer_with_traceparent_yields_llm_generation_spans(
    knowledge_base: KnowledgeBase,
    kb_settings: Settings,
    tiny_w8a8_dir: Path,
    llm_engine: Any,
    run: Any,
    receiver: OtlpReceiver,
) -> None:
    from xapp.pipeline.runner import ArgoPipeline

    # A generous deadline: this test is about the spans of LLM calls, not about fitting them in 1 s on CPU.
    settings = kb_settings.replace(
        llm=True,
        model=str(tiny_w8a8_dir),
        max_tokens_reason=8,
        max_tokens_synthesize=8,
        max_tokens_decompose=8,
        max_deadline_ms=10_000,
        llm_open_answers=True,  # the question is open: the LLM must write the answer for its spans to show
    )
    handle = setup_tracing(settings.replace(otlp_endpoint=receiver.endpoint), environ={})
    try:
        pipeline = ArgoPipeline(settings, kb=knowledge_base, llm=llm_engine)
        request = pb.AnswerRequest(question=QUESTION, strategy="fixed-k", deadline_ms=10_000)
        reply, _ = run(_serve_and_ask(settings, pipeline, request, Metrics()))
    finally:
        assert handle.shutdown(timeout_s=10) is True
    spans = receiver.wait_for(lambda s: any(x.name == SERVER_SPAN for x in s), timeout=5)
    spans = [s for s in spans if s.trace_id == CALLER_TRACE]
    by_name = _check_trace(spans, reply)

    generations = by_name.get(attrs.SPAN_GENERATE, [])
    assert generations, f"no LLM generation in the trace (path {reply.path}, fallback {reply.fallback_reason!r})"
    # One gen_ai.generate span per LLM call: each step that used the LLM, and the synthesis if it did.
    synthesis_tokens = reply.prompt_tokens - sum(st.usage.prompt_tokens for st in reply.steps)
    llm_calls = sum(st.usage.prompt_tokens > 0 for st in reply.steps) + (synthesis_tokens > 0)
    assert sum(g.attributes[attrs.GEN_AI_USAGE_INPUT_TOKENS] > 0 for g in generations) == llm_calls
    parents = {s.span_id: s.name for s in spans}
    for g in generations:
        assert parents[g.parent_span_id] in (attrs.SPAN_DECOMPOSE, attrs.SPAN_REASON, attrs.SPAN_SYNTHESIZE)
        assert g.attributes[attrs.GEN_AI_REQUEST_MODEL]
        assert g.attributes[attrs.GEN_AI_USAGE_INPUT_TOKENS] > 0
        assert attrs.GEN_AI_USAGE_OUTPUT_TOKENS in g.attributes and attrs.GEN_AI_TTFT in g.attributes
        assert isinstance(g.attributes[attrs.ABORTED], bool)
    total_in = sum(g.attributes[attrs.GEN_AI_USAGE_INPUT_TOKENS] for g in generations)
    assert total_in == reply.prompt_tokens
