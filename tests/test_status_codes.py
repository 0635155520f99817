"""Every error class of every ArgoService RPC gets the status code docs/api.md documents, with a message that
says what to fix, and the server records that same code (issue 15, defect 4). Cancelled calls, unary and
streamed, are recorded as CANCELLED, and the LLM generations they abort are counted with their tokens.

The table runs against a real server on a free port (template path, the session's built-in knowledge base,
the telemetry interceptor); the cancellation tests add the session's tiny vLLM engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from xapp._proto.argo.v1 import argo_pb2 as pb
from xapp.config import Settings
from xapp.server import limits, validation
from xapp.server.app import ArgoServer
from xapp.telemetry.interceptor import TelemetryInterceptor, _status_code
from xapp.telemetry.metrics import Metrics

SERVICE = "/argo.v1.ArgoService/"
REPLIES = {
    "Answer": pb.AnswerReply,
    "AnswerStream": pb.AnswerEvent,
    "Decompose": pb.DecomposeReply,
    "Retrieve": pb.RetrieveReply,
    "Synthesize": pb.AnswerReply,
}
INVALID, EXHAUSTED = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED
ZERO_WIDTH = "\u200b\ufeff\u200b"


# ------------------------------------------------------------------------------------------------ fast units


@pytest.mark.parametrize("text", ["", "  \n\t", ZERO_WIDTH, "\ufeff", " \u200b \u2060 ", "\x01\x02"])
def test_text_without_a_visible_character_is_blank(text: str) -> None:
    with pytest.raises(Exception, match="^question: must not be blank$"):
        validation.question(text, [], Settings())
    assert validation.question(f"{ZERO_WIDTH}E2?", [], Settings()).text  # one visible character is enough


def test_an_unknown_strategy_is_echoed_cut_short() -> None:
    with pytest.raises(Exception) as info:
        validation.strategy("s" * 5000)
    message = str(info.value)
    assert message.startswith("strategy: unknown strategy 'ssss") and "(5000 chars)" in message
    assert len(message) < 200 and "mdp" in message  # and it lists what is valid


def test_the_receive_limit_holds_the_largest_valid_request_and_not_much_more() -> None:
    settings = Settings()
    wide = "\U0001f600"  # 4 bytes in UTF-8: the worst case the limit is sized for
    steps, per_step = validation.MAX_HISTORY_STEPS, validation.MAX_PASSAGES_PER_STEP
    keys_chars = steps * validation.MAX_TIMINGS_PER_STEP * 2  # the timings' two-character names
    text_each = (validation.MAX_HISTORY_CHARS - keys_chars) // (steps * per_step)
    history = [
        pb.Step(
            action=pb.ACTION_RETRIEVE,
            path=pb.PATH_TEMPLATE,
            passages=[pb.Passage(text=wide * text_each, score=0.5) for _ in range(per_step)],
            sources=["" for _ in range(per_step)],
            timings_ms={f"{k:02d}": 1.5 for k in range(validation.MAX_TIMINGS_PER_STEP)},
            progress_before=0.1,
            progress_after=0.2,
            latency_ms=3.0,
            usage=pb.Usage(prompt_tokens=2**30, completion_tokens=2**30, ttft_ms=1.0, aborted=True),
        )
        for _ in range(steps)
    ]
    largest = pb.SynthesizeRequest(
        question=wide * settings.max_question_chars,
        options=[wide * settings.max_option_chars] * settings.max_options,
        history=history,
        deadline_ms=2**62,
    )
    validation.question(largest.question, list(largest.options), settings)
    validation.history(list(largest.history), settings)  # valid …
    size = largest.ByteSize()
    assert size <= limits.largest_request_bytes(settings) < limits.max_request_bytes(settings)  # … and it fits
    assert limits.max_request_bytes(settings) < 1.5 * size  # headroom, not an open door
    assert limits.max_request_bytes(settings) < 1 << 20  # far below gRPC's 4 MiB default
    over = validation.MAX_HISTORY_CHARS + 1
    with pytest.raises(Exception, match=r"^history: holds \d+ characters of text; at most 100000"):
        validation.history([pb.Step(action=pb.ACTION_RETRIEVE, query="q" * over)], settings)


class _Context:
    def __init__(self, code: Any = None) -> None:
        self._code = code

    def code(self) -> Any:
        return self._code


@pytest.mark.parametrize(
    ("context_code", "exc", "expected"),
    [
        (None, None, grpc.StatusCode.OK),
        (None, asyncio.CancelledError(), grpc.StatusCode.CANCELLED),
        # A streamed call whose caller went away is closed at its yield: GeneratorExit, not an error.
        (None, GeneratorExit(), grpc.StatusCode.CANCELLED),
        (grpc.StatusCode.INVALID_ARGUMENT, grpc.aio.AbortError(), grpc.StatusCode.INVALID_ARGUMENT),
        (None, RuntimeError("boom"), grpc.StatusCode.UNKNOWN),
    ],
)
def test_the_recorded_code(context_code: Any, exc: BaseException | None, expected: grpc.StatusCode) -> None:
    assert _status_code(_Context(context_code), exc) is expected


# ------------------------------------------------------------------------------------------------ the server


@dataclass
class Served:
    server: ArgoServer
    metrics: Metrics
    spans: InMemorySpanExporter
    run: Callable[..., Any]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def recorded(self, rpc: str, code: grpc.StatusCode) -> float:
        value = self.metrics.registry.get_sample_value("argo_xapp_rpc_requests_total", {"rpc": rpc, "code": code.name})
        return value or 0.0


@contextlib.contextmanager
def serve(settings: Settings, pipeline: Any, run: Callable[..., Any], *, attach: bool = True) -> Iterator[Served]:
    metrics = Metrics()
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))

    async def start() -> ArgoServer:
        server = ArgoServer(settings, interceptors=[TelemetryInterceptor(metrics, tracer_provider=provider)])
        await server.start(0, "127.0.0.1")
        if attach:
            await server.attach(pipeline)
        return server

    server = run(start())
    try:
        yield Served(server, metrics, spans, run)
    finally:
        run(server.stop(0))


@pytest.fixture(scope="module")
def template_settings(builtin_kb_settings: Settings) -> Settings:
    return builtin_kb_settings.replace(strategy="template")


@pytest.fixture(scope="module")
def template_pipeline(template_settings: Settings, builtin_kb: Any) -> Any:
    from xapp.pipeline.runner import ArgoPipeline

    pipeline = ArgoPipeline(template_settings, kb=builtin_kb, llm=None)
    pipeline.calibrate()
    return pipeline


@pytest.fixture(scope="module")
def served(template_settings: Settings, template_pipeline: Any, run: Callable[..., Any]) -> Iterator[Served]:
    with serve(template_settings, template_pipeline, run) as s:
        yield s


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and not predicate():
        time.sleep(0.01)
    return predicate()


def _serialize(message: Any) -> bytes:
    return message if isinstance(message, bytes) else message.SerializeToString()


def call(target: str, rpc: str, request: Any, timeout: float = 5.0) -> list[Any]:
    """One call over a fresh channel; the replies (one, or the stream's events)."""
    with grpc.insecure_channel(target) as channel:
        if rpc == "AnswerStream":
            stream = channel.unary_stream(
                SERVICE + rpc, request_serializer=_serialize, response_deserializer=REPLIES[rpc].FromString
            )
            return list(stream(request, timeout=timeout))
        unary = channel.unary_unary(
            SERVICE + rpc, request_serializer=_serialize, response_deserializer=REPLIES[rpc].FromString
        )
        return [unary(request, timeout=timeout)]


def _question_cases(rpc: str, make: Callable[..., Any]) -> list[tuple[str, Any, grpc.StatusCode, str]]:
    return [
        (rpc, make(question=""), INVALID, "question: must not be blank"),
        (rpc, make(question=" \n\t "), INVALID, "question: must not be blank"),
        (rpc, make(question=ZERO_WIDTH), INVALID, "question: must not be blank"),
        (rpc, make(question="x" * 2001), INVALID, "question: is 2001 characters; at most 2000 are allowed"),
        (rpc, make(question="q", options=["o"] * 9), INVALID, "options: has 9 entries; at most 8 are allowed"),
        (rpc, make(question="q", options=["a", "\u200b"]), INVALID, "options[1]: must not be blank"),
        (rpc, make(question="q", options=["a", "b" * 501]), INVALID, "options[1]: is 501 characters"),
        (rpc, make(question="q", deadline_ms=-5), INVALID, "deadline_ms: must be >= 0 (0 means the server default)"),
        (rpc, b"\xff\xff\xff", INVALID, f"request: not a valid argo.v1.{make.__name__} message"),
    ]


def _history_cases(rpc: str, make: Callable[..., Any]) -> list[tuple[str, Any, grpc.StatusCode, str]]:
    return [
        (rpc, make(question="q", history=[pb.Step()]), INVALID, "history[0].action: must be RETRIEVE, REASON"),
        (rpc, make(question="q", history=[pb.Step()] * 33), INVALID, "history: has 33 steps; at most 32"),
        (
            rpc,
            make(question="q", history=[pb.Step(action=pb.ACTION_REASON, query="r" * 8000)] * 20),
            INVALID,
            "history: holds 160000 characters of text; at most 100000 are allowed",
        ),
    ]


CASES: list[tuple[str, Any, grpc.StatusCode, str]] = [
    *_question_cases("Answer", pb.AnswerRequest),
    *_question_cases("AnswerStream", pb.AnswerRequest),
    *_question_cases("Decompose", pb.DecomposeRequest),
    *_question_cases("Synthesize", pb.SynthesizeRequest),
    *_history_cases("Decompose", pb.DecomposeRequest),
    *_history_cases("Synthesize", pb.SynthesizeRequest),
    *(
        (rpc, pb.AnswerRequest(question="q", strategy=name), INVALID, f"strategy: unknown strategy '{name[:40]}")
        for rpc in ("Answer", "AnswerStream")
        for name in ("greedy", "z" * 5000)
    ),
    ("Retrieve", pb.RetrieveRequest(query=""), INVALID, "query: must not be blank"),
    ("Retrieve", pb.RetrieveRequest(query=ZERO_WIDTH), INVALID, "query: must not be blank"),
    ("Retrieve", pb.RetrieveRequest(query="q" * 2001), INVALID, "query: is 2001 characters"),
    ("Retrieve", pb.RetrieveRequest(query="E2", top_k=500), INVALID, "top_k: must be between 0 (server default)"),
    ("Retrieve", pb.RetrieveRequest(query="E2", deadline_ms=-1), INVALID, "deadline_ms: must be >= 0"),
    ("Retrieve", b"\x0a\xff", INVALID, "request: not a valid argo.v1.RetrieveRequest message"),
    # Larger than any valid request: gRPC refuses it before it is parsed.
    *(
        (rpc, make(**{field: "x" * 1_000_000}), EXHAUSTED, "SERVER: Received message larger than max (1000")
        for rpc, make, field in (
            ("Answer", pb.AnswerRequest, "question"),
            ("AnswerStream", pb.AnswerRequest, "question"),
            ("Decompose", pb.DecomposeRequest, "question"),
            ("Synthesize", pb.SynthesizeRequest, "question"),
            ("Retrieve", pb.RetrieveRequest, "query"),
        )
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(("rpc", "request_", "code", "message"), CASES, ids=lambda v: str(v)[:40])
def test_each_error_class_gets_its_documented_code_and_says_what_to_fix(
    served: Served, rpc: str, request_: Any, code: grpc.StatusCode, message: str
) -> None:
    before = served.recorded(rpc, code)
    with pytest.raises(grpc.RpcError) as info:
        call(served.target, rpc, request_)
    assert info.value.code() == code, info.value.details()
    details = info.value.details() or ""
    assert details.startswith(message), details
    assert len(details) < 300, details  # echoed values are cut short
    if code is not EXHAUSTED:  # refused by gRPC before any handler: no RPC to record
        # The interceptor records the call as it ends, which may be just after the caller has its reply.
        assert wait_until(lambda: served.recorded(rpc, code) == before + 1), served.recorded(rpc, code)


@pytest.mark.slow
@pytest.mark.parametrize("deadline_ms", [1, 2, 5, 10, 15])
def test_retrieve_with_a_tiny_deadline_is_ok_with_no_passages_and_says_why(served: Served, deadline_ms: int) -> None:
    (reply,) = call(served.target, "Retrieve", pb.RetrieveRequest(query="E2 interface", deadline_ms=deadline_ms))
    assert not reply.passages
    assert reply.fallback_reason.startswith("retriever: "), reply.fallback_reason
    assert "ms" in reply.fallback_reason and reply.elapsed_ms < 100, reply


@pytest.mark.slow
def test_retrieve_with_tiny_deadlines_from_concurrent_callers_is_always_ok(served: Served) -> None:
    # 16 callers at once on a 2-core machine: the search's thread and the event loop compete, and a reply may
    # come back after the deadline the pipeline planned with; it is still an OK reply without passages.
    def one(k: int) -> tuple[grpc.StatusCode, str]:
        try:
            (reply,) = call(served.target, "Retrieve", pb.RetrieveRequest(query=f"E2 node {k}", deadline_ms=1 + k % 15))
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or ""
        return grpc.StatusCode.OK, reply.fallback_reason

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(one, range(64)))
    codes = [code for code, _ in outcomes]
    # No slot free and no time to wait is RESOURCE_EXHAUSTED (overloaded, documented); never DEADLINE_EXCEEDED.
    assert set(codes) <= {grpc.StatusCode.OK, EXHAUSTED}, outcomes
    assert codes.count(grpc.StatusCode.OK) >= 16, outcomes


@pytest.mark.slow
def test_a_normal_request_to_each_rpc_is_ok(served: Served) -> None:
    (ret,) = call(served.target, "Retrieve", pb.RetrieveRequest(query="E2 interface", deadline_ms=1000))
    assert ret.passages and not ret.fallback_reason
    for rpc, request in (
        ("Answer", pb.AnswerRequest(question="What does E2 connect?")),
        ("Decompose", pb.DecomposeRequest(question="What does E2 connect?")),
        ("Synthesize", pb.SynthesizeRequest(question="What does E2 connect?", history=[ret.step])),
    ):
        assert call(served.target, rpc, request), rpc
    events = call(served.target, "AnswerStream", pb.AnswerRequest(question="What does E2 connect?"))
    assert events[-1].WhichOneof("event") == "answer"
    assert served.recorded("Retrieve", grpc.StatusCode.OK) >= 1


@pytest.mark.slow
def test_overloaded_is_resource_exhausted_and_says_so(served: Served) -> None:
    # All max_in_flight_requests taken: refused at once, before any work, by the in-flight cap.
    cap = served.server.in_flight_limit
    cap.in_flight += cap.limit
    try:
        for rpc in REPLIES:
            request = pb.RetrieveRequest(query="E2") if rpc == "Retrieve" else REPLIES_REQUEST[rpc](question="E2?")
            with pytest.raises(grpc.RpcError) as info:
                call(served.target, rpc, request)
            assert info.value.code() == EXHAUSTED
            assert info.value.details().startswith("server busy: "), info.value.details()
            assert "max_in_flight_requests" in info.value.details()
            assert wait_until(lambda: served.recorded(rpc, EXHAUSTED) >= 1)  # noqa: B023 (waited for here)
    finally:
        cap.in_flight -= cap.limit
    # Every pipeline slot (max_concurrency) held, and a deadline too short to wait for one.
    admission = served.server.servicer.admission

    async def hold(seconds: float) -> None:
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(admission.limit):
                await stack.enter_async_context(admission.slot(time.monotonic() + 5))
            await asyncio.sleep(seconds)

    holder = threading.Thread(target=served.run, args=(hold(1.0),))
    holder.start()
    try:
        assert wait_until(lambda: admission.in_flight == admission.limit)
        with pytest.raises(grpc.RpcError) as info:
            call(served.target, "Answer", pb.AnswerRequest(question="E2?", deadline_ms=40))
        assert info.value.code() == EXHAUSTED
        assert info.value.details().startswith(f"all {admission.limit} request slots are busy"), info.value.details()
    finally:
        holder.join(5)
    assert call(served.target, "Answer", pb.AnswerRequest(question="E2?"))  # and then it answers


REPLIES_REQUEST = {
    "Answer": pb.AnswerRequest,
    "AnswerStream": pb.AnswerRequest,
    "Decompose": pb.DecomposeRequest,
    "Synthesize": pb.SynthesizeRequest,
}


@pytest.mark.slow
def test_starting_is_unavailable_and_says_so(
    template_settings: Settings, template_pipeline: Any, run: Callable[..., Any]
) -> None:
    with serve(template_settings, template_pipeline, run, attach=False) as bare:
        for rpc in REPLIES:
            request = pb.RetrieveRequest(query="E2") if rpc == "Retrieve" else REPLIES_REQUEST[rpc](question="E2?")
            with pytest.raises(grpc.RpcError) as info:
                call(bare.target, rpc, request)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert info.value.details().startswith("starting: "), info.value.details()


# ------------------------------------------------------------------------------------------------ cancellations

QUESTION = "What does the E2 interface connect in O-RAN?"


@pytest.fixture(scope="module")
def llm_served(
    builtin_kb_settings: Settings, builtin_kb: Any, llm_engine: Any, tiny_w8a8_dir: Any, run: Callable[..., Any]
) -> Iterator[Served]:
    from xapp.pipeline.runner import ArgoPipeline

    # Short generations, as tests/test_server.py: the tiny model's LLM steps must fit a 1 s budget to be tried.
    settings = builtin_kb_settings.replace(
        llm=True, model=str(tiny_w8a8_dir), max_tokens_decompose=8, max_tokens_reason=12, max_tokens_synthesize=16
    )

    async def build() -> Any:
        pipeline = ArgoPipeline(settings, kb=builtin_kb, llm=llm_engine)
        pipeline.calibrate()
        await pipeline.calibrate_llm()
        return pipeline

    pipeline = run(build())
    with serve(settings, pipeline, run) as s:
        s.metrics.watch_engine(llm_engine)  # as the servicer does for the process-wide metrics
        yield s
    assert wait_until(lambda: llm_engine.num_unfinished_requests() == 0)


def _aborts(served: Served) -> tuple[float, float]:
    sample = served.metrics.registry.get_sample_value
    return (
        sample("argo_xapp_llm_aborted_generations_total") or 0.0,
        sample("argo_xapp_llm_aborted_tokens_total") or 0.0,
    )


def _span(served: Served, rpc: str) -> Any:
    return [s for s in served.spans.get_finished_spans() if s.name.endswith("/" + rpc)][-1]


@pytest.mark.slow
def test_a_cancelled_stream_is_recorded_cancelled_and_its_generation_counted(llm_served: Served) -> None:
    aborted, tokens = _aborts(llm_served)

    async def main() -> bool:
        async with grpc.aio.insecure_channel(llm_served.target) as channel:
            stream = channel.unary_stream(
                SERVICE + "AnswerStream",
                request_serializer=_serialize,
                response_deserializer=pb.AnswerEvent.FromString,
            )
            call = stream(pb.AnswerRequest(question=QUESTION, strategy="fixed-k", deadline_ms=1000), timeout=5)
            async for event in call:
                if event.WhichOneof("event") == "token":  # the LLM is writing: walk away mid-generation
                    return bool(call.cancel())
        return False

    assert asyncio.run(main()), "no token event: the LLM did not write the answer"
    assert wait_until(lambda: llm_served.recorded("AnswerStream", grpc.StatusCode.CANCELLED) == 1)
    assert llm_served.recorded("AnswerStream", grpc.StatusCode.UNKNOWN) == 0
    span = _span(llm_served, "AnswerStream")
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.CANCELLED.value[0]
    assert span.status.status_code.name == "UNSET"  # the caller's doing, not an error
    assert wait_until(lambda: _aborts(llm_served)[0] >= aborted + 1)
    assert _aborts(llm_served)[1] >= tokens + 1  # it had written at least the token we saw


@pytest.mark.slow
def test_a_cancelled_unary_call_is_recorded_cancelled_and_its_generation_counted(
    llm_served: Served, llm_engine: Any
) -> None:
    aborted, _ = _aborts(llm_served)

    async def main() -> bool:
        async with grpc.aio.insecure_channel(llm_served.target) as channel:
            unary = channel.unary_unary(
                SERVICE + "Answer", request_serializer=_serialize, response_deserializer=pb.AnswerReply.FromString
            )
            for _ in range(5):
                call = unary(pb.AnswerRequest(question=QUESTION, strategy="always-reason", deadline_ms=1000), timeout=5)
                while llm_engine.num_unfinished_requests() == 0 and not call.done():
                    await asyncio.sleep(0.001)
                if not call.done() and call.cancel():
                    return True
        return False

    assert asyncio.run(main()), "no call was still in the engine when cancelled"
    assert wait_until(lambda: llm_served.recorded("Answer", grpc.StatusCode.CANCELLED) == 1)
    assert llm_served.recorded("Answer", grpc.StatusCode.UNKNOWN) == 0
    assert _span(llm_served, "Answer").attributes["rpc.grpc.status_code"] == grpc.StatusCode.CANCELLED.value[0]
    assert wait_until(lambda: _aborts(llm_served)[0] >= aborted + 1)


@pytest.mark.slow
def test_a_deadline_abort_is_counted_with_its_tokens(llm_engine: Any, run: Callable[..., Any]) -> None:
    metrics = Metrics()
    metrics.watch_engine(llm_engine)
    sample = metrics.registry.get_sample_value
    before = (sample("argo_xapp_llm_aborted_generations_total"), sample("argo_xapp_llm_aborted_tokens_total"))
    messages = [{"role": "user", "content": "Describe the O-RAN architecture in detail."}]
    gen = run(llm_engine.generate(messages, max_tokens=1500, deadline=time.monotonic() + 0.3))
    assert gen.aborted and gen.completion_tokens > 0
    assert sample("argo_xapp_llm_aborted_generations_total") == before[0] + 1
    assert sample("argo_xapp_llm_aborted_tokens_total") == before[1] + gen.completion_tokens
