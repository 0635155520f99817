"""Admission that knows the engine's queue: an LLM step's finish is forecast as the prefill work already in
the engine plus its own cost, and a request whose LLM step cannot finish in time takes its template path at
once — with the real cost model, the real queue ledger and (slow) the real tiny engine."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from xapp.config import Settings
from xapp.domain import Action, Cause, Component, Passage, PathKind, Question, Step
from xapp.llm import prompts
from xapp.llm.base import EngineQueue, QueuedCall
from xapp.pipeline.budget import Budget, LatencyEstimator, LLMCostModel, LLMPlan, NoPlan
from xapp.pipeline.runner import ArgoPipeline
from xapp.store.knowledge_base import KnowledgeBase

NOW = 1000.0


def _costs() -> LLMCostModel:
    costs = LLMCostModel(prefill_s=0.002, decode_s=0.05, overhead_s=0.02)
    costs.rel_error = 0.0  # safety factor 1.1
    return costs


def _choice(entered: float, tokens: float = 200, deadline: float = NOW + 10) -> QueuedCall:
    """An option choice in the engine: one prefill, no decoding."""
    return QueuedCall(entered, tokens, 0, deadline)


def test_an_idle_engine_forecasts_the_calls_own_cost() -> None:
    costs = _costs()
    f = costs.forecast(300, (), now=NOW)
    assert f.wait_s == 0 and not f.crowds_out
    assert f.first_s == pytest.approx((0.02 + 0.002 * 300) * 1.1)
    assert f.finish_s(5) == pytest.approx((0.02 + 0.002 * 300 + 0.05 * 4) * 1.1)
    assert costs.predict(300, 5) == pytest.approx(f.finish_s(5))


def test_a_call_waits_for_the_prefill_that_runs_and_the_batch_that_waits() -> None:
    costs = _costs()
    step = (0.02 + 0.002 * 200) * 1.1  # one 200-token prefill, 0.462 s
    own = (0.02 + 0.002 * 100) * 1.1
    # One prefill began 0.1 s ago: the new call starts when it ends.
    f = costs.forecast(100, [_choice(NOW - 0.1)], now=NOW)
    assert f.wait_s == pytest.approx(step - 0.1)
    assert f.first_s == pytest.approx(step - 0.1 + own)
    # A second call came while it ran: it waits for the next step, and the new call is prefilled beside it —
    # the batch lasts both prefills, so the new call finishes after both.
    queue = [_choice(NOW - 0.1), _choice(NOW - 0.05)]
    f2 = costs.forecast(100, queue, now=NOW)
    assert f2.first_s == pytest.approx(step - 0.1 + step + own)
    assert f2.wait_s == pytest.approx(f2.first_s - own)
    # A call past its deadline before its batch began was aborted: it costs nothing.
    gone = [_choice(NOW - 0.1), _choice(NOW - 0.05, deadline=NOW + 0.2)]
    assert costs.forecast(100, gone, now=NOW).first_s == pytest.approx(f.first_s)


def test_joining_a_waiting_batch_is_refused_when_it_would_make_a_queued_call_miss_its_deadline() -> None:
    costs = _costs()
    step = (0.02 + 0.002 * 200) * 1.1
    # The waiting call needs step - 0.1 + step = 0.824 s from now and is aborted at 0.85 s: there is room
    # for it, but not for it and a new 100-token prefill in the same step.
    queue = [_choice(NOW - 0.1), _choice(NOW - 0.05, deadline=NOW + 0.85)]
    f = costs.forecast(100, queue, now=NOW)
    assert f.crowds_out.startswith("it would push 1 queued LLM call(s)")
    assert 2 * step - 0.1 < 0.85 < f.first_s


def test_a_prefill_that_runs_late_still_holds_the_engine() -> None:
    costs = _costs()
    # Predicted to end 0.16 s ago, still in the engine: the next call cannot start before now.
    f = costs.forecast(100, [_choice(NOW - 0.62)], now=NOW)
    assert 0 < f.wait_s < 0.1


def test_decoding_calls_share_each_token_with_the_new_call() -> None:
    costs = _costs()
    decoding = [QueuedCall(NOW - 2.0, 50, 100, NOW + 5.0) for _ in range(3)]
    assert costs.forecast(100, decoding, now=NOW).per_token_s == pytest.approx(0.05 * 1.1 * 4)


def _passages_step() -> Step:
    passages = [Passage(f"p{i}", "the near-RT RIC E2 node " * 40, f"doc{i}.md", "", 0.9) for i in range(4)]
    return Step(Action.RETRIEVE, PathKind.TEMPLATE, 0.0, 0.3, 1.0, query="q", passages=passages)


class _Counter:
    """Counts one token per 4 characters; the calls in the engine are set by the test."""

    def __init__(self, calls: list[QueuedCall]) -> None:
        self.calls = calls

    def prompt_tokens(self, messages: Any) -> int:
        return sum(len(m["content"]) for m in messages) // 4

    def queued(self) -> list[QueuedCall]:
        return list(self.calls)


def test_the_planner_counts_the_queue_trims_to_the_closed_book_prompt_then_refuses() -> None:
    costs = _costs()
    question = Question("Which RIC hosts xApps?", ("near-RT RIC", "non-RT RIC", "SMO", "O-DU"))
    variants = prompts.choose_variants(question, [_passages_step()])
    counter = _Counter([])
    richest = counter.prompt_tokens(variants[0].messages)
    leanest = counter.prompt_tokens(variants[-1].messages)
    own_rich, own_lean = (costs.forecast(t, ()).first_s for t in (richest, leanest))
    assert variants[-1].passages == 0 and own_lean < own_rich
    now = time.monotonic()
    running = (0.02 + 0.002 * 200) * 1.1 - 0.05  # what is left of a prefill that began 50 ms ago

    # Idle engine: the richest prompt fits.
    budget = Budget(now + own_rich + 0.05, LatencyEstimator(), costs)
    plan = budget.plan_llm(counter, variants, min_tokens=1, max_tokens=1)
    assert isinstance(plan, LLMPlan) and plan.variant is variants[0] and plan.wait_s == 0

    # Behind a running prefill only the closed-book prompt fits the same time.
    counter.calls = [_choice(now - 0.05, deadline=now + 10)]
    budget = Budget(now + running + own_lean + 0.02, LatencyEstimator(), costs)
    plan = budget.plan_llm(counter, variants, min_tokens=1, max_tokens=1)
    assert isinstance(plan, LLMPlan) and plan.variant is variants[-1]
    assert plan.wait_s == pytest.approx(running, abs=0.01)

    # Behind two, nothing fits: no plan, and the figures say it is the queue.
    counter.calls = [_choice(now - 0.05, deadline=now + 10), _choice(now - 0.01, deadline=now + 10)]
    refused = budget.plan_llm(counter, variants, min_tokens=1, max_tokens=1)
    assert isinstance(refused, NoPlan)
    assert "ms left" in refused.detail and "behind 2 LLM call(s) in the engine" in refused.detail


def test_the_queue_marks_calls_that_shared_the_engine() -> None:
    queue = EngineQueue()
    a = queue.enter(QueuedCall(NOW, 100, 0, NOW + 1))
    b = queue.enter(QueuedCall(NOW + 0.1, 100, 0, NOW + 1))
    assert [c.entered for c in queue.calls()] == [NOW, NOW + 0.1] and len(queue) == 2
    assert not queue.leave(a).alone and not queue.leave(b).alone
    c = queue.enter(QueuedCall(NOW + 0.2, 100, 0, NOW + 1))
    assert queue.leave(c).alone and len(queue) == 0


def test_only_calls_alone_in_the_engine_teach_its_speed_but_all_teach_the_error() -> None:
    costs = LLMCostModel(prefill_s=0.01, decode_s=0.2, overhead_s=0.0, alpha=0.5)
    # Queued: 100 tokens took 2 s behind others, forecast 2 s: the speed stays, the error stays small.
    costs.observe(prompt_tokens=100, cached_tokens=0, ttft_s=2.0, completion_tokens=1, total_s=2.0,
                  aborted=False, forecast_s=2.0, alone=False)
    assert costs.prefill_s == 0.01 and costs.rel_error == pytest.approx(0.05)
    # Queued and twice as slow as forecast: the safety factor widens.
    costs.observe(prompt_tokens=100, cached_tokens=0, ttft_s=4.0, completion_tokens=1, total_s=4.0,
                  aborted=False, forecast_s=2.0, alone=False)
    assert costs.prefill_s == 0.01 and costs.rel_error == pytest.approx(0.525)
    # Alone: it teaches the prefill time (2 ms a token).
    costs.observe(prompt_tokens=100, cached_tokens=0, ttft_s=0.2, completion_tokens=1, total_s=0.2, aborted=False)
    assert costs.prefill_s == pytest.approx(0.006)


OPTIONS = Question(
    "Which interface carries policies from the non-RT RIC to the near-RT RIC?",
    ("A1", "E2", "O1", "F1"),
)


@pytest.mark.slow
def test_under_a_queue_the_late_requests_take_the_template_path_at_once_and_none_is_late(
    builtin_kb: KnowledgeBase, builtin_kb_settings: Settings, llm_engine: Any, run: Any
) -> None:
    # The tiny engine answers in milliseconds; the cost model plans each option choice at ~110 ms, as a 1.5B
    # on two cores would take a few hundred: the queue, not the engine, decides who gets the LLM.
    costs = LLMCostModel(prefill_s=1e-5, decode_s=0.05, overhead_s=0.1)
    costs.rel_error = 0.0
    pipeline = ArgoPipeline(builtin_kb_settings.replace(llm=True), builtin_kb, llm_engine, costs=costs)
    history = [_passages_step()]
    # Warm the engine up on this prompt (a fresh engine's first prefills compile kernels), as serve does.
    warm = prompts.choose_variants(OPTIONS, history)[0].messages
    run(llm_engine.choose(warm, prompts.option_labels(OPTIONS), deadline=time.monotonic() + 60))
    calls_before = llm_engine.stats.requests
    deadline_s = 0.55

    async def burst() -> list[Any]:
        # Eight at once: each enters the engine's queue before the next one plans.
        deadline = time.monotonic() + deadline_s
        return await asyncio.gather(*(pipeline.synthesize(OPTIONS, history, deadline=deadline) for _ in range(8)))

    start = time.monotonic()
    answers = run(burst())
    wall = time.monotonic() - start
    assert wall <= deadline_s + 0.1  # + hopping to the engine's loop thread and back
    llm = [a for a in answers if a.option_probabilities]
    queued_out = [a for a in answers if not a.option_probabilities]
    # 110 ms each behind one another (the 2nd waits for the 1st, the 3rd and 4th join the 2nd's batch):
    # four fit the 525 ms the synthesis may use, the other four do not.
    assert len(llm) == 4, [a.fallback_reason for a in answers]
    assert llm_engine.stats.requests - calls_before == 4
    for answer in queued_out:
        assert answer.path is PathKind.TEMPLATE and answer.choice in (1, 2, 3, 4)
        (fallback,) = [f for f in answer.fallbacks if f.component is Component.SYNTHESIZER]
        assert fallback.cause is Cause.NO_TIME and "LLM call(s) in the engine" in fallback.detail
        assert answer.elapsed_ms < 300  # at once: it did not wait in the queue
    assert not any(f.cause is Cause.ABORTED for a in answers for f in a.fallbacks)
    assert all(a.elapsed_ms <= deadline_s * 1000 for a in answers)
    assert pipeline.llm is not None and len(pipeline.llm.queue) == 0
    assert llm_engine.num_unfinished_requests() == 0


def test_the_load_bench_mixes_question_kinds_and_counts_the_llms_choices() -> None:
    import os

    from xapp._proto.argo.v1 import argo_pb2 as pb
    from xapp.bench.common import BenchQuestion
    from xapp.bench.load import Level, process_tree_rss_mb, question_mix

    mc = [BenchQuestion(f"mc{i}", ("a", "b"), answer=1) for i in range(3)]
    open_ = [BenchQuestion(f"open{i}") for i in range(2)]
    mix = question_mix(mc, open_, 0.5)
    assert [q.text for q in mix[:6]] == ["open0", "mc0", "open1", "mc1", "open0", "mc2"]
    assert sum(bool(q.options) for q in question_mix(mc, open_, 0.25)) == len(question_mix(mc, open_, 0.25)) // 4

    level = Level(8, deadline_ms=1000)
    chose = pb.AnswerReply(path=pb.Path.PATH_LLM, option_probabilities=[0.9, 0.1], choice=1)
    level.record(mc[0], "OK", 900.0, chose)
    level.record(mc[1], "OK", 1024.0, pb.AnswerReply(path=pb.Path.PATH_TEMPLATE, choice=2))  # 24 ms over: in time
    level.record(open_[0], "OK", 1026.0, pb.AnswerReply(path=pb.Path.PATH_TEMPLATE))  # late
    level.record(open_[1], "RESOURCE_EXHAUSTED", 10.0, None)
    level.duration_s = 2.0
    row = level.row()
    assert (row["requests"], row["ok"], row["late"], row["mc_replies"], row["mc_llm_share"]) == (4, 3, 1, 2, 0.5)
    assert row["errors"] == '{"RESOURCE_EXHAUSTED": 1}' and row["throughput_rps"] == 1.5
    # What the callers got: one right (the LLM's), one wrong (the template's).
    assert (row["mc_accuracy"], row["mc_llm_accuracy"], row["mc_template_accuracy"]) == (0.5, 1.0, 0.0)
    own = process_tree_rss_mb(os.getpid())
    assert own is not None and own > 10 and process_tree_rss_mb(2**22 + 7) is None


def test_one_wild_forecast_error_cannot_make_every_later_plan_many_times_too_slow() -> None:
    costs = LLMCostModel(prefill_s=1e-5, decode_s=1e-4, overhead_s=0.0, alpha=0.2)
    # Predicted ~1 ms, took half a second: counted as an error of 100 %, not 50 000 %.
    costs.observe(prompt_tokens=100, cached_tokens=0, ttft_s=0.5, completion_tokens=1, total_s=0.5, aborted=False,
                  forecast_s=0.001, alone=False)
    assert costs.rel_error == pytest.approx(0.8 * 0.1 + 0.2 * 1.0) and costs.safety() < 2.0
    budget = Budget(time.monotonic() + 1e-4, LatencyEstimator(), costs)
    refused = budget.plan_llm(_Counter([]), [prompts.PromptVariant([{"role": "user", "content": "x" * 400}])],
                              min_tokens=1, max_tokens=1)
    assert isinstance(refused, NoPlan) and "for their recent error" in refused.detail


def test_a_model_that_no_call_has_taught_for_a_while_probes_once_with_an_idle_engine() -> None:
    from xapp.pipeline import budget as budget_module

    costs = _costs()
    variants = [prompts.PromptVariant([{"role": "user", "content": "x" * 1600}])]  # 400 tokens: 0.9 s
    now = time.monotonic()
    near = Budget(now + 0.7, LatencyEstimator(), costs)  # 30 % short
    assert isinstance(near.plan_llm(_Counter([]), variants, min_tokens=1, max_tokens=1), NoPlan)  # just taught
    costs._taught = now - budget_module.PROBE_AFTER_S - 1
    # Busy engine: no probe (it would only wait). Idle: one probe, aborted at the deadline if the forecast
    # was right; the next request is refused again until the model has been taught or the time has passed.
    assert isinstance(near.plan_llm(_Counter([_choice(now, deadline=now + 5)]), variants, min_tokens=1,
                                    max_tokens=1), NoPlan)
    probe = near.plan_llm(_Counter([]), variants, min_tokens=1, max_tokens=1)
    assert isinstance(probe, LLMPlan) and probe.probe and probe.deadline == near.deadline
    assert isinstance(near.plan_llm(_Counter([]), variants, min_tokens=1, max_tokens=1), NoPlan)
    # Hopeless (more than PROBE_SLACK over): never probed.
    costs._taught = now - budget_module.PROBE_AFTER_S - 1
    far = Budget(now + 0.5, LatencyEstimator(), costs)
    assert isinstance(far.plan_llm(_Counter([]), variants, min_tokens=1, max_tokens=1), NoPlan)
    # A busy CPU (retrieval at 3× its calibrated time): no probe either.
    busy = LatencyEstimator({"retrieve": 0.03})
    busy.observe("retrieve", 0.3)
    assert busy.slowdown("retrieve") > budget_module.PROBE_QUIET
    loaded = Budget(now + 0.7, busy, costs)
    assert isinstance(loaded.plan_llm(_Counter([]), variants, min_tokens=1, max_tokens=1), NoPlan)
    assert isinstance(near.plan_llm(_Counter([]), variants, min_tokens=1, max_tokens=1), LLMPlan)  # still due


@pytest.mark.slow
def test_a_choice_that_could_not_read_evidence_in_time_is_made_closed_book_before_any_retrieval(
    builtin_kb: KnowledgeBase, builtin_kb_settings: Settings, llm_engine: Any, run: Any
) -> None:
    from xapp.pipeline.budget import LEXICAL_RESERVE_S
    from xapp.pipeline.runner import LEAN_EVIDENCE_TOKENS

    # Planned as a slow CPU would take it: 2 ms a prompt token, so one passage of evidence costs ~130 ms more.
    costs = LLMCostModel(prefill_s=0.002, decode_s=0.05, overhead_s=0.1)
    costs.rel_error = 0.0
    pipeline = ArgoPipeline(builtin_kb_settings.replace(llm=True), builtin_kb, llm_engine, costs=costs)
    assert pipeline.llm is not None
    bare_messages = prompts.choose_variants(OPTIONS, [])[-1].messages
    bare_tokens = pipeline.llm.prompt_tokens(bare_messages)
    # Warm the engine up on this prompt (a fresh engine's first prefills compile kernels) and time a
    # retrieval, as serve does.
    run(llm_engine.choose(bare_messages, prompts.option_labels(OPTIONS), deadline=time.monotonic() + 60))
    pipeline.calibrate()

    def answer(deadline_s: float) -> Any:
        return run(pipeline.answer(OPTIONS, strategy="mdp", deadline=time.monotonic() + deadline_s))

    # Another request's choice entered the engine just now (its prefill of 20 tokens, ~140 ms, comes first).
    other = pipeline.llm.queue.enter(_choice(time.monotonic(), tokens=20, deadline=time.monotonic() + 60))
    queue = pipeline.llm.queued()
    bare, lean = (costs.predict(bare_tokens + extra, 1, queue=queue) for extra in (0, LEAN_EVIDENCE_TOKENS))
    assert lean - bare > 0.1
    # Time for the closed-book choice behind it, not for a retrieval and the choice with one passage.
    deadline_s = bare + LEXICAL_RESERVE_S + 0.05
    closed = answer(deadline_s)
    pipeline.llm.queue.leave(other)
    assert closed.option_probabilities and closed.choice in (1, 2, 3, 4), closed.fallback_reason
    assert not [s for s in closed.steps if s.action is Action.RETRIEVE]
    (skipped,) = [f for f in closed.fallbacks if f.component is Component.RETRIEVER]
    assert skipped.cause is Cause.NO_TIME and "1 LLM call(s) in the engine" in skipped.detail, skipped.detail
    assert closed.elapsed_ms <= deadline_s * 1000

    # The same time with an idle engine: the loop retrieves first, as always (the call may still fit with
    # evidence after it; the planner decides then).
    idle = answer(deadline_s)
    assert [s for s in idle.steps if s.action is Action.RETRIEVE], idle.fallback_reason
    assert "retrieval skipped" not in (idle.fallback_reason or "")
    assert llm_engine.num_unfinished_requests() == 0


class _ScriptedEngine:
    """Answers calibration calls at scripted costs: 4 ms per uncached prompt token plus 130 ms a call, except
    the first short choice, slowed by a moment's contention."""

    model_name = "scripted"

    def __init__(self) -> None:
        self.calls = 0

    async def choose(self, messages: Any, labels: Any, *, deadline: float) -> Any:
        from xapp.llm.base import Choice

        self.calls += 1
        uncached = 248 if "Evidence" in str(messages) else 8
        slow = 0.2 if self.calls == 2 else 0.0  # the first measured round, after the warm-up
        return Choice((1.0, 0.0, 0.0, 0.0), uncached + 100, 0.13 + 0.004 * uncached + slow, False, cached_tokens=100)

    async def generate(self, messages: Any, *, max_tokens: int, deadline: float) -> Any:
        from xapp.llm.base import Generation

        return Generation("a b c d", 108, 4, 0.16, 0.16 + 3 * 0.1, False, "length", cached_tokens=100)


def test_a_calibration_call_slowed_by_contention_does_not_set_the_cost_model() -> None:
    pipeline = ArgoPipeline(Settings(), None, _ScriptedEngine())  # type: ignore[arg-type]
    asyncio.run(pipeline.calibrate_llm())
    # The fastest of the rounds: 130 ms a call and 4 ms a token, not 330 ms from the slowed one.
    assert pipeline.costs.overhead_s == pytest.approx(0.13, abs=0.005)
    assert pipeline.costs.prefill_s == pytest.approx(0.004, rel=0.05)
    assert pipeline.costs.decode_s == pytest.approx(0.1, rel=0.05)
