"""The ARGO loop for one question: ask the strategy, run the step, update progress U, synthesize in time.

Every "may this start?" question is answered by the request's :class:`~xapp.pipeline.budget.Budget`:
``fits`` for template and retrieval work, ``plan_llm`` for LLM calls (which evidence goes into the prompt,
how many tokens, when the call is aborted). When the LLM path of a component cannot run or fails, the
template path answers and the reply lists the :class:`~xapp.domain.Fallback` with its cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from opentelemetry import trace

from xapp.components.base import ComponentResult
from xapp.components.decomposer import Decomposer
from xapp.components.reasoner import Reasoner
from xapp.components.retriever import Retriever
from xapp.components.synthesizer import Synthesizer
from xapp.config import Settings
from xapp.domain import Action, Answer, Cause, Component, Fallback, Passage, PathKind, Question, Step, Usage
from xapp.errors import StoreUnavailable
from xapp.llm import prompts
from xapp.llm.base import LLM, TextCallback
from xapp.pipeline.budget import (
    LEXICAL_RESERVE_S,
    Budget,
    LatencyEstimator,
    LLMCostModel,
    LLMPlan,
    MeteredLLM,
    NoPlan,
)
from xapp.policy.progress import retrieval_gain
from xapp.policy.strategies import LoopState, make_strategy
from xapp.store.health import StoreHealth
from xapp.store.knowledge_base import KnowledgeBase
from xapp.store.supervisor import StoreSupervisor
from xapp.telemetry import attrs

tracer = trace.get_tracer("xapp")

POLICY, DECOMPOSER, RETRIEVER, REASONER, SYNTHESIZER = (c.value for c in Component)

# Fewest tokens worth generating: a sub-query, a reasoning note, an open answer, a justification.
MIN_QUERY_TOKENS = 6
MIN_NOTE_TOKENS = 12
# An open answer: a few sentences. Shorter ones lost their facts: on our set at 5000 ms the 1.5B's answers of
# 16-34 tokens (all the CPU allowed after 4 passages) held their key facts for 3 of 38 questions, often cut
# before the fact ("... the command is."), where the extractive answers held them for 25 (docs/performance.md).
MIN_ANSWER_TOKENS = 64
MIN_JUSTIFICATION_TOKENS = 16
# An open answer is the LLM's only when its prompt shows at least this many passages (else extractive): the
# two richest evidence levels, 4-6 passages of 400-500 characters.
MIN_ANSWER_PASSAGES = 4
# What the loop keeps time for in the final LLM synthesis: about two passages of evidence and, for an open
# question, an answer of MIN_ANSWER_TOKENS (the answer is what the caller reads: on a CPU, where one token
# costs ~90 ms, LLM sub-queries run only when such an answer still fits after them).
RESERVE_EVIDENCE_TOKENS = 160
# Evidence less similar than this is not about the question. Down to it, evidence below evidence_min_score is
# still shown to an option choice when it names exactly one option (prompts.options_named): of the questions
# the gate held back at 0.5-0.7, the LLM chose right with such evidence for 4 of 9 (closed-book 3) on
# ORAN-Bench dev and 14 of 16 (closed-book 7) on our set; for the rest evidence lowered it (dev 108 vs 118 of
# 167). Below it the template scorer picks the option closest in meaning to the question instead of scoring
# the options against the evidence: ORAN-Bench dev 30.4 % vs 27.8 %, our set unchanged at 62.5 % (at 0.7 dev
# rose to 31.8 % but ours fell to 53.1 %) (docs/performance.md).
RELATED_MIN_SCORE = 0.5
# Start-up calibration: the fastest of this many rounds. The per-call overhead is learned only there, and one
# call slowed by a moment's contention once set it at 224 ms instead of ~135 ms for a whole run: every plan
# too pessimistic, evidence left out of 18 choices, our set at 1 s 62.5 % instead of 79.2 %.
CALIBRATION_ROUNDS = 2
# The leanest evidence an option choice shows: one passage cut to 200 characters (prompts.EVIDENCE_LEVELS).
LEAN_EVIDENCE_TOKENS = 60

StepCallback = Callable[[Step], None]


def _best_score(run: _Run) -> float | None:
    """The highest similarity of any passage retrieved so far (None before any): the evidence gate's input."""
    return max((p.score for s in run.steps for p in s.passages), default=None)


def _prefixed(on_text: TextCallback, prefix: str) -> TextCallback:
    """``on_text`` with ``prefix`` sent before the first piece of text."""
    pending = [prefix]

    def send(text: str) -> None:
        on_text((pending.pop() if pending else "") + text)

    return send


@dataclass
class _Run:
    """Mutable state of one request."""

    question: Question
    budget: Budget
    use_llm: bool
    steps: list[Step] = field(default_factory=list)
    progress: float = 0.0
    seen: set[str] = field(default_factory=set)
    paths: list[PathKind] = field(default_factory=list)
    fallbacks: list[Fallback] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    engine_error: str | None = None  # set when the engine itself failed during this request
    trimmed: str = ""
    bare_synthesis_tokens: int | None = None  # the synthesis prompt without evidence, counted once
    on_text: TextCallback | None = None  # streams the LLM's answer text as it is generated
    llm_steps_off: str = ""  # why the steps before the answer no longer use the LLM ("" while they may)

    def add_time(self, component: str, ms: float) -> None:
        self.timings[component] = self.timings.get(component, 0.0) + ms

    def note(self, result: ComponentResult) -> None:
        self.paths.append(result.path)
        if result.engine_error:
            self.engine_error = result.engine_error
        if result.fallback:
            self.fallback(result.fallback)

    def fallback(self, fallback: Fallback) -> None:
        """Once per component and cause: the figures of the first occurrence are the ones reported."""
        if any((f.component, f.cause) == (fallback.component, fallback.cause) for f in self.fallbacks):
            return
        self.fallbacks.append(fallback)
        span = trace.get_current_span()
        span.add_event(
            attrs.SPAN_FALLBACK,
            {
                attrs.COMPONENT: fallback.component.value,
                attrs.FALLBACK_CAUSE: fallback.cause.value,
                attrs.BUDGET_REMAINING_MS: self.budget.remaining_ms(),
            },
        )


class ArgoPipeline:
    """One per process, shared by all requests; safe to use from many concurrent tasks."""

    def __init__(
        self,
        settings: Settings,
        kb: KnowledgeBase | None,
        llm: LLM | None,
        estimator: LatencyEstimator | None = None,
        costs: LLMCostModel | None = None,
        store_health: StoreHealth | None = None,
    ) -> None:
        self.kb = kb
        # Fed by every query's outcome (and the store supervisor's pings, when there is one).
        self.store = store_health or StoreHealth(
            down_after=settings.store_down_after,
            connected=kb is not None,
            detail="no knowledge base is configured",
        )
        self.costs = costs or LLMCostModel()
        self.llm: MeteredLLM | None = MeteredLLM(llm, self.costs) if llm is not None else None
        self.engine = llm
        self.estimator = estimator or LatencyEstimator.for_settings(settings)
        self.llm_error: str | None = None
        self._llm_was_running = True
        self.llm_calibrated = False  # calibrate_llm ran against a running engine
        self.update_settings(settings)

    def update_settings(self, settings: Settings) -> None:
        """Hot reload: strategy, MDP, step cap, top-k and token caps apply to the next request."""
        self.settings = settings
        embedder = self.kb.embedder if self.kb is not None else None
        self.decomposer = Decomposer(self.llm)
        self.retriever = Retriever(self.kb, settings.top_k) if self.kb is not None else None
        self.reasoner = Reasoner(self.llm)
        self.synthesizer = Synthesizer(self.llm, embedder, RELATED_MIN_SCORE)
        make_strategy(settings.strategy, settings)  # solve (and cache) the MDP now, not on a request

    def attach_store(self, kb: KnowledgeBase) -> None:
        """The knowledge base, once a store that was unreachable at start-up answers."""
        self.kb = kb
        self.update_settings(self.settings)
        self.store.connected()

    def budget(self, deadline: float) -> Budget:
        return Budget(deadline, self.estimator, self.costs)

    def calibrate(self, rounds: int = 2) -> None:
        """Measure this machine before the first request and make the results the estimates' priors: a
        retrieval, and the template synthesis's embedding of the options. The first round also loads the
        embedder and the index, so it is not counted."""
        if self.kb is None:
            return
        options = [f"Option {i}: the E2 interface of the near-RT RIC." for i in range(4)]
        for _ in range(rounds):
            t0 = time.perf_counter()
            try:
                self.kb.query("O-RAN near-RT RIC", self.settings.top_k)
            except StoreUnavailable as exc:  # the store failed since it connected: the priors stand
                self.store.error(str(exc))
                return
            t1 = time.perf_counter()
            self.kb.embedder.embed(options)
            t2 = time.perf_counter()
        self.estimator.set_prior("retrieve", t1 - t0)
        self.estimator.set_prior("synthesize.template", t2 - t1)

    async def calibrate_llm(self) -> None:
        """Fit the LLM cost model to this machine with a few short calls (about 2.5 s on 2 CPU cores for the
        1.5B default): option choices on a short and a long prompt, the fastest of CALIBRATION_ROUNDS each,
        give the per-call overhead and the prefill time per token, a 4-token generation the decode time per
        token. A warm-up call comes first. Later calls refine the prefill and decode costs online (the
        overhead only here)."""
        if self.engine is None or not self.llm_running():
            return  # a remote LLM server that does not answer yet: the priors stand until calls teach the model
        engine, far = self.engine, time.monotonic() + 120.0
        question = Question("Which interface connects the near-RT RIC to E2 nodes?", ("E2", "A1", "O1", "O2"))
        labels = prompts.option_labels(question)

        def prompt(evidence_words: int) -> list[dict[str, str]]:
            # A nonce per prompt so that nothing but the shared system turn comes from the prefix cache.
            filler = " ".join(f"near-RT RIC E2 node {i} {uuid.uuid4().hex[:6]}" for i in range(evidence_words // 6))
            step = Step(Action.RETRIEVE, PathKind.TEMPLATE, 0, 0, 0, passages=[Passage("c", filler, "cal", "", 1.0)])
            return prompts.choose_variants(question, [step] if evidence_words else [])[0].messages

        bare = prompt(0)
        await engine.choose(bare, labels, deadline=far)  # warm-up
        rounds = [
            (await engine.choose(bare, labels, deadline=far), await engine.choose(prompt(240), labels, deadline=far))
            for _ in range(CALIBRATION_ROUNDS)
        ]
        a = min((short for short, _ in rounds), key=lambda c: c.total_s)
        b = min((long for _, long in rounds), key=lambda c: c.total_s)
        gen = await engine.generate(bare, max_tokens=4, deadline=far)
        na, nb = a.prompt_tokens - a.cached_tokens, b.prompt_tokens - b.cached_tokens
        prefill = max(b.total_s - a.total_s, 0.0) / max(nb - na, 1)
        decode = (gen.total_s - gen.ttft_s) / max(gen.completion_tokens - 1, 1)
        self.costs.calibrate(
            overhead_s=a.total_s - prefill * na,
            prefill_s=prefill,
            decode_s=decode,
            cached_tokens=(a.cached_tokens + b.cached_tokens + gen.cached_tokens) / 3,
        )
        self.llm_calibrated = True

    def calibrate_llm_when_up(self) -> None:
        """An LLM server that did not answer at start-up (``RemoteLLM.when_up``): calibrate when it first does."""
        when_up = getattr(self.engine, "when_up", None)
        if callable(when_up) and not self.llm_calibrated:
            when_up(self.calibrate_llm)

    @property
    def model_name(self) -> str:
        return getattr(self.engine, "model_name", "") if self.engine is not None else ""

    def _llm_answers(self, question: Question) -> bool:
        """Whether the LLM may answer ``question``: it chooses options; an open question is answered
        extractively unless ``llm_open_answers`` (then no LLM step serves it either)."""
        return bool(question.options) or self.settings.llm_open_answers

    def llm_running(self) -> bool:
        """The engine is up: always for one in this process; a remote server's last health probe answered."""
        return self.engine is not None and bool(getattr(self.engine, "is_running", True))

    def health(self) -> dict[str, bool]:
        """Honest dependency state: the store answers, and the engine is loaded, running and not failing."""
        store_ok = self.kb is not None and self.store.serving  # recent outcomes: no call to the store here
        running = self.llm_running()
        if running and not self._llm_was_running:
            self.llm_error = None  # a remote server that answers its probes again: the failure is over
        self._llm_was_running = running
        llm_ok = not self.settings.llm or (running and self.llm_error is None)
        return {"store": store_ok, "llm": llm_ok}

    # ---- the whole loop ------------------------------------------------------------------------
    async def answer(
        self,
        question: Question,
        *,
        strategy: str | None = None,
        deadline: float,
        on_step: StepCallback | None = None,
        on_text: TextCallback | None = None,
        busy: Callable[[], bool] | None = None,
    ) -> Answer:
        """``on_step`` gets each step as it completes, ``on_text`` the LLM's answer text as it is generated
        (the chosen option's line, then any justification; for open questions the draft, which the final answer
        may end earlier, on its last full sentence). ``busy``: True while other requests wait for a slot (the
        server's admission); the loop then answers from the first passages it finds instead of searching on
        with the time its slot could give a waiting request."""
        name = strategy or self.settings.strategy
        strat = make_strategy(name, self.settings)
        llm_answers = strat.uses_llm and self._llm_answers(question)
        run = _Run(question, self.budget(deadline), use_llm=llm_answers and self.llm_running(), on_text=on_text)
        if llm_answers and not run.use_llm:
            detail = "LLM engine not loaded" if self.settings.llm else "LLM disabled by configuration"
            if self.llm is not None:
                detail = "LLM engine not running (its server does not answer)"
            run.fallback(Fallback(Component.SYNTHESIZER, Cause.NO_ENGINE, detail))
        mdp = self.settings.mdp
        while len(run.steps) < self.settings.max_steps:
            t0 = time.perf_counter()
            with tracer.start_as_current_span(attrs.SPAN_POLICY) as span:
                state = LoopState(
                    run.progress,
                    len(run.steps),
                    sum(s.action is Action.RETRIEVE for s in run.steps),
                    sum(s.action is Action.REASON for s in run.steps),
                )
                action = strat.decide(state)
                span.set_attribute(attrs.STRATEGY, name)
                span.set_attribute(attrs.PROGRESS, run.progress)
                span.set_attribute(attrs.ACTION, action.value)
            run.add_time(POLICY, (time.perf_counter() - t0) * 1000.0)
            if action is Action.TERMINATE:
                break
            keep = self._reserve(run)
            if action is Action.RETRIEVE and (skip := self._closed_book_now(run)):
                run.fallback(Fallback(Component.RETRIEVER, Cause.NO_TIME, skip))
                break
            if action is Action.RETRIEVE:
                step = await self._retrieve_step(run, keep, mdp.delta_retrieve)
            else:
                step = await self._reason_step(run, keep, mdp.delta_reason)
            if step is None:
                break
            step.progress_after = min(step.progress_after, mdp.u_max)
            run.progress = step.progress_after
            run.steps.append(step)
            if on_step is not None:
                on_step(step)
            if busy is not None and step.passages and busy():
                detail = "no further retrieval: other requests wait for a slot; answered from the passages found"
                run.fallback(Fallback(Component.RETRIEVER, Cause.NO_TIME, detail))
                break
            stale = step.action is Action.RETRIEVE and step.progress_after <= step.progress_before
            if stale and strat.stops_when_stale:
                break  # the search brought nothing new: more of the same would only spend the budget
        return await self._finish(run, name)

    def _reserve(self, run: _Run) -> float:
        """What must stay free after a step: the lexical template synthesis always, and the LLM synthesis
        (the option choice, or an answer of MIN_ANSWER_TOKENS; with about two passages of evidence, else
        none) while it still fits. Once passages are found, the time to show them is kept: the loop ends
        rather than search on without time to read what it found. Once no LLM synthesis fits, the steps before
        the answer stop using the LLM (``run.llm_steps_off`` says why): an LLM sub-query or note would only
        take the answer's time."""
        keep = LEXICAL_RESERVE_S
        if not run.use_llm or self.llm is None:
            return keep
        if run.bare_synthesis_tokens is None:
            run.bare_synthesis_tokens = self.llm.prompt_tokens(self._synthesis_variants(run)[-1].messages)
        out = self._synthesis_min_tokens(run)
        left = run.budget.remaining() - keep
        with_evidence = run.budget.llm_need(self.llm, run.bare_synthesis_tokens + RESERVE_EVIDENCE_TOKENS, out)
        if with_evidence <= left:
            return keep + with_evidence
        cost = run.budget.llm_need(self.llm, run.bare_synthesis_tokens, out)
        if cost <= left:
            # Passages found and no time for another step besides showing them: the next step would take the
            # time the LLM needs to read them (on our set at 1000 ms, 38 of 96 choices were made without any
            # evidence after a third search ate it). So no further step; without passages, search on.
            return keep + (with_evidence if any(s.passages for s in run.steps) else cost)
        run.llm_steps_off = (
            f"no time for the LLM before the answer (the LLM answer needs ~{cost * 1000:.0f} ms, "
            f"{max(left, 0.0) * 1000:.0f} ms left)"
        )
        return keep

    def _closed_book_now(self, run: _Run) -> str:
        """Why an option choice should be made now, closed-book, instead of after a first retrieval ("" when
        not): behind the calls already in the engine, the LLM could not read even the leanest evidence once a
        retrieval is done, but the choice without evidence still fits. The retrieval would only take the
        time (and, on a loaded CPU, the cores) the choice needs. Under load this keeps the LLM's choice, right
        far more often than the template's scoring (ORAN-Bench dev: 67 % closed-book, 27 % template)."""
        if not (run.use_llm and run.question.options and self.llm is not None and run.bare_synthesis_tokens):
            return ""
        queued = len(self.llm.queued())
        if not queued or any(s.action is Action.RETRIEVE for s in run.steps):
            # With an idle engine the forecast alone decides nothing here: the planner is cautious (its safety
            # factor), and after the retrieval the call may still fit with evidence, as it mostly does at 1 s.
            return ""
        left = run.budget.remaining() - LEXICAL_RESERVE_S
        retrieve = self.estimator.estimate("retrieve")
        lean = run.budget.llm_need(self.llm, run.bare_synthesis_tokens + LEAN_EVIDENCE_TOKENS, 1)
        if retrieve + lean <= left:
            return ""
        bare = run.budget.llm_need(self.llm, run.bare_synthesis_tokens, 1)
        if bare > left:
            return ""
        return (
            "retrieval skipped: the LLM's choice could not read its evidence in time (a retrieval "
            f"~{retrieve * 1000:.0f} ms and the choice with one passage ~{lean * 1000:.0f} ms, "
            f"{left * 1000:.0f} ms left, {queued} LLM call(s) in the engine); chose without evidence"
        )

    def _synthesis_min_tokens(self, run: _Run) -> int:
        return 1 if run.question.options else min(MIN_ANSWER_TOKENS, self.settings.max_tokens_synthesize)

    def _plan(
        self,
        run: _Run,
        component: Component,
        variants: Sequence[prompts.PromptVariant],
        *,
        min_tokens: int,
        max_tokens: int,
        keep: float,
    ) -> LLMPlan | Fallback:
        """The budget's plan for an LLM call of ``component``, or the no-time fallback with its figures."""
        assert self.llm is not None
        plan = run.budget.plan_llm(self.llm, variants, min_tokens=min_tokens, max_tokens=max_tokens, keep=keep)
        if isinstance(plan, NoPlan):
            return Fallback(component, Cause.NO_TIME, f"no time for the LLM ({plan.detail})")
        return plan

    async def _llm_step(
        self,
        run: _Run,
        component: Component,
        variants: Callable[[], Sequence[prompts.PromptVariant]],
        call: Callable[[LLMPlan], Awaitable[ComponentResult]],
        *,
        min_tokens: int,
        max_tokens: int,
        keep: float,
    ) -> tuple[ComponentResult | None, Fallback | None]:
        """A pre-answer LLM step (decompose, reason) when the budget plans one: its result, or None and why
        not (None, None when the run does not use the LLM). The caller then takes the template path."""
        if not run.use_llm:
            return None, None
        if run.llm_steps_off:
            return None, Fallback(component, Cause.NO_TIME, run.llm_steps_off)
        plan = self._plan(run, component, variants(), min_tokens=min_tokens, max_tokens=max_tokens, keep=keep)
        if not isinstance(plan, LLMPlan):
            return None, plan
        return await call(plan), None

    def _synthesis_variants(self, run: _Run) -> list[prompts.PromptVariant]:
        """The synthesis prompt at every evidence level, richest first; without evidence when no passage is
        close enough to the question to be about it (such evidence misleads the LLM more than it helps), unless
        it names exactly one of the options (RELATED_MIN_SCORE)."""
        build = prompts.choose_variants if run.question.options else prompts.answer_variants
        best = _best_score(run)
        gate = self.settings.evidence_min_score
        if best is None or best >= gate:
            return build(run.question, run.steps)
        # Less similar evidence that singles out one option is about them: shown too (checked only here, as it
        # cuts the lead passage once more).
        question = run.question
        if best >= RELATED_MIN_SCORE and question.options and prompts.options_named(question, run.steps) == 1:
            return build(question, run.steps)
        note = f"evidence left out: best passage similarity {best:.2f} < evidence_min_score {gate:.2f}"
        return [prompts.PromptVariant(v.messages, note) for v in build(run.question, [])]

    async def _decompose(self, run: _Run, keep: float) -> ComponentResult | None:
        budget = run.budget
        with tracer.start_as_current_span(attrs.SPAN_DECOMPOSE) as span:
            t0 = time.perf_counter()
            result, no_llm = None, None
            if self.settings.llm_subqueries:
                result, no_llm = await self._llm_step(
                    run,
                    Component.DECOMPOSER,
                    lambda: [prompts.PromptVariant(self.decomposer.messages(run.question, run.steps))],
                    lambda plan: self.decomposer.decompose(
                        run.question, run.steps, plan.messages, max_tokens=plan.max_tokens, deadline=plan.deadline
                    ),
                    min_tokens=MIN_QUERY_TOKENS,
                    max_tokens=self.settings.max_tokens_decompose,
                    keep=keep + self.estimator.estimate("retrieve"),
                )
            if result is None:
                if not budget.fits("decompose.template", "retrieve", keep=keep):
                    run.fallback(
                        Fallback(
                            Component.RETRIEVER,
                            Cause.NO_TIME,
                            "no time left for another retrieval ("
                            + budget.shortfall("decompose.template", "retrieve", keep=keep)
                            + ")",
                        )
                    )
                    return None
                result = self.decomposer.template(run.question, run.steps)
                result.fallback = no_llm
                self.estimator.observe("decompose.template", time.perf_counter() - t0)
            elapsed = time.perf_counter() - t0
            span.set_attribute(attrs.PATH, result.path.value)
            run.add_time(DECOMPOSER, elapsed * 1000.0)
            return result

    async def _search(self, query: str, top_k: int | None, until: float) -> tuple[list[Passage], Fallback | None]:
        """One retrieval that answers by ``until`` whatever the store does: passages, or none and why. Its
        outcome feeds the store's health; a query that was given at least ``store_timeout_ms`` and did not
        answer counts as the store's timeout (one cut short by its request's deadline does not)."""
        assert self.retriever is not None
        passages: list[Passage] = []
        fallback: Fallback | None = None
        with tracer.start_as_current_span(attrs.SPAN_RETRIEVE) as span:
            span.set_attribute(attrs.DB_SYSTEM, attrs.DB_SYSTEM_CHROMA)
            span.set_attribute(attrs.RETRIEVAL_TOP_K, top_k or self.retriever.top_k)
            t0 = time.perf_counter()
            # A Chroma query cannot be aborted: stop waiting for it when its time is up.
            timeout = max(until - time.monotonic(), 0.001)
            try:
                passages = await asyncio.wait_for(self.retriever.retrieve(query, top_k), timeout)
                self.store.success()
                self.estimator.observe("retrieve", time.perf_counter() - t0)
            except StoreUnavailable as exc:  # a store failure says nothing about its speed
                self.store.error(str(exc))
                span.record_exception(exc)
                fallback = Fallback(Component.RETRIEVER, Cause.STORE_ERROR, str(exc))
            except asyncio.TimeoutError:
                self.estimator.observe("retrieve", time.perf_counter() - t0, censored=True)
                detail = f"Chroma did not answer within {timeout * 1000:.0f} ms"
                if timeout * 1000.0 >= self.settings.store_timeout_ms:
                    self.store.timeout(detail)
                fallback = Fallback(Component.RETRIEVER, Cause.STORE_TIMEOUT, detail)
            span.set_attribute(attrs.RETRIEVAL_HITS, len(passages))
        return passages, fallback

    async def _retrieve_step(self, run: _Run, keep: float, delta: float) -> Step | None:
        if self.retriever is None:
            run.fallback(Fallback(Component.RETRIEVER, Cause.NO_STORE, self._unavailable()))
            return None
        if not self.store.serving:  # the supervisor's pings (or the Retrieve RPC) find out when it is back
            run.fallback(Fallback(Component.RETRIEVER, Cause.STORE_ERROR, self._unavailable()))
            return None
        if not self.decomposer.candidates(run.question, run.steps):
            return None  # every sub-query has been searched: another retrieval would only repeat one
        before = run.progress
        t_step = time.perf_counter()
        sub = await self._decompose(run, keep)
        if sub is None:
            return None
        run.note(sub)
        t0 = time.perf_counter()
        passages, failed = await self._search(sub.text, None, run.budget.deadline - keep)
        retrieve_ms = (time.perf_counter() - t0) * 1000.0
        run.add_time(RETRIEVER, retrieve_ms)
        if failed:
            run.fallback(failed)
        new = [p.score for p in passages if p.id not in run.seen]
        gain = retrieval_gain(new, self.settings.min_score, self.settings.evidence_min_score)
        run.seen.update(p.id for p in passages)
        latency_ms = (time.perf_counter() - t_step) * 1000.0
        step = Step(
            action=Action.RETRIEVE,
            path=sub.path,
            progress_before=before,
            progress_after=before + delta * gain,
            latency_ms=latency_ms,
            query=sub.text,
            passages=passages,
            usage=sub.usage,
            fallback_reason=sub.fallback_reason,
            timings_ms={DECOMPOSER: latency_ms - retrieve_ms, RETRIEVER: retrieve_ms},
        )
        if failed and failed.cause in (Cause.STORE_ERROR, Cause.STORE_TIMEOUT):
            return None  # the store is down or too slow: stop retrieving, answer from what we have
        return step

    def _unavailable(self) -> str:
        return f"retrieval unavailable: {self.store.detail or 'no knowledge base'}"

    async def _reason_step(self, run: _Run, keep: float, delta: float) -> Step | None:
        budget = run.budget
        before = run.progress
        with tracer.start_as_current_span(attrs.SPAN_REASON) as span:
            t0 = time.perf_counter()
            result, no_llm = await self._llm_step(
                run,
                Component.REASONER,
                lambda: prompts.reason_variants(run.question, run.steps),
                lambda plan: self.reasoner.reason(
                    run.question, run.steps, plan.messages, max_tokens=plan.max_tokens, deadline=plan.deadline
                ),
                min_tokens=MIN_NOTE_TOKENS,
                max_tokens=self.settings.max_tokens_reason,
                keep=keep,
            )
            if result is None:
                if not budget.fits("reason.template", keep=keep):
                    detail = "no time left (" + budget.shortfall("reason.template", keep=keep) + ")"
                    run.fallback(Fallback(Component.REASONER, Cause.NO_TIME, detail))
                    return None
                result = self.reasoner.template(run.question, run.steps)
                result.fallback = no_llm
                self.estimator.observe("reason.template", time.perf_counter() - t0)
            elapsed = time.perf_counter() - t0
            span.set_attribute(attrs.PATH, result.path.value)
            span.set_attribute(attrs.PROGRESS_BEFORE, before)
            span.set_attribute(attrs.PROGRESS_AFTER, before + delta)
            run.add_time(REASONER, elapsed * 1000.0)
        run.note(result)
        return Step(
            action=Action.REASON,
            path=result.path,
            progress_before=before,
            progress_after=before + delta,
            latency_ms=elapsed * 1000.0,
            query=result.text,
            usage=result.usage,
            fallback_reason=result.fallback_reason,
            timings_ms={REASONER: elapsed * 1000.0},
        )

    async def _synthesize(self, run: _Run) -> ComponentResult:
        with tracer.start_as_current_span(attrs.SPAN_SYNTHESIZE) as span:
            t0 = time.perf_counter()
            result = await self._synthesize_llm(run) if run.use_llm else None
            if result is None:
                result = await self._template_synthesis(run)
            span.set_attribute(attrs.PATH, result.path.value)
            span.set_attribute(attrs.BUDGET_REMAINING_MS, run.budget.remaining_ms())
            if result.choice is not None:
                span.set_attribute(attrs.CHOICE, result.choice)
            run.add_time(SYNTHESIZER, (time.perf_counter() - t0) * 1000.0)
        run.note(result)
        return result

    def _thin_evidence(self, run: _Run, variant: prompts.PromptVariant) -> str:
        """Why an open answer should be extractive rather than the LLM's: passages close enough to the question
        were found (``evidence_min_score``) but its prompt would show fewer than MIN_ANSWER_PASSAGES of them.
        From snippets the 1.5B's answers named wrong ports and names: on our set at 5000 ms, with at least two
        passages required, 13 of its 80 answers held their key facts; extractive answers held them for 62 of
        96 (docs/performance.md).
        "" when the LLM may answer (also when no passage is close enough: then it answers from what it knows)."""
        best = _best_score(run)
        if best is None or best < self.settings.evidence_min_score:
            return ""
        found = len({p.id for s in run.steps for p in s.passages})
        if variant.passages >= min(MIN_ANSWER_PASSAGES, found):
            return ""
        return (
            f"the LLM answer fits only with {variant.passages} of {found} passages as evidence; "
            "answered extractively from all of them"
        )

    async def _synthesize_llm(self, run: _Run) -> ComponentResult | None:
        """The LLM's answer (or option) with as much evidence as the time left allows; None: use templates."""
        options = bool(run.question.options)
        plan = self._plan(
            run,
            Component.SYNTHESIZER,
            self._synthesis_variants(run),
            min_tokens=self._synthesis_min_tokens(run),
            max_tokens=1 if options else self.settings.max_tokens_synthesize,
            keep=LEXICAL_RESERVE_S,
        )
        if isinstance(plan, Fallback):
            run.fallback(plan)
            return None
        if not options:
            thin = self._thin_evidence(run, plan.variant)
            if thin:
                run.fallback(Fallback(Component.SYNTHESIZER, Cause.NO_TIME, thin))
                return None
        run.trimmed = plan.variant.trimmed
        if options:
            result = await self.synthesizer.choose(run.question, run.steps, plan.messages, deadline=plan.deadline)
            if result.choice is not None:
                if run.on_text is not None:
                    run.on_text(prompts.option_line(run.question, result.choice))
                await self._justify(run, plan, result)
        else:
            result = await self.synthesizer.answer(
                plan.messages, max_tokens=plan.max_tokens, deadline=plan.deadline, on_text=run.on_text
            )
            if result.path is PathKind.LLM:
                result.text, _ = prompts.resolve_citations(result.text, run.steps, plan.variant.passages)
        if result.choice is None and not result.text:  # nothing usable: say why, answer through templates
            run.engine_error = result.engine_error or run.engine_error
            if result.fallback:
                run.fallback(result.fallback)
            return None
        return result

    async def _justify(self, run: _Run, plan: LLMPlan, result: ComponentResult) -> None:
        """A one-sentence reason for the chosen option, only when the time left allows one."""
        assert result.choice is not None
        messages = plan.messages + [
            {"role": "assistant", "content": prompts.option_labels(run.question)[result.choice - 1]},
            {"role": "user", "content": "In one sentence, why?"},
        ]
        why = self._plan(
            run,
            Component.SYNTHESIZER,
            [prompts.PromptVariant(messages)],
            min_tokens=MIN_JUSTIFICATION_TOKENS,
            max_tokens=self.settings.max_tokens_synthesize,
            keep=LEXICAL_RESERVE_S,
        )
        if isinstance(why, Fallback):
            return  # optional: no time for it is not a fallback
        on_text = _prefixed(run.on_text, " — ") if run.on_text is not None else None
        reply = await self.synthesizer.answer(
            why.messages, max_tokens=why.max_tokens, deadline=why.deadline, on_text=on_text
        )
        if reply.text and reply.path is PathKind.LLM:
            result.text = f"{prompts.option_line(run.question, result.choice)} — {reply.text}"
            result.usage = Usage(
                result.usage.prompt_tokens + reply.usage.prompt_tokens,
                result.usage.completion_tokens + reply.usage.completion_tokens,
                result.usage.ttft_ms,
                reply.usage.aborted,
            )

    async def _template_synthesis(self, run: _Run) -> ComponentResult:
        """Extractive synthesis with embedding option scoring while time allows; lexical-only (~1 ms) otherwise.

        The embedding runs in a thread that we stop waiting for at the deadline, so a loaded CPU delays
        the answer's quality, never the answer."""
        lexical = Synthesizer(None, None)
        timeout = run.budget.remaining() - LEXICAL_RESERVE_S
        if run.budget.fits("synthesize.template", keep=LEXICAL_RESERVE_S):
            t0 = time.perf_counter()
            try:
                result = await asyncio.wait_for(
                    asyncio.to_thread(self.synthesizer.template, run.question, run.steps), timeout
                )
                self.estimator.observe("synthesize.template", time.perf_counter() - t0)
                return result
            except asyncio.TimeoutError:
                self.estimator.observe("synthesize.template", time.perf_counter() - t0, censored=True)
        result = lexical.template(run.question, run.steps)
        if run.question.options:
            detail = "embedding option scoring skipped, out of time"
            result.fallback = Fallback(Component.SYNTHESIZER, Cause.NO_TIME, detail)
        return result

    async def _finish(self, run: _Run, strategy: str) -> Answer:
        result = await self._synthesize(run)
        elapsed = run.budget.elapsed_ms()
        run.timings["overhead"] = max(elapsed - sum(run.timings.values()), 0.0)
        sources = list(dict.fromkeys(src for s in run.steps for src in s.sources))
        self._note_llm_health(run)
        return Answer(
            answer=result.text,
            choice=result.choice,
            path=result.path,  # who wrote the answer the caller reads; each step carries its own path
            fallback_reason="; ".join(f.text for f in run.fallbacks) or None,
            steps=run.steps,
            elapsed_ms=elapsed,
            strategy=strategy,
            deadline_ms=(run.budget.deadline - run.budget.started) * 1000.0,
            sources=sources,
            timings_ms=run.timings,
            synthesis_usage=result.usage,
            model=self.model_name if run.use_llm else "",
            option_probabilities=result.probabilities,
            trimmed=run.trimmed,
            fallbacks=list(run.fallbacks),
        )

    def _note_llm_health(self, run: _Run) -> None:
        if run.engine_error:
            self.llm_error = run.engine_error
        elif PathKind.LLM in run.paths:
            self.llm_error = None  # the engine answered again: recovered

    # ---- the single-component RPCs ---------------------------------------------------------------
    async def decompose(self, question: Question, history: Sequence[Step], *, deadline: float) -> Step:
        run = _Run(question, self.budget(deadline), use_llm=self.llm_running(), steps=list(history))
        sub = await self._decompose(run, LEXICAL_RESERVE_S)
        if sub is None:
            sub = self.decomposer.template(question, history)
            sub.fallback = run.fallbacks[-1] if run.fallbacks else None
        self._note_llm_health(run)
        return Step(
            Action.RETRIEVE,
            sub.path,
            0.0,
            0.0,
            run.budget.elapsed_ms(),
            query=sub.text,
            usage=sub.usage,
            fallback_reason=sub.fallback_reason,
            timings_ms=dict(run.timings),
        )

    async def retrieve(self, query: str, *, top_k: int | None = None, deadline: float) -> Step:
        """One retrieval, answered even when the store fails, is too slow or not connected: no passages, and
        the reason. It queries a store that is not serving, too: a caller's probe may find it back."""
        if self.retriever is None:
            return Step.search(query, 0.0, fallback_reason=self._unavailable())
        t0 = time.perf_counter()
        passages, failed = await self._search(query, top_k, deadline)
        return Step.search(query, (time.perf_counter() - t0) * 1000.0, passages, failed.text if failed else None)

    async def synthesize(self, question: Question, history: Sequence[Step], *, deadline: float) -> Answer:
        use_llm = self._llm_answers(question) and self.llm_running()
        run = _Run(question, self.budget(deadline), use_llm=use_llm, steps=list(history))
        run.progress = max((s.progress_after for s in history), default=0.0)
        return await self._finish(run, "synthesize")


@contextlib.asynccontextmanager
async def build_pipeline(settings: Settings, llm: LLM | None = None) -> AsyncIterator[ArgoPipeline]:
    """Open the knowledge base (ingesting the built-in one on first use) and, unless given or disabled,
    start the vLLM engine, or with ``llm_url`` the client of a vLLM server; both are released on exit.

    Everything slow runs off the event loop, so health probes answer during start-up. A store that does not
    answer does not stop the start: the pipeline answers without retrieval (saying so) while the store
    supervisor retries with back-off, and takes the knowledge base over once the store answers."""
    store = StoreHealth(down_after=settings.store_down_after, connected=False, detail="connecting")
    supervisor = StoreSupervisor(settings, store)
    kb = await supervisor.connect_once()
    if kb is None:
        from xapp.telemetry.logging import get_logger

        get_logger(__name__).warning(
            "starting without the knowledge base; answers say retrieval is unavailable until it answers",
            detail=store.detail,
        )
    async with contextlib.AsyncExitStack() as stack:
        engine: LLM | None = llm
        if llm is None and settings.llm:
            # The engine's modules import transformers and more (seconds): in a thread, like the start itself.
            name, cls = ("xapp.llm.remote", "RemoteLLM") if settings.llm_url else ("xapp.llm.engine", "VLLMEngine")
            module = await asyncio.to_thread(importlib.import_module, name)
            engine = await stack.enter_async_context(getattr(module, cls).start(settings))
        pipeline = ArgoPipeline(settings, kb, engine, store_health=store)

        async def connected(late: KnowledgeBase) -> None:
            pipeline.attach_store(late)
            await asyncio.to_thread(pipeline.calibrate)

        supervisor.on_connected = connected
        await asyncio.to_thread(pipeline.calibrate)  # nothing to do without a knowledge base
        await pipeline.calibrate_llm()  # nothing to do without an engine
        pipeline.calibrate_llm_when_up()
        supervisor.start()
        stack.push_async_callback(supervisor.stop)
        yield pipeline
