"""Request validation, effective deadlines and admission control, without a server."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from xapp._proto.argo.v1 import argo_pb2 as pb
from xapp.config import STRATEGIES, Settings
from xapp.domain import Action, PathKind
from xapp.errors import InvalidRequest
from xapp.pipeline.budget import caller_deadline, request_deadline
from xapp.server import validation
from xapp.server.admission import Admission, Overloaded
from xapp.server.loop_lag import LoopLag

SETTINGS = Settings(max_question_chars=100, max_options=3, max_option_chars=20)
answer = validation.answer_request


def rejects(field: str, fn, *args):  # type: ignore[no-untyped-def]
    """Assert that ``fn(*args)`` raises InvalidRequest naming ``field``."""
    with pytest.raises(InvalidRequest) as info:
        fn(*args)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    return info.value


@pytest.mark.parametrize("question", ["", "   ", "\n\t", "\u200b", "\ufeff \u200b\u2060", "\x07"])
def test_blank_question_is_rejected(question: str) -> None:
    rejects("question", answer, pb.AnswerRequest(question=question), SETTINGS)


def test_oversized_question_is_rejected_with_the_limit() -> None:
    err = rejects("question", answer, pb.AnswerRequest(question="x" * 101), SETTINGS)
    assert "100" in str(err)
    assert answer(pb.AnswerRequest(question="x" * 100), SETTINGS).question.text == "x" * 100


def test_options_count_emptiness_and_size() -> None:
    rejects("options", answer, pb.AnswerRequest(question="q", options=["a"] * 4), SETTINGS)
    rejects("options[1]", answer, pb.AnswerRequest(question="q", options=["a", " "]), SETTINGS)
    rejects("options[0]", answer, pb.AnswerRequest(question="q", options=["a" * 21]), SETTINGS)
    call = answer(pb.AnswerRequest(question=" q ", options=["a", "b "]), SETTINGS)
    assert call.question.text == "q" and call.question.options == ("a", "b")


def test_strategy_and_deadline() -> None:
    rejects("strategy", answer, pb.AnswerRequest(question="q", strategy="best"), SETTINGS)
    long = rejects("strategy", answer, pb.AnswerRequest(question="q", strategy="x" * 5000), SETTINGS)
    assert len(str(long)) < 200 and "(5000 chars)" in str(long)  # the value is echoed cut, not whole
    rejects("deadline_ms", answer, pb.AnswerRequest(question="q", deadline_ms=-1), SETTINGS)
    for name in STRATEGIES:
        assert answer(pb.AnswerRequest(question="q", strategy=name), SETTINGS).strategy == name
    call = answer(pb.AnswerRequest(question="q"), SETTINGS)
    assert call.strategy is None and call.deadline_ms == 0


def test_history_steps_convert_and_bad_ones_name_their_field() -> None:
    good = pb.Step(
        action=pb.ACTION_RETRIEVE,
        path=pb.PATH_LLM,
        query="E2 interface",
        passages=[pb.Passage(id="1", text="t", source="s.md", heading="h", score=0.5)],
        progress_after=0.3,
    )
    [step] = validation.history([good], SETTINGS)
    assert step.action is Action.RETRIEVE and step.path is PathKind.LLM and step.passages[0].score == 0.5
    rejects("history[0].action", validation.history, [pb.Step()], SETTINGS)
    bad_score = pb.Step(action=pb.ACTION_REASON, passages=[pb.Passage(score=math.nan)])
    rejects("history[1].passages[0].score", validation.history, [good, bad_score], SETTINGS)
    rejects("history", validation.history, [good] * (validation.MAX_HISTORY_STEPS + 1), SETTINGS)


def test_retrieve_fields() -> None:
    rejects("query", validation.retrieve_query, " ", SETTINGS)
    rejects("top_k", validation.top_k, -1)
    rejects("top_k", validation.top_k, validation.MAX_TOP_K + 1)
    assert validation.top_k(0) is None and validation.top_k(3) == 3


class FakeContext:
    """Only ``time_remaining`` — the one thing the deadline needs from a grpc ServicerContext."""

    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float | None:
        return self.remaining


@pytest.mark.parametrize(
    ("grpc_remaining", "deadline_ms", "expected_ms"),
    [
        (None, 0, 1000 - 20),  # server default
        (None, 300, 300 - 20),  # the request's deadline_ms
        (None, 5000, 1000 - 20),  # capped at max_deadline_ms
        (0.5, 0, 500 - 20),  # the caller's gRPC deadline is earlier
        (0.5, 200, 200 - 20),  # deadline_ms is earlier
        (0.0, 0, 0),  # already expired: the pipeline must answer at once (template path)
        (None, 100, 100 - 10),  # a short deadline keeps at most a tenth for the margin
    ],
)
def test_request_deadline_is_the_earliest_less_the_margin(
    grpc_remaining: float | None, deadline_ms: int, expected_ms: float
) -> None:
    settings = Settings(deadline_ms=1000, max_deadline_ms=1000, safety_margin_ms=20)
    got = request_deadline(settings, deadline_ms, FakeContext(grpc_remaining).time_remaining(), now=100.0)
    assert got == pytest.approx(100.0 + expected_ms / 1000.0)
    # The caller's own deadline, which the overrun guard waits for: the same earliest, with no margin.
    caller = caller_deadline(settings, deadline_ms, grpc_remaining, now=100.0)
    budget_ms = min(deadline_ms or 1000, 1000, math.inf if grpc_remaining is None else grpc_remaining * 1000)
    assert caller == pytest.approx(100.0 + budget_ms / 1000.0)


def test_a_lagging_event_loop_is_kept_back_from_the_deadline_up_to_a_cap() -> None:
    settings = Settings(deadline_ms=1000, max_deadline_ms=1000, safety_margin_ms=20)
    # 2 x 60 ms of measured lag on top of the 20 ms margin; never more than 30% of the deadline in all.
    assert request_deadline(settings, 1000, now=100.0, loop_lag_s=0.12) == pytest.approx(100.0 + 0.86)
    assert request_deadline(settings, 1000, now=100.0, loop_lag_s=5.0) == pytest.approx(100.0 + 0.70)


def test_loop_lag_measures_a_blocked_event_loop_and_forgets_it_after_its_window() -> None:
    async def scenario() -> None:
        lag = LoopLag(interval_s=0.01, window_s=0.5)
        lag.start()
        await asyncio.sleep(0.05)
        assert lag.recent_s() < 0.05  # a quiet loop
        time.sleep(0.15)  # the loop is blocked, as by CPU-bound work on it
        await asyncio.sleep(0.03)
        assert lag.recent_s() >= 0.1 and lag.reserve_s() == pytest.approx(2 * lag.recent_s())
        await asyncio.sleep(0.6)
        assert lag.recent_s() < 0.05  # the window has passed
        await lag.stop()

    asyncio.run(scenario())


def test_admission_waits_only_as_long_as_the_deadline_allows() -> None:
    async def scenario() -> None:
        admission = Admission(1, reserve_s=0.05)
        release = asyncio.Event()

        async def holder() -> None:
            async with admission.slot(time.monotonic() + 10):
                await release.wait()

        task = asyncio.create_task(holder())
        await asyncio.sleep(0.01)
        assert admission.in_flight == 1
        t0 = time.monotonic()
        with pytest.raises(Overloaded, match="busy"):
            async with admission.slot(t0 + 0.25):
                pass
        waited = time.monotonic() - t0
        assert 0.15 <= waited <= 0.30  # deadline − reserve, not a hang
        with pytest.raises(Overloaded):  # no time left to wait at all → refused at once
            async with admission.slot(time.monotonic() + 0.01):
                pass
        # A waiter with time is admitted when the slot frees.
        waiter = asyncio.create_task(_enter(admission, time.monotonic() + 2))
        await asyncio.sleep(0.05)
        assert admission.waiting == 1
        release.set()
        await task
        assert await waiter
        assert admission.in_flight == 0 and admission.waiting == 0

    asyncio.run(scenario())


async def _enter(admission: Admission, deadline: float) -> bool:
    async with admission.slot(deadline):
        return True


def test_the_overrun_guard_waits_for_the_callers_deadline_not_the_pipelines() -> None:
    from xapp.server.service import ArgoServicer, PipelineOverran

    servicer = ArgoServicer(Settings(deadline_ms=1000, max_deadline_ms=1000, safety_margin_ms=20))

    async def scenario() -> None:
        start = time.monotonic()
        deadline, reply_by = servicer._deadlines(FakeContext(None), 200, start)
        assert reply_by == pytest.approx(start + 0.2) and deadline < reply_by
        # Late by the pipeline's own deadline but inside the caller's: the answer goes out.
        late = max(deadline - time.monotonic(), 0.0) + (reply_by - deadline) / 2
        assert await servicer._guarded(reply_by, asyncio.sleep(late, result="answer")) == "answer"
        # Past the caller's deadline: the guard cancels the work and says so.
        start = time.monotonic()
        _, reply_by = servicer._deadlines(FakeContext(None), 100, start)
        with pytest.raises(PipelineOverran):
            await servicer._guarded(reply_by, asyncio.sleep(1.0))
        assert time.monotonic() - start == pytest.approx(0.1, abs=0.08)

    asyncio.run(scenario())


def test_stopping_a_background_task_cancels_it_and_never_raises_its_failure() -> None:
    from xapp.background import stop_task

    async def scenario() -> None:
        async def forever() -> None:
            await asyncio.sleep(100)

        async def fails() -> None:
            raise RuntimeError("the store supervisor broke")

        running, failed = asyncio.create_task(forever()), asyncio.create_task(fails())
        await asyncio.sleep(0)
        await stop_task(running)
        assert running.cancelled()
        await stop_task(failed)  # logged, not raised: the rest of the shutdown goes on
        assert isinstance(failed.exception(), RuntimeError)
        await stop_task(None)

    asyncio.run(scenario())
