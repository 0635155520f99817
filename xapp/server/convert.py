"""Domain objects → reply messages (the other direction lives in ``validation``)."""

from __future__ import annotations

from collections.abc import Mapping

from xapp._proto.argo.v1 import argo_pb2 as pb
from xapp.domain import Action, Answer, Passage, PathKind, Step

PATH = {PathKind.LLM: pb.PATH_LLM, PathKind.TEMPLATE: pb.PATH_TEMPLATE, PathKind.MIXED: pb.PATH_MIXED}
ACTION = {
    Action.RETRIEVE: pb.ACTION_RETRIEVE,
    Action.REASON: pb.ACTION_REASON,
    Action.TERMINATE: pb.ACTION_TERMINATE,
}


def _timings(values: Mapping[str, float]) -> dict[str, float]:
    return {str(k): float(v) for k, v in values.items()}


def passage(p: Passage) -> pb.Passage:
    return pb.Passage(id=p.id, text=p.text, source=p.source, heading=p.heading, score=float(p.score))


def step(s: Step) -> pb.Step:
    return pb.Step(
        action=ACTION[s.action],
        path=PATH[s.path],
        query=s.query,
        passages=[passage(p) for p in s.passages],
        sources=s.sources,
        progress_before=float(s.progress_before),
        progress_after=float(s.progress_after),
        latency_ms=float(s.latency_ms),
        usage=pb.Usage(
            prompt_tokens=s.usage.prompt_tokens,
            completion_tokens=s.usage.completion_tokens,
            ttft_ms=float(s.usage.ttft_ms),
            aborted=s.usage.aborted,
        ),
        fallback_reason=s.fallback_reason or "",
        timings_ms=_timings(s.timings_ms),
    )


def answer(a: Answer, *, elapsed_ms: float, queued_ms: float | None = None) -> pb.AnswerReply:
    """``queued_ms``: time the request waited for a concurrency slot, reported as timings_ms["admission"]."""
    timings = _timings(a.timings_ms)
    if queued_ms is not None:
        timings["admission"] = queued_ms
    return pb.AnswerReply(
        answer=a.answer,
        choice=a.choice or 0,
        path=PATH[a.path],
        fallback_reason=a.fallback_reason or "",
        steps=[step(s) for s in a.steps],
        elapsed_ms=elapsed_ms,
        timings_ms=timings,
        prompt_tokens=a.prompt_tokens,
        completion_tokens=a.completion_tokens,
        sources=list(a.sources),
        strategy=a.strategy,
        deadline_ms=float(a.deadline_ms),
        model=a.model,
        option_probabilities=list(a.option_probabilities),
        trimmed=a.trimmed,
        fallbacks=[pb.Fallback(component=f.component.value, cause=f.cause.value, detail=f.detail) for f in a.fallbacks],
    )
