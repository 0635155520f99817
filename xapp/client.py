"""A small Python client of argo.v1.ArgoService for other xApps.

    from xapp.client import ArgoClient, SyncArgoClient

    async with ArgoClient("argo-xapp.ricxapp:50051") as argo:
        reply = await argo.answer("What does the E2 interface connect?", deadline_ms=800)
        print(reply.answer, reply.path, reply.fallback_reason)

    with SyncArgoClient("localhost:50051") as argo:
        print(argo.answer("Which RIC hosts rApps?", options=["near-RT RIC", "non-RT RIC"]).choice)

Every call carries a gRPC deadline (``timeout`` seconds; by default ``deadline_ms`` when given, else the
client's ``default_timeout_s``) and the W3C trace context of the current OpenTelemetry context
(``traceparent``/``tracestate`` metadata), so the server's spans join the caller's trace.

Both clients have every RPC: ``answer``, ``answer_stream``, ``decompose``, ``retrieve``, ``synthesize`` and
``health``. ``omit_passages=True`` leaves the passages' text out of an answer's steps (~2 KB replies instead
of ~20 KB). ``strategy`` takes a :class:`Strategy` or its name.

This module needs only grpcio, grpcio-health-checking, protobuf and opentelemetry-api: ``pip install
argo-xapp`` installs just those (the server is the ``cpu`` / ``gpu`` / ``server`` extra), see docs/api.md.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Iterator, Sequence
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from xapp._proto.argo.v1 import argo_pb2 as pb
from xapp._proto.argo.v1 import argo_pb2_grpc as pb_grpc
from xapp.telemetry.propagation import inject_metadata

DEFAULT_TIMEOUT_S = 1.0  # the server's default deadline; near-RT callers should always send one


class Strategy(str, enum.Enum):
    """How the ARGO loop chooses its steps (``AnswerRequest.strategy``, sent by name)."""

    DEFAULT = ""  # the server's configured strategy
    MDP = "mdp"  # the MDP policy: retrieve below θ_cont, reason up to θ*, then answer (ARGO)
    FIXED_K = "fixed-k"  # retrieve exactly fixed_k times, then answer (classic RAG)
    ALWAYS_REASON = "always-reason"  # reason every step until progress reaches θ*
    ALWAYS_RETRIEVE = "always-retrieve"  # retrieve every step until progress reaches θ*
    RANDOM = "random"  # a random action each step (seeded), a baseline
    TEMPLATE = "template"  # no LLM: retrieval and template answers only


_PATHS = {pb.PATH_LLM: "llm", pb.PATH_TEMPLATE: "template", pb.PATH_MIXED: "mixed", pb.PATH_UNSPECIFIED: ""}
_ACTIONS = {pb.ACTION_RETRIEVE: "retrieve", pb.ACTION_REASON: "reason", pb.ACTION_TERMINATE: "terminate"}


def _timeout(timeout: float | None, deadline_ms: int, default: float) -> float:
    if timeout is not None:
        return timeout
    return deadline_ms / 1000.0 if deadline_ms > 0 else default


def answer_request(
    question: str,
    options: Sequence[str] = (),
    strategy: Strategy | str = "",
    deadline_ms: int = 0,
    omit_passages: bool = False,
) -> pb.AnswerRequest:
    return pb.AnswerRequest(
        question=question,
        options=list(options),
        strategy=Strategy(strategy).value if isinstance(strategy, Strategy) else strategy,
        deadline_ms=deadline_ms,
        omit_passages=omit_passages,
    )


def step_to_dict(step: pb.Step) -> dict[str, Any]:
    return {
        "action": _ACTIONS.get(step.action, ""),
        "path": _PATHS.get(step.path, ""),
        "query": step.query,
        "sources": list(step.sources),
        "progress_before": round(step.progress_before, 4),
        "progress_after": round(step.progress_after, 4),
        "latency_ms": round(step.latency_ms, 1),
        "prompt_tokens": step.usage.prompt_tokens,
        "completion_tokens": step.usage.completion_tokens,
        "ttft_ms": round(step.usage.ttft_ms, 1),
        "aborted": step.usage.aborted,
        "fallback_reason": step.fallback_reason or None,
        "timings_ms": {k: round(v, 1) for k, v in sorted(step.timings_ms.items())},
    }


def reply_to_dict(reply: pb.AnswerReply) -> dict[str, Any]:
    """The reply in the shape of ``xapp.domain.Answer.to_dict`` (what ``argo-xapp ask`` prints locally)."""
    return {
        "answer": reply.answer,
        "choice": reply.choice or None,
        "path": _PATHS.get(reply.path, ""),
        "fallback_reason": reply.fallback_reason or None,
        "strategy": reply.strategy,
        "model": reply.model,
        "option_probabilities": [round(p, 4) for p in reply.option_probabilities],
        "trimmed": reply.trimmed,
        "fallbacks": [{"component": f.component, "cause": f.cause} for f in reply.fallbacks],
        "deadline_ms": round(reply.deadline_ms, 1),
        "requested_deadline_ms": reply.requested_deadline_ms,
        "deadline_note": reply.deadline_note or None,
        "elapsed_ms": round(reply.elapsed_ms, 1),
        "sources": list(reply.sources),
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "timings_ms": {k: round(v, 1) for k, v in sorted(reply.timings_ms.items())},
        "steps": [step_to_dict(s) for s in reply.steps],
    }


class ArgoClient:
    """asyncio client (grpc.aio). Use as ``async with`` or call ``close()``."""

    def __init__(
        self,
        target: str,
        *,
        default_timeout_s: float = DEFAULT_TIMEOUT_S,
        channel: grpc.aio.Channel | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.target = target
        self.default_timeout_s = default_timeout_s
        self._own_channel = channel is None
        self.channel = channel or grpc.aio.insecure_channel(target, options=list(options))
        self.stub = pb_grpc.ArgoServiceStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)

    async def __aenter__(self) -> ArgoClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_channel:
            await self.channel.close()

    async def answer(
        self,
        question: str,
        options: Sequence[str] = (),
        *,
        strategy: Strategy | str = "",
        deadline_ms: int = 0,
        omit_passages: bool = False,
        timeout: float | None = None,
    ) -> pb.AnswerReply:
        return await self.stub.Answer(
            answer_request(question, options, strategy, deadline_ms, omit_passages),
            timeout=_timeout(timeout, deadline_ms, self.default_timeout_s),
            metadata=inject_metadata(),
        )

    async def answer_stream(
        self,
        question: str,
        options: Sequence[str] = (),
        *,
        strategy: Strategy | str = "",
        deadline_ms: int = 0,
        omit_passages: bool = False,
        timeout: float | None = None,
    ) -> AsyncIterator[pb.AnswerEvent]:
        call = self.stub.AnswerStream(
            answer_request(question, options, strategy, deadline_ms, omit_passages),
            timeout=_timeout(timeout, deadline_ms, self.default_timeout_s),
            metadata=inject_metadata(),
        )
        try:
            async for event in call:
                yield event
        finally:
            call.cancel()  # no-op when the stream ended; stops the server's work when the caller breaks off

    async def decompose(
        self,
        question: str,
        history: Sequence[pb.Step] = (),
        options: Sequence[str] = (),
        *,
        deadline_ms: int = 0,
        timeout: float | None = None,
    ) -> pb.DecomposeReply:
        req = pb.DecomposeRequest(
            question=question, options=list(options), history=list(history), deadline_ms=deadline_ms
        )
        return await self.stub.Decompose(
            req, timeout=_timeout(timeout, deadline_ms, self.default_timeout_s), metadata=inject_metadata()
        )

    async def retrieve(
        self, query: str, *, top_k: int = 0, deadline_ms: int = 0, timeout: float | None = None
    ) -> pb.RetrieveReply:
        req = pb.RetrieveRequest(query=query, top_k=top_k, deadline_ms=deadline_ms)
        return await self.stub.Retrieve(
            req, timeout=_timeout(timeout, deadline_ms, self.default_timeout_s), metadata=inject_metadata()
        )

    async def synthesize(
        self,
        question: str,
        history: Sequence[pb.Step] = (),
        options: Sequence[str] = (),
        *,
        deadline_ms: int = 0,
        timeout: float | None = None,
    ) -> pb.AnswerReply:
        req = pb.SynthesizeRequest(
            question=question, options=list(options), history=list(history), deadline_ms=deadline_ms
        )
        return await self.stub.Synthesize(
            req, timeout=_timeout(timeout, deadline_ms, self.default_timeout_s), metadata=inject_metadata()
        )

    async def health(self, service: str = "", *, timeout: float = 1.0) -> str:
        """``SERVING``, ``NOT_SERVING`` … of ``service`` ("" = the whole server)."""
        reply = await self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    async def wait_serving(self, timeout: float = 60.0) -> None:
        """Wait until the server reports SERVING (it is NOT_SERVING while loading the engine)."""
        call = self._health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        try:
            async for reply in call:
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        finally:
            call.cancel()
        raise TimeoutError(f"{self.target} did not become SERVING")


class SyncArgoClient:
    """Blocking client (a plain grpc channel), for scripts and the ``argo-xapp ask --server`` command."""

    def __init__(
        self,
        target: str,
        *,
        default_timeout_s: float = DEFAULT_TIMEOUT_S,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.target = target
        self.default_timeout_s = default_timeout_s
        self.channel = grpc.insecure_channel(target, options=list(options))
        self.stub = pb_grpc.ArgoServiceStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)

    def __enter__(self) -> SyncArgoClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def answer(
        self,
        question: str,
        options: Sequence[str] = (),
        *,
        strategy: Strategy | str = "",
        deadline_ms: int = 0,
        omit_passages: bool = False,
        timeout: float | None = None,
    ) -> pb.AnswerReply:
        reply: pb.AnswerReply = self.stub.Answer(
            answer_request(question, options, strategy, deadline_ms, omit_passages),
            timeout=_timeout(timeout, deadline_ms, self.default_timeout_s),
            metadata=inject_metadata(),
        )
        return reply

    def answer_stream(
        self,
        question: str,
        options: Sequence[str] = (),
        *,
        strategy: Strategy | str = "",
        deadline_ms: int = 0,
        omit_passages: bool = False,
        timeout: float | None = None,
    ) -> Iterator[pb.AnswerEvent]:
        call = self.stub.AnswerStream(
            answer_request(question, options, strategy, deadline_ms, omit_passages),
            timeout=_timeout(timeout, deadline_ms, self.default_timeout_s),
            metadata=inject_metadata(),
        )
        try:
            yield from call
        finally:
            call.cancel()

    def decompose(
        self,
        question: str,
        history: Sequence[pb.Step] = (),
        options: Sequence[str] = (),
        *,
        deadline_ms: int = 0,
        timeout: float | None = None,
    ) -> pb.DecomposeReply:
        reply: pb.DecomposeReply = self.stub.Decompose(
            pb.DecomposeRequest(
                question=question, options=list(options), history=list(history), deadline_ms=deadline_ms
            ),
            timeout=_timeout(timeout, deadline_ms, self.default_timeout_s),
            metadata=inject_metadata(),
        )
        return reply

    def synthesize(
        self,
        question: str,
        history: Sequence[pb.Step] = (),
        options: Sequence[str] = (),
        *,
        deadline_ms: int = 0,
        timeout: float | None = None,
    ) -> pb.AnswerReply:
        reply: pb.AnswerReply = self.stub.Synthesize(
            pb.SynthesizeRequest(
                question=question, options=list(options), history=list(history), deadline_ms=deadline_ms
            ),
            timeout=_timeout(timeout, deadline_ms, self.default_timeout_s),
            metadata=inject_metadata(),
        )
        return reply

    def retrieve(
        self, query: str, *, top_k: int = 0, deadline_ms: int = 0, timeout: float | None = None
    ) -> pb.RetrieveReply:
        reply: pb.RetrieveReply = self.stub.Retrieve(
            pb.RetrieveRequest(query=query, top_k=top_k, deadline_ms=deadline_ms),
            timeout=_timeout(timeout, deadline_ms, self.default_timeout_s),
            metadata=inject_metadata(),
        )
        return reply

    def health(self, service: str = "", *, timeout: float = 1.0) -> str:
        reply = self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def ask(
    target: str,
    question: str,
    options: Sequence[str] = (),
    *,
    strategy: Strategy | str = "",
    deadline_ms: int = 0,
    omit_passages: bool = False,
    timeout: float | None = None,
) -> dict[str, Any]:
    """One Answer call → the reply as a plain dict (for ``argo-xapp ask --server HOST:PORT``).

    Raises ``grpc.RpcError`` (``.code()``, ``.details()``) when the server refuses or is unreachable.
    """
    with SyncArgoClient(target) as client:
        return reply_to_dict(
            client.answer(
                question,
                options,
                strategy=strategy,
                deadline_ms=deadline_ms,
                omit_passages=omit_passages,
                timeout=timeout,
            )
        )
