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


def ms(value: float) -> float:
    """Milliseconds as replies carry them: to 0.1 ms (``60.9``, not ``60.894658000052004``)."""
    return round(float(value), 1)


def _timings(values: Mapping[str, float]) -> dict[str, float]:
    return {str(k): ms(v) for k, v in values.items()}


def passage(p: Passage) -> pb.Passage:
    return pb.Passage(id=p.id, text=p.text, source=p.source, heading=p.heading, score=round(float(p.score), 4))


def step(s: Step, *, omit_passages: bool = False) -> pb.Step:
    """``omit_passages``: no passages (their sources stay in ``sources``)."""
    return pb.Step(
        action=ACTION[s.action],
        path=PATH[s.path],
        query=s.query,
        passages=[] if omit_passages else [passage(p) for p in s.passages],
        sources=s.sources,
        progress_before=round(float(s.progress_before), 4),
        progress_after=round(float(s.progress_after), 4),
        latency_ms=ms(s.latency_ms),
        usage=pb.Usage(
            prompt_tokens=s.usage.prompt_tokens,
            completion_tokens=s.usage.completion_tokens,
            ttft_ms=ms(s.usage.ttft_ms),
            aborted=s.usage.aborted,
        ),
        fallback_reason=s.fallback_reason or "",
        timings_ms=_timings(s.timings_ms),
    )


def answer(
    a: Answer,
    *,
    elapsed_ms: float,
    queued_ms: float | None = None,
    omit_passages: bool = False,
    requested_deadline_ms: int = 0,
    deadline_note: str = "",
) -> pb.AnswerReply:
    """``queued_ms``: time the request waited for a concurrency slot, reported as timings_ms["admission"]."""
    timings = _timings(a.timings_ms)
    if queued_ms is not None:
        timings["admission"] = ms(queued_ms)
    return pb.AnswerReply(
        answer=a.answer,
        choice=a.choice or 0,
        path=PATH[a.path],
        fallback_reason=a.fallback_reason or "",
        steps=[step(s, omit_passages=omit_passages) for s in a.steps],
        elapsed_ms=ms(elapsed_ms),
        timings_ms=timings,
        prompt_tokens=a.prompt_tokens,
        completion_tokens=a.completion_tokens,
        sources=list(a.sources),
        strategy=a.strategy,
        deadline_ms=ms(a.deadline_ms),
        model=a.model,
        option_probabilities=[round(float(p), 4) for p in a.option_probabilities],
        trimmed=a.trimmed,
        fallbacks=[pb.Fallback(component=f.component.value, cause=f.cause.value, detail=f.detail) for f in a.fallbacks],
        requested_deadline_ms=requested_deadline_ms,
        deadline_note=deadline_note,
    )
