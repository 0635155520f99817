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

A server with TLS needs ``ca_file`` (the CA that signed its certificate; ``tls=True`` alone trusts the
system's CAs), one with mutual TLS also ``cert_file`` and ``key_file``; one with token auth ``token`` (or
``token_file``), sent as ``authorization: Bearer <token>`` on every call::

    SyncArgoClient("argo-xapp.ricxapp:50051", ca_file="ca.pem", cert_file="me.pem", key_file="me.key",
                   token_file="/var/run/secrets/argo/token")

This module needs only grpcio, grpcio-health-checking, protobuf and opentelemetry-api: ``pip install
argo-xapp`` installs just those (the server is the ``cpu`` / ``gpu`` / ``server`` extra), see docs/api.md.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, TypeVar, cast

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


def _read(what: str, path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class Connection:
    """Where and how both clients connect: the target, TLS material, the bearer token and channel options.

    ``ca_file``, ``cert_file``/``key_file`` or ``tls=True`` make it a TLS channel; ``token`` (or the first
    line of ``token_file``) goes with every call as ``authorization: Bearer <token>``.
    """

    target: str
    tls: bool = False
    ca_file: str | Path | None = None
    cert_file: str | Path | None = None
    key_file: str | Path | None = None
    token: str | None = None
    token_file: str | Path | None = None
    options: Sequence[tuple[str, Any]] = ()

    def credentials(self) -> grpc.ChannelCredentials | None:
        """TLS channel credentials, None for plain text."""
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("a client certificate needs both cert_file and key_file")
        if not (self.tls or self.ca_file or self.cert_file):
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=_read("CA file", self.ca_file) if self.ca_file else None,
            private_key=_read("client key", self.key_file) if self.key_file else None,
            certificate_chain=_read("client certificate", self.cert_file) if self.cert_file else None,
        )

    def bearer(self) -> str | None:
        if self.token:
            return self.token.strip()
        if self.token_file:
            lines = [line.strip() for line in _read("token file", self.token_file).decode().splitlines()]
            token = next((line for line in lines if line and not line.startswith("#")), "")
            if not token:
                raise ValueError(f"the token file {self.token_file} holds no token")
            return token
        return None

    def open(self, grpc_module: Any) -> Any:
        """A channel from ``grpc`` (blocking) or ``grpc.aio``, which spell their channel functions alike."""
        credentials = self.credentials()
        if credentials is None:
            return grpc_module.insecure_channel(self.target, options=list(self.options))
        return grpc_module.secure_channel(self.target, credentials, options=list(self.options))


# What a call returns in each client: the reply (blocking) or an awaitable of it (asyncio), and a stream.
AnswerR = TypeVar("AnswerR")
DecomposeR = TypeVar("DecomposeR")
RetrieveR = TypeVar("RetrieveR")
StreamR = TypeVar("StreamR")


class _Calls(Generic[AnswerR, DecomposeR, RetrieveR, StreamR]):
    """Every RPC, written once: builds the request, the timeout and the metadata; the subclass only invokes
    (``_unary``, ``_stream``), blocking or asyncio."""

    def __init__(
        self,
        target: str,
        *,
        default_timeout_s: float = DEFAULT_TIMEOUT_S,
        channel: Any = None,
        options: Sequence[tuple[str, Any]] = (),
        tls: bool = False,
        ca_file: str | Path | None = None,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        token: str | None = None,
        token_file: str | Path | None = None,
    ) -> None:
        self.target = target
        self.default_timeout_s = default_timeout_s
        self.connection = Connection(target, tls, ca_file, cert_file, key_file, token, token_file, options)
        bearer = self.connection.bearer()
        self._auth = [("authorization", f"Bearer {bearer}")] if bearer else []
        self._own_channel = channel is None
        self.channel = channel if channel is not None else self.connection.open(self._grpc())
        self.stub = pb_grpc.ArgoServiceStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)

    @staticmethod
    def _grpc() -> Any:
        raise NotImplementedError

    def _unary(self, method: Any, request: Any, **call: Any) -> Any:
        raise NotImplementedError

    def _stream(self, method: Any, request: Any, **call: Any) -> Any:
        raise NotImplementedError

    def _call(self, timeout: float | None, deadline_ms: int) -> dict[str, Any]:
        """The gRPC deadline and the metadata of one call: trace context and, when set, the bearer token."""
        return {
            "timeout": _timeout(timeout, deadline_ms, self.default_timeout_s),
            "metadata": [*inject_metadata(), *self._auth],
        }

    def answer(
        self,
        question: str,
        options: Sequence[str] = (),
        *,
        strategy: Strategy | str = "",
        deadline_ms: int = 0,
        omit_passages: bool = False,
        timeout: float | None = None,
    ) -> AnswerR:
        request = answer_request(question, options, strategy, deadline_ms, omit_passages)
        return cast(AnswerR, self._unary(self.stub.Answer, request, **self._call(timeout, deadline_ms)))

    def answer_stream(
        self,
        question: str,
        options: Sequence[str] = (),
        *,
        strategy: Strategy | str = "",
        deadline_ms: int = 0,
        omit_passages: bool = False,
        timeout: float | None = None,
    ) -> StreamR:
        request = answer_request(question, options, strategy, deadline_ms, omit_passages)
        return cast(StreamR, self._stream(self.stub.AnswerStream, request, **self._call(timeout, deadline_ms)))

    def decompose(
        self,
        question: str,
        history: Sequence[pb.Step] = (),
        options: Sequence[str] = (),
        *,
        deadline_ms: int = 0,
        timeout: float | None = None,
    ) -> DecomposeR:
        request = pb.DecomposeRequest(
            question=question, options=list(options), history=list(history), deadline_ms=deadline_ms
        )
        return cast(DecomposeR, self._unary(self.stub.Decompose, request, **self._call(timeout, deadline_ms)))

    def retrieve(self, query: str, *, top_k: int = 0, deadline_ms: int = 0, timeout: float | None = None) -> RetrieveR:
        request = pb.RetrieveRequest(query=query, top_k=top_k, deadline_ms=deadline_ms)
        return cast(RetrieveR, self._unary(self.stub.Retrieve, request, **self._call(timeout, deadline_ms)))

    def synthesize(
        self,
        question: str,
        history: Sequence[pb.Step] = (),
        options: Sequence[str] = (),
        *,
        deadline_ms: int = 0,
        timeout: float | None = None,
    ) -> AnswerR:
        request = pb.SynthesizeRequest(
            question=question, options=list(options), history=list(history), deadline_ms=deadline_ms
        )
        return cast(AnswerR, self._unary(self.stub.Synthesize, request, **self._call(timeout, deadline_ms)))

    def _health_request(self, service: str, timeout: float) -> tuple[health_pb2.HealthCheckRequest, dict[str, Any]]:
        # Health needs no token (probes have none), but one is harmless and keeps a proxy's rules simple.
        return health_pb2.HealthCheckRequest(service=service), {"timeout": timeout, "metadata": self._auth}


def _status_name(reply: health_pb2.HealthCheckResponse) -> str:
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


class ArgoClient(
    _Calls[
        Awaitable[pb.AnswerReply],
        Awaitable[pb.DecomposeReply],
        Awaitable[pb.RetrieveReply],
        AsyncIterator[pb.AnswerEvent],
    ]  # fmt: skip
):
    """asyncio client (grpc.aio). Use as ``async with`` or call ``close()``."""

    @staticmethod
    def _grpc() -> Any:
        return grpc.aio

    async def _unary(self, method: Any, request: Any, **call: Any) -> Any:
        return await method(request, **call)

    async def _stream(self, method: Any, request: Any, **call: Any) -> AsyncIterator[pb.AnswerEvent]:
        stream = method(request, **call)
        try:
            async for event in stream:
                yield event
        finally:
            stream.cancel()  # no-op when the stream ended; stops the server's work when the caller breaks off

    async def __aenter__(self) -> ArgoClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_channel:
            await self.channel.close()

    async def health(self, service: str = "", *, timeout: float = 1.0) -> str:
        """``SERVING``, ``NOT_SERVING`` … of ``service`` ("" = the whole server)."""
        request, call = self._health_request(service, timeout)
        return _status_name(await self._health.Check(request, **call))

    async def wait_serving(self, timeout: float = 60.0) -> None:
        """Wait until the server reports SERVING (it is NOT_SERVING while loading the engine); a server that
        is not listening yet is waited for as well (the call waits for the channel to connect)."""
        request, call = self._health_request("", timeout)
        watch = self._health.Watch(request, wait_for_ready=True, **call)
        try:
            async for reply in watch:
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        finally:
            watch.cancel()
        raise TimeoutError(f"{self.target} did not become SERVING")


class SyncArgoClient(_Calls[pb.AnswerReply, pb.DecomposeReply, pb.RetrieveReply, Iterator[pb.AnswerEvent]]):
    """Blocking client (a plain grpc channel), for scripts and the ``argo-xapp ask --server`` command."""

    @staticmethod
    def _grpc() -> Any:
        return grpc

    def _unary(self, method: Any, request: Any, **call: Any) -> Any:
        return method(request, **call)

    def _stream(self, method: Any, request: Any, **call: Any) -> Iterator[pb.AnswerEvent]:
        stream = method(request, **call)
        try:
            yield from stream
        finally:
            stream.cancel()

    def __enter__(self) -> SyncArgoClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._own_channel:
            self.channel.close()

    def health(self, service: str = "", *, timeout: float = 1.0) -> str:
        request, call = self._health_request(service, timeout)
        return _status_name(self._health.Check(request, **call))


def ask(
    target: str,
    question: str,
    options: Sequence[str] = (),
    *,
    strategy: Strategy | str = "",
    deadline_ms: int = 0,
    omit_passages: bool = False,
    timeout: float | None = None,
    **connection: Any,
) -> dict[str, Any]:
    """One Answer call → the reply as a plain dict (for ``argo-xapp ask --server HOST:PORT``).

    ``connection``: the clients' TLS and token options (``ca_file``, ``cert_file``, ``key_file``, ``tls``,
    ``token``, ``token_file``). Raises ``grpc.RpcError`` (``.code()``, ``.details()``) when the server refuses
    or is unreachable, ``ValueError`` when a TLS or token file cannot be read.
    """
    with SyncArgoClient(target, **connection) as client:
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
