"""The argo.v1.ArgoService servicer: messages → domain objects → pipeline → reply, errors → status codes.

Transport only: it validates, computes the effective deadline, admits the request (bounded concurrency),
runs the pipeline call as part of the RPC's own task — so a caller cancelling cancels the pipeline and the
engine aborts the generation — and maps failures to status codes:

  INVALID_ARGUMENT    the request is unusable; the message names the field
  RESOURCE_EXHAUSTED  no request slot freed up within the time the deadline allowed (and, before the
                      handler: too many calls in flight, or a request over the receive limit; limits.py)
  UNAVAILABLE         nothing can answer (still starting, or a dependency error escaped every fallback)
  DEADLINE_EXCEEDED   the pipeline overran its deadline (a bug: it is built to answer in time); Retrieve
                      answers OK with no passages instead, as for a store too slow to answer
  INTERNAL            an unexpected error; logged with its traceback, the server keeps serving

docs/api.md holds the table of every error class; tests/test_status_codes.py checks it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol, TypeVar

import grpc
from google.protobuf.message import DecodeError

from xapp._proto.argo.v1 import argo_pb2 as pb
from xapp._proto.argo.v1 import argo_pb2_grpc as pb_grpc
from xapp.config import Settings
from xapp.domain import Answer, Cause, Component, Fallback, Question, Step
from xapp.errors import EngineUnavailable, InvalidRequest, StoreUnavailable
from xapp.pipeline.budget import caller_deadline, request_deadline
from xapp.server import convert, validation
from xapp.server.admission import Admission, Overloaded
from xapp.server.health import HealthMonitor
from xapp.server.loop_lag import LoopLag
from xapp.telemetry.interceptor import annotate_answer, annotate_question, note_rpc
from xapp.telemetry.logging import get_logger
from xapp.telemetry.metrics import Metrics, default_metrics

log = get_logger(__name__)
T = TypeVar("T")


class Pipeline(Protocol):
    """What the servicer needs from ``xapp.pipeline.runner.ArgoPipeline``."""

    async def answer(
        self,
        question: Question,
        *,
        strategy: str | None,
        deadline: float,
        on_step: Callable[[Step], None] | None = None,
        on_text: Callable[[str], None] | None = None,
        busy: Callable[[], bool] | None = None,
    ) -> Answer: ...

    async def decompose(self, question: Question, history: list[Step], *, deadline: float) -> Step: ...

    async def retrieve(self, query: str, *, top_k: int | None, deadline: float) -> Step: ...

    async def synthesize(self, question: Question, history: list[Step], *, deadline: float) -> Answer: ...

    def health(self) -> Mapping[str, bool]: ...

    def update_settings(self, settings: Settings) -> None: ...


class PipelineOverran(Exception):
    pass


@dataclass(frozen=True)
class Undecodable:
    """Stands in for a request whose bytes are not a valid message (gRPC would answer UNKNOWN and log a
    traceback); the servicer turns it into INVALID_ARGUMENT like any other unusable request."""

    message_type: str
    error: str


def _tolerant(message_cls: Any) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return message_cls.FromString(data)
        except DecodeError as exc:
            return Undecodable(message_cls.DESCRIPTOR.full_name, str(exc))

    return parse


def add_to_server(servicer: ArgoServicer, server: grpc.aio.Server) -> None:
    """Register ``servicer`` like the generated ``add_ArgoServiceServicer_to_server``, but with request
    parsing that cannot fail (see ``Undecodable``)."""
    service = pb.DESCRIPTOR.services_by_name["ArgoService"]
    handlers = {}
    for method in service.methods:
        request_cls = getattr(pb, method.input_type.name)
        reply_cls = getattr(pb, method.output_type.name)
        factory = (
            grpc.unary_stream_rpc_method_handler if method.server_streaming else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = factory(
            getattr(servicer, method.name),
            request_deserializer=_tolerant(request_cls),
            response_serializer=reply_cls.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)


def _ms_since(start: float) -> float:
    return (time.monotonic() - start) * 1000.0


class ArgoServicer(pb_grpc.ArgoServiceServicer):
    def __init__(
        self, settings: Settings, *, health: HealthMonitor | None = None, metrics: Metrics | None = None
    ) -> None:
        self.metrics = metrics or default_metrics()
        self.settings = settings
        self.admission = Admission(settings.max_concurrency)
        self.loop_lag = LoopLag()  # started with the server (it needs the running loop)
        self.health = health
        self.pipeline: Pipeline | None = None

    @property
    def settings(self) -> Settings:
        return self._settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        """Read per request; the descriptor watcher replaces them live (and the deadline gauges follow)."""
        self._settings = settings
        self.metrics.set_deadlines(settings.deadline_ms, settings.max_deadline_ms)

    def attach(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        # argo_xapp_build_info names the model; argo_xapp_llm_engine_* read the engine's stats at each scrape.
        self.metrics.watch_engine(getattr(pipeline, "engine", None))

    # ---------------------------------------------------------------------------------------- plumbing

    async def _abort(self, context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
        await context.abort(code, message)
        raise AssertionError("context.abort returned")  # it always raises; this keeps type checkers honest

    async def _prepare(
        self, context: grpc.aio.ServicerContext, request: Any, validate: Callable[[], T]
    ) -> tuple[Pipeline, T]:
        if isinstance(request, Undecodable):
            await self._abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"request: not a valid {request.message_type} message ({request.error})",
            )
        try:
            call = validate()
        except InvalidRequest as exc:
            await self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if self.pipeline is None:
            await self._abort(
                context,
                grpc.StatusCode.UNAVAILABLE,
                "starting: the engine and the knowledge base are loading",
            )
        return self.pipeline, call

    async def _guarded(self, reply_by: float, work: Awaitable[T]) -> T:
        """Await ``work`` but never past the caller's deadline ``reply_by``: the pipeline answers in time by
        design, this catches it if it does not (and cancels the work, so the engine aborts)."""
        # Not at the pipeline's own deadline: one a little late on a loaded CPU, inside the margins kept back
        # from it, still answers before the caller's deadline, and an answer beats an error.
        try:
            return await asyncio.wait_for(work, timeout=max(reply_by - time.monotonic(), 0.001))
        except asyncio.TimeoutError:
            raise PipelineOverran("the pipeline did not answer within the deadline") from None

    async def _fail(self, context: grpc.aio.ServicerContext, rpc: str, exc: BaseException) -> NoReturn:
        if isinstance(exc, Overloaded):
            await self._abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        if isinstance(exc, InvalidRequest):
            await self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if isinstance(exc, StoreUnavailable | EngineUnavailable):
            log.warning("no path could answer", rpc=rpc, error=str(exc))
            await self._abort(context, grpc.StatusCode.UNAVAILABLE, f"{type(exc).__name__}: {exc}")
        if isinstance(exc, PipelineOverran):
            log.error("the pipeline overran its deadline", rpc=rpc)
            await self._abort(context, grpc.StatusCode.DEADLINE_EXCEEDED, str(exc))
        log.error("unexpected error", rpc=rpc, exc_info=exc)
        await self._abort(context, grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")

    @staticmethod
    def _log_cancel(rpc: str, deadline: float) -> None:
        # gRPC cancels the handler when the caller cancels or its deadline passes; the work is aborted.
        late_ms = (time.monotonic() - deadline) * 1000.0
        if late_ms > 0:
            log.warning("the caller's deadline passed after ours; work aborted", rpc=rpc, late_ms=round(late_ms))
        else:
            log.info("cancelled by the caller; work aborted", rpc=rpc, before_deadline_ms=round(-late_ms))

    def _deadline_fields(self, deadline_ms: int) -> dict[str, Any]:
        fields = validation.deadline_fields(self.settings, deadline_ms)
        note_rpc(deadline_note=fields["deadline_note"] or None)
        return fields

    def _annotate(self, question: Question) -> None:
        annotate_question(question.text, len(question.options), include_text=self.settings.trace_text)

    def _refresh_health(self) -> None:
        if self.health is not None:
            self.health.kick()

    async def _unary(
        self,
        context: grpc.aio.ServicerContext,
        rpc: str,
        deadline: float,
        reply_by: float,
        work: Callable[[], Awaitable[T]],
        on_overrun: Callable[[], T] | None = None,
    ) -> tuple[T, float]:
        """Admit, run ``work`` within the deadline, map failures; returns the result and the ms spent queued.
        ``deadline``, ``reply_by``: the pipeline's and the caller's (:meth:`_deadlines`). ``on_overrun``: the
        reply when ``work`` did not finish in time (else DEADLINE_EXCEEDED)."""
        try:
            async with self.admission.slot(deadline) as waited_s:
                try:
                    return await self._guarded(reply_by, work()), waited_s * 1000.0
                except PipelineOverran:
                    if on_overrun is None:
                        raise
                    return on_overrun(), waited_s * 1000.0
        except asyncio.CancelledError:
            self._log_cancel(rpc, deadline)
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await self._fail(context, rpc, exc)
        finally:
            self._refresh_health()

    def _deadlines(self, context: grpc.aio.ServicerContext, deadline_ms: int, start: float) -> tuple[float, float]:
        """For a call whose handler started at ``start``: the pipeline's deadline (the one rule,
        :func:`request_deadline`, less what the event loop's lag will add to the caller's wait) and the
        caller's own (:func:`caller_deadline`), up to which the overrun guard waits."""
        remaining = context.time_remaining()
        lag_s = self.loop_lag.reserve_s(start)
        return (
            request_deadline(self.settings, deadline_ms, remaining, now=start, loop_lag_s=lag_s),
            caller_deadline(self.settings, deadline_ms, remaining, now=start),
        )

    # ---------------------------------------------------------------------------------------- RPCs

    async def Answer(self, request: pb.AnswerRequest, context: grpc.aio.ServicerContext) -> pb.AnswerReply:
        start = time.monotonic()
        pipeline, call = await self._prepare(
            context, request, lambda: validation.answer_request(request, self.settings)
        )
        self._annotate(call.question)
        deadline, reply_by = self._deadlines(context, call.deadline_ms, start)
        answer, queued_ms = await self._unary(
            context,
            "Answer",
            deadline,
            reply_by,
            lambda: pipeline.answer(call.question, strategy=call.strategy, deadline=deadline, busy=self.admission.busy),
        )
        annotate_answer(answer, include_text=self.settings.trace_text)
        self.metrics.record_answer(answer, "Answer")
        return convert.answer(
            answer,
            elapsed_ms=_ms_since(start),
            queued_ms=queued_ms,
            omit_passages=call.omit_passages,
            **self._deadline_fields(call.deadline_ms),
        )

    async def AnswerStream(
        self, request: pb.AnswerRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AnswerEvent]:
        start = time.monotonic()
        pipeline, call = await self._prepare(
            context, request, lambda: validation.answer_request(request, self.settings)
        )
        self._annotate(call.question)
        deadline, reply_by = self._deadlines(context, call.deadline_ms, start)
        # Steps as they complete, then the LLM's answer text as it is generated; None once the answer is ready.
        events: asyncio.Queue[Step | str | None] = asyncio.Queue()
        task: asyncio.Task[Answer] | None = None
        try:
            async with self.admission.slot(deadline) as waited_s:
                task = asyncio.create_task(
                    self._guarded(
                        reply_by,
                        pipeline.answer(
                            call.question,
                            strategy=call.strategy,
                            deadline=deadline,
                            on_step=events.put_nowait,
                            on_text=events.put_nowait,
                            busy=self.admission.busy,
                        ),
                    ),
                    name="argo-answer-stream",
                )
                task.add_done_callback(lambda _: events.put_nowait(None))
                while (event := await events.get()) is not None:
                    if isinstance(event, str):
                        yield pb.AnswerEvent(token=pb.AnswerToken(text=event))
                    else:
                        yield pb.AnswerEvent(step=convert.step(event, omit_passages=call.omit_passages))
                answer = task.result()
            annotate_answer(answer, include_text=self.settings.trace_text)
            self.metrics.record_answer(answer, "AnswerStream")
            reply = convert.answer(
                answer,
                elapsed_ms=_ms_since(start),
                queued_ms=waited_s * 1000.0,
                omit_passages=call.omit_passages,
                **self._deadline_fields(call.deadline_ms),
            )
            yield pb.AnswerEvent(answer=reply)
        except asyncio.CancelledError:
            self._log_cancel("AnswerStream", deadline)
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await self._fail(context, "AnswerStream", exc)
        finally:
            if task is not None and not task.done():
                # The caller went away (or the stream failed): cancel so the engine aborts the generation.
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            self._refresh_health()

    def _question_history_deadline(
        self, request: pb.DecomposeRequest | pb.SynthesizeRequest
    ) -> tuple[Question, list[Step], int]:
        return (
            validation.question(request.question, list(request.options), self.settings),
            validation.history(list(request.history), self.settings),
            validation.deadline_ms(request.deadline_ms),
        )

    async def Decompose(self, request: pb.DecomposeRequest, context: grpc.aio.ServicerContext) -> pb.DecomposeReply:
        start = time.monotonic()
        pipeline, (question, history, deadline_ms) = await self._prepare(
            context, request, lambda: self._question_history_deadline(request)
        )
        self._annotate(question)
        deadline, reply_by = self._deadlines(context, deadline_ms, start)
        step, _ = await self._unary(
            context, "Decompose", deadline, reply_by, lambda: pipeline.decompose(question, history, deadline=deadline)
        )
        self.metrics.record_step(step)
        return pb.DecomposeReply(query=step.query, step=convert.step(step), elapsed_ms=convert.ms(_ms_since(start)))

    async def Retrieve(self, request: pb.RetrieveRequest, context: grpc.aio.ServicerContext) -> pb.RetrieveReply:
        start = time.monotonic()

        def validate() -> tuple[str, int | None, int]:
            return (
                validation.retrieve_query(request.query, self.settings),
                validation.top_k(request.top_k),
                validation.deadline_ms(request.deadline_ms),
            )

        pipeline, (query, top_k, deadline_ms) = await self._prepare(context, request, validate)
        deadline, reply_by = self._deadlines(context, deadline_ms, start)

        def too_late() -> Step:
            # A deadline of a few ms: the search (in a thread, competing with the event loop for the CPU) came
            # back after it. Like a store that does not answer in time: OK, no passages, and why.
            detail = f"no search result within the {deadline_ms or self.settings.deadline_ms} ms deadline"
            failed = Fallback(Component.RETRIEVER, Cause.STORE_TIMEOUT, detail)
            return Step.search(query, _ms_since(start), fallback_reason=failed.text)

        # The pipeline answers a retrieval even when the store fails or is too slow (no passages, the reason).
        step, _ = await self._unary(
            context,
            "Retrieve",
            deadline,
            reply_by,
            lambda: pipeline.retrieve(query, top_k=top_k, deadline=deadline),
            on_overrun=too_late,
        )
        self.metrics.record_step(step)
        return pb.RetrieveReply(
            passages=[convert.passage(p) for p in step.passages],
            fallback_reason=step.fallback_reason or "",
            step=convert.step(step),
            elapsed_ms=convert.ms(_ms_since(start)),
        )

    async def Synthesize(self, request: pb.SynthesizeRequest, context: grpc.aio.ServicerContext) -> pb.AnswerReply:
        start = time.monotonic()
        pipeline, (question, history, deadline_ms) = await self._prepare(
            context, request, lambda: self._question_history_deadline(request)
        )
        self._annotate(question)
        deadline, reply_by = self._deadlines(context, deadline_ms, start)
        answer, queued_ms = await self._unary(
            context, "Synthesize", deadline, reply_by, lambda: pipeline.synthesize(question, history, deadline=deadline)
        )
        annotate_answer(answer, include_text=self.settings.trace_text)
        self.metrics.record_answer(answer, "Synthesize")
        return convert.answer(
            answer, elapsed_ms=_ms_since(start), queued_ms=queued_ms, **self._deadline_fields(deadline_ms)
        )


def in_flight(servicer: ArgoServicer) -> dict[str, Any]:
    """Admission state, for logs and the shutdown report."""
    return {"in_flight": servicer.admission.in_flight, "waiting": servicer.admission.waiting}
