"""Request messages → domain objects. Every rejection names the field so the caller knows what to fix.

Nothing here trusts the wire: protobuf guarantees types, not sizes, so lengths, counts and ranges are
checked before anything reaches the pipeline.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass

from xapp._proto.argo.v1 import argo_pb2 as pb
from xapp.config import STRATEGIES, Settings
from xapp.domain import Action, Passage, PathKind, Question, Step
from xapp.errors import InvalidRequest

MAX_TOP_K = 50
MAX_HISTORY_STEPS = 32  # the loop itself never runs more than settings.max_steps; history is a caller's replay
MAX_PASSAGES_PER_STEP = MAX_TOP_K
MAX_PASSAGE_CHARS = 20_000
# All the text of a history together (queries, passages, sources, fallback reasons): what bounds the largest
# valid request, and so the gRPC receive limit (xapp/server/limits.py). Four full Answer replies' steps
# (4 steps of 4 passages of <= 1200 characters each) take ~80 000.
MAX_HISTORY_CHARS = 100_000
MAX_TIMINGS_PER_STEP = 32

_ACTIONS = {
    pb.ACTION_RETRIEVE: Action.RETRIEVE,
    pb.ACTION_REASON: Action.REASON,
    pb.ACTION_TERMINATE: Action.TERMINATE,
}
_PATHS = {
    pb.PATH_UNSPECIFIED: PathKind.TEMPLATE,  # a caller-built history step without a path was not the LLM's
    pb.PATH_LLM: PathKind.LLM,
    pb.PATH_TEMPLATE: PathKind.TEMPLATE,
    pb.PATH_MIXED: PathKind.MIXED,
}


@dataclass(frozen=True)
class AnswerCall:
    question: Question
    strategy: str | None  # None: the server's default
    deadline_ms: int  # 0: the server's default
    omit_passages: bool = False  # the reply's steps without their passages' text


# Echoed values are cut to this many characters: an error message must stay small (gRPC trailers are bounded).
MAX_ECHO_CHARS = 40


def _echo(value: str) -> str:
    return repr(value) if len(value) <= MAX_ECHO_CHARS else repr(value[:MAX_ECHO_CHARS]) + f"… ({len(value)} chars)"


def _visible(value: str) -> bool:
    """Holds a character that prints: not only spaces, controls and format characters (zero-width space, BOM)."""
    return any(not ch.isspace() and unicodedata.category(ch) not in ("Cc", "Cf") for ch in value)


def _text(field: str, value: str, limit: int, *, required: bool = True) -> str:
    if len(value) > limit:
        raise InvalidRequest(field, f"is {len(value)} characters; at most {limit} are allowed")
    if required and not _visible(value):
        raise InvalidRequest(field, "must not be blank")
    if "\x00" in value:
        raise InvalidRequest(field, "must not contain NUL characters")
    return value.strip()


def question(text: str, options: list[str] | tuple[str, ...], settings: Settings) -> Question:
    q = _text("question", text, settings.max_question_chars)
    if len(options) > settings.max_options:
        raise InvalidRequest("options", f"has {len(options)} entries; at most {settings.max_options} are allowed")
    opts = tuple(_text(f"options[{i}]", o, settings.max_option_chars) for i, o in enumerate(options))
    return Question(text=q, options=opts)


def strategy(name: str) -> str | None:
    if not name:
        return None
    if name not in STRATEGIES:
        raise InvalidRequest("strategy", f"unknown strategy {_echo(name)}; choose one of {', '.join(STRATEGIES)}")
    return name


def deadline_ms(value: int) -> int:
    if value < 0:
        raise InvalidRequest("deadline_ms", f"must be >= 0 (0 means the server default), got {value}")
    return value


def answer_request(req: pb.AnswerRequest, settings: Settings) -> AnswerCall:
    return AnswerCall(
        question=question(req.question, list(req.options), settings),
        strategy=strategy(req.strategy),
        deadline_ms=deadline_ms(req.deadline_ms),
        omit_passages=req.omit_passages,
    )


def deadline_fields(settings: Settings, deadline_ms: int) -> dict[str, int | str]:
    """What a reply says of its deadline: the one asked for (0: the default) and, when ``max_deadline_ms``
    capped it, a note saying so (the rule of ``xapp.pipeline.budget.request_deadline``; CLI and server alike)."""
    requested = int(deadline_ms or settings.deadline_ms)
    note = ""
    if requested > settings.max_deadline_ms:
        note = f"deadline {requested} ms capped to max_deadline_ms {settings.max_deadline_ms} ms"
    return {"requested_deadline_ms": requested, "deadline_note": note}


def _finite(field: str, value: float) -> float:
    if not math.isfinite(value):
        raise InvalidRequest(field, "must be a finite number")
    return value


def step(msg: pb.Step, index: int, settings: Settings) -> Step:
    where = f"history[{index}]"
    if msg.action not in _ACTIONS:
        raise InvalidRequest(f"{where}.action", "must be RETRIEVE, REASON or TERMINATE")
    if msg.path not in _PATHS:
        raise InvalidRequest(f"{where}.path", f"unknown path {msg.path}")
    if len(msg.passages) > MAX_PASSAGES_PER_STEP:
        raise InvalidRequest(f"{where}.passages", f"at most {MAX_PASSAGES_PER_STEP} passages per step")
    passages = [
        Passage(
            id=_text(f"{where}.passages[{j}].id", p.id, 200, required=False),
            text=_text(f"{where}.passages[{j}].text", p.text, MAX_PASSAGE_CHARS, required=False),
            source=_text(f"{where}.passages[{j}].source", p.source, 1000, required=False),
            heading=_text(f"{where}.passages[{j}].heading", p.heading, 1000, required=False),
            score=_finite(f"{where}.passages[{j}].score", p.score),
        )
        for j, p in enumerate(msg.passages)
    ]
    return Step(
        action=_ACTIONS[msg.action],
        path=_PATHS[msg.path],
        progress_before=_finite(f"{where}.progress_before", msg.progress_before),
        progress_after=_finite(f"{where}.progress_after", msg.progress_after),
        latency_ms=_finite(f"{where}.latency_ms", msg.latency_ms),
        query=_text(f"{where}.query", msg.query, settings.max_question_chars * 4, required=False),
        passages=passages,
        fallback_reason=msg.fallback_reason or None,
    )


def _history_chars(msg: pb.Step) -> int:
    passages = sum(len(p.id) + len(p.text) + len(p.source) + len(p.heading) for p in msg.passages)
    return len(msg.query) + len(msg.fallback_reason) + passages + sum(map(len, msg.sources)) + sum(
        map(len, msg.timings_ms)
    )


def history(steps: list[pb.Step] | tuple[pb.Step, ...], settings: Settings) -> list[Step]:
    if len(steps) > MAX_HISTORY_STEPS:
        raise InvalidRequest("history", f"has {len(steps)} steps; at most {MAX_HISTORY_STEPS} are allowed")
    for i, s in enumerate(steps):
        # Sources and timings are not read back, but they travel: bounded like the rest.
        if len(s.sources) > MAX_PASSAGES_PER_STEP:
            raise InvalidRequest(f"history[{i}].sources", f"at most {MAX_PASSAGES_PER_STEP} sources per step")
        if len(s.timings_ms) > MAX_TIMINGS_PER_STEP:
            raise InvalidRequest(f"history[{i}].timings_ms", f"at most {MAX_TIMINGS_PER_STEP} entries per step")
    chars = sum(_history_chars(s) for s in steps)
    if chars > MAX_HISTORY_CHARS:
        raise InvalidRequest(
            "history",
            f"holds {chars} characters of text; at most {MAX_HISTORY_CHARS} are allowed "
            "(send fewer steps, or passages without their text)",
        )
    return [step(s, i, settings) for i, s in enumerate(steps)]


def retrieve_query(text: str, settings: Settings) -> str:
    return _text("query", text, settings.max_question_chars)


def top_k(value: int) -> int | None:
    if value < 0 or value > MAX_TOP_K:
        raise InvalidRequest("top_k", f"must be between 0 (server default) and {MAX_TOP_K}, got {value}")
    return value or None
