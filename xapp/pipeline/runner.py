"""The ARGO loop for one question: ask the strategy, run the step, update progress U, synthesize in time.

The pipeline owns the deadline budget. It never starts a step whose estimated latency does not fit before
the deadline minus the reserve for the final synthesis; LLM work that runs long is aborted at its own
deadline, and the template path answers instead. The reply says which path produced it and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from opentelemetry import trace

from xapp.components.base import ComponentResult
from xapp.components.decomposer import Decomposer
from xapp.components.reasoner import Reasoner
from xapp.components.retriever import Retriever
from xapp.components.synthesizer import NeedsTemplate, Synthesizer
from xapp.config import Settings
from xapp.domain import Action, Answer, Passage, PathKind, Question, Step
from xapp.errors import StoreUnavailable
from xapp.llm import prompts
from xapp.llm.base import LLM
from xapp.pipeline.budget import LEXICAL_RESERVE_S, Budget, LatencyEstimator
from xapp.policy.strategies import LoopState, make_strategy
from xapp.store.knowledge_base import KnowledgeBase

tracer = trace.get_tracer("xapp")

# Component names as they appear in timings, metrics and the latency report.
POLICY, DECOMPOSER, RETRIEVER, REASONER, SYNTHESIZER = (
    "policy",
    "decomposer",
    "retriever",
    "reasoner",
    "synthesizer",
)

StepCallback = Callable[[Step], None]


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
    fallbacks: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    engine_error: str | None = None  # set when the engine itself failed during this request

    def add_time(self, component: str, ms: float) -> None:
        self.timings[component] = self.timings.get(component, 0.0) + ms

    def note(self, result: ComponentResult) -> None:
        self.paths.append(result.path)
        if result.engine_error:
            self.engine_error = result.engine_error
        if result.fallback_reason:
            self._add_reason(result.fallback_reason)

    def _add_reason(self, reason: str) -> None:
        """Once per kind: the same reason for every step ("no time for the LLM (needs …)") is said once,
        with the figures of its first occurrence."""
        kind = reason.split(" (", 1)[0]
        if all(r.split(" (", 1)[0] != kind for r in self.fallbacks):
            self.fallbacks.append(reason)

    def fallback(self, reason: str) -> None:
        self._add_reason(reason)
        with tracer.start_as_current_span("argo.fallback") as span:
            span.set_attribute("argo.fallback_reason", reason)
            span.set_attribute("argo.budget.remaining_ms", self.budget.remaining_ms())


def overall_path(paths: Sequence[PathKind]) -> PathKind:
    kinds = set(paths)
    if kinds <= {PathKind.LLM} and kinds:
        return PathKind.LLM
    if kinds <= {PathKind.TEMPLATE}:
        return PathKind.TEMPLATE
    return PathKind.MIXED


class ArgoPipeline:
    """One per process, shared by all requests; safe to use from many concurrent tasks."""

    def __init__(
        self,
        settings: Settings,
        kb: KnowledgeBase | None,
        llm: LLM | None,
        estimator: LatencyEstimator | None = None,
    ) -> None:
        self.kb = kb
        self.llm = llm
        self.estimator = estimator or LatencyEstimator.for_settings(settings)
        self.store_error: str | None = None  # last store failure, cleared by the next success
        self.llm_error: str | None = None
        self.update_settings(settings)

    def update_settings(self, settings: Settings) -> None:
        """Hot reload: strategy, MDP, step cap, top-k and token caps apply to the next request."""
        self.settings = settings
        embedder = self.kb.embedder if self.kb is not None else None
        self.decomposer = Decomposer(self.llm, settings.max_tokens_decompose)
        self.retriever = Retriever(self.kb, settings.top_k) if self.kb is not None else None
        self.reasoner = Reasoner(self.llm, settings.max_tokens_reason)
        self.synthesizer = Synthesizer(self.llm, settings.max_tokens_synthesize, embedder)
        make_strategy(settings.strategy, settings)  # solve (and cache) the MDP now, not on a request

    def calibrate(self, rounds: int = 2) -> None:
        """Measure this machine before the first request and make the results the estimates' priors: a
        retrieval, and the template synthesis's embedding of the options. The first round also loads the
        embedder and the index, so it is not counted."""
        if self.kb is None:
            return
        options = [f"Option {i}: the E2 interface of the near-RT RIC." for i in range(4)]
        for _ in range(rounds):
            t0 = time.perf_counter()
            self.kb.query("O-RAN near-RT RIC", self.settings.top_k)
            t1 = time.perf_counter()
            self.kb.embedder.embed(options)
            t2 = time.perf_counter()
        self.estimator.set_prior("retrieve", t1 - t0)
        self.estimator.set_prior("synthesize.template", t2 - t1)

    async def calibrate_llm(self) -> None:
        """Measure the engine's time to first token and per-token decode time with one short generation,
        and plan every LLM component with them (prompt + its own token cap) instead of generic priors."""
        if self.llm is None:
            return
        question = Question("What is the role of the near-RT RIC in O-RAN?")
        messages = prompts.synthesize_messages(question, [])
        for _ in range(2):  # the first one also warms up the engine
            gen = await self.llm.generate(messages, max_tokens=16, deadline=time.monotonic() + 120.0)
        per_token = (gen.total_s - gen.ttft_s) / max(gen.completion_tokens - 1, 1)
        for key, cap in (
            ("decompose.llm", self.settings.max_tokens_decompose),
            ("reason.llm", self.settings.max_tokens_reason),
            ("synthesize.llm", self.settings.max_tokens_synthesize),
        ):
            self.estimator.set_prior(key, gen.ttft_s + cap * per_token)

    @property
    def model_name(self) -> str:
        return getattr(self.llm, "model_name", "") if self.llm is not None else ""

    def health(self) -> dict[str, bool]:
        """Honest dependency state: the store answers, and the engine is loaded and not failing."""
        store_ok = self.kb is not None and self.kb.ping() and self.store_error is None
        llm_ok = not self.settings.llm or (self.llm is not None and self.llm_error is None)
        return {"store": store_ok, "llm": llm_ok}

    # ---- the whole loop ------------------------------------------------------------------------
    async def answer(
        self,
        question: Question,
        *,
        strategy: str | None = None,
        deadline: float,
        on_step: StepCallback | None = None,
    ) -> Answer:
        name = strategy or self.settings.strategy
        strat = make_strategy(name, self.settings)
        budget = Budget(deadline, self.estimator)
        run = _Run(question, budget, use_llm=strat.uses_llm and self.llm is not None)
        if strat.uses_llm and self.llm is None:
            run.fallbacks.append("LLM engine not loaded" if self.settings.llm else "LLM disabled by configuration")
        mdp = self.settings.mdp
        while len(run.steps) < self.settings.max_steps:
            t0 = time.perf_counter()
            with tracer.start_as_current_span("argo.policy") as span:
                state = LoopState(
                    run.progress,
                    len(run.steps),
                    sum(s.action is Action.RETRIEVE for s in run.steps),
                    sum(s.action is Action.REASON for s in run.steps),
                )
                action = strat.decide(state)
                span.set_attribute("argo.strategy", name)
                span.set_attribute("argo.progress", run.progress)
                span.set_attribute("argo.action", action.value)
            run.add_time(POLICY, (time.perf_counter() - t0) * 1000.0)
            if action is Action.TERMINATE:
                break
            keep = self._reserve(run)
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
        return await self._finish(run, name)

    def _reserve(self, run: _Run) -> float:
        """What must stay free after a step: the template synthesis always, the LLM synthesis while it fits."""
        keep = run.budget.final_reserve()
        if run.use_llm and run.budget.fits("synthesize.llm", keep=keep):
            keep += self.estimator.estimate("synthesize.llm")
        return keep

    async def _decompose(self, run: _Run, keep: float) -> ComponentResult | None:
        budget = run.budget
        with tracer.start_as_current_span("argo.decompose") as span:
            t0 = time.perf_counter()
            key = "decompose.template"
            if run.use_llm and budget.fits("decompose.llm", "retrieve", keep=keep):
                key = "decompose.llm"
                llm_deadline = budget.deadline - keep - self.estimator.estimate("retrieve")
                result = await self.decomposer.decompose(run.question, run.steps, llm_deadline)
            elif budget.fits("decompose.template", "retrieve", keep=keep):
                reason = None
                if run.use_llm:
                    reason = (
                        "decompose: no time for the LLM ("
                        + budget.shortfall("decompose.llm", "retrieve", keep=keep)
                        + ")"
                    )
                result = self.decomposer.template(run.question, run.steps, reason)
            else:
                run.fallback(
                    "retrieve: no time left for another retrieval ("
                    + budget.shortfall("decompose.template", "retrieve", keep=keep)
                    + ")"
                )
                return None
            elapsed = time.perf_counter() - t0
            self.estimator.observe(key, elapsed, censored=result.usage.aborted)
            span.set_attribute("argo.path", result.path.value)
            span.set_attribute("argo.subquery", result.text)
            if result.fallback_reason:
                span.set_attribute("argo.fallback_reason", result.fallback_reason)
            run.add_time(DECOMPOSER, elapsed * 1000.0)
            return result

    async def _retrieve_step(self, run: _Run, keep: float, delta: float) -> Step | None:
        if self.retriever is None:
            run.fallback("retrieve: no knowledge base")
            return None
        before = run.progress
        t_step = time.perf_counter()
        sub = await self._decompose(run, keep)
        if sub is None:
            return None
        run.note(sub)
        passages: list[Passage] = []
        with tracer.start_as_current_span("argo.retrieve") as span:
            span.set_attribute("db.system", "chroma")
            span.set_attribute("argo.retrieval.top_k", self.retriever.top_k)
            t0 = time.perf_counter()
            # A Chroma query cannot be aborted: stop waiting for it when the step's time is up.
            timeout = max(run.budget.deadline - keep - time.monotonic(), 0.001)
            timed_out = False
            try:
                passages = await asyncio.wait_for(self.retriever.retrieve(sub.text), timeout)
                self.store_error = None
            except StoreUnavailable as exc:
                self.store_error = str(exc)
                span.record_exception(exc)
                run.fallback(f"retrieve: {exc}")
            except asyncio.TimeoutError:
                timed_out = True
                run.fallback(f"retrieve: Chroma did not answer within {timeout * 1000:.0f} ms")
            elapsed = time.perf_counter() - t0
            self.estimator.observe("retrieve", elapsed, censored=timed_out)
            run.add_time(RETRIEVER, elapsed * 1000.0)
            span.set_attribute("argo.retrieval.hits", len(passages))
        new = [p for p in passages if p.id not in run.seen and p.score >= self.settings.min_score]
        run.seen.update(p.id for p in passages)
        step = Step(
            action=Action.RETRIEVE,
            path=sub.path,
            progress_before=before,
            progress_after=before + (delta if new else 0.0),
            latency_ms=(time.perf_counter() - t_step) * 1000.0,
            query=sub.text,
            passages=passages,
            usage=sub.usage,
            fallback_reason=sub.fallback_reason,
            timings_ms={DECOMPOSER: 0.0, RETRIEVER: elapsed * 1000.0},
        )
        step.timings_ms[DECOMPOSER] = step.latency_ms - step.timings_ms[RETRIEVER]
        if not passages and (self.store_error or timed_out):
            return None  # the store is down: stop retrieving, answer from what we have
        return step

    async def _reason_step(self, run: _Run, keep: float, delta: float) -> Step | None:
        budget = run.budget
        before = run.progress
        with tracer.start_as_current_span("argo.reason") as span:
            t0 = time.perf_counter()
            key = "reason.template"
            if run.use_llm and budget.fits("reason.llm", keep=keep):
                key = "reason.llm"
                result = await self.reasoner.reason(run.question, run.steps, budget.deadline - keep)
            elif budget.fits("reason.template", keep=keep):
                reason = None
                if run.use_llm:
                    reason = "reason: no time for the LLM (" + budget.shortfall("reason.llm", keep=keep) + ")"
                result = self.reasoner.template(run.question, run.steps, reason)
            else:
                run.fallback("reason: no time left (" + budget.shortfall("reason.template", keep=keep) + ")")
                return None
            elapsed = time.perf_counter() - t0
            self.estimator.observe(key, elapsed, censored=result.usage.aborted)
            span.set_attribute("argo.path", result.path.value)
            span.set_attribute("argo.progress.before", before)
            span.set_attribute("argo.progress.after", before + delta)
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
        budget = run.budget
        keep = budget.final_reserve()
        with tracer.start_as_current_span("argo.synthesize") as span:
            t0 = time.perf_counter()
            if run.use_llm and budget.fits("synthesize.llm", keep=keep):
                try:
                    result = await self.synthesizer.synthesize_llm(run.question, run.steps, budget.deadline - keep)
                    self.estimator.observe("synthesize.llm", time.perf_counter() - t0)
                    if run.question.options and result.choice is None:
                        result.choice = (await self._template_synthesis(run, None)).choice
                except NeedsTemplate as exc:
                    run.engine_error = exc.engine_error or run.engine_error
                    self.estimator.observe("synthesize.llm", time.perf_counter() - t0, censored=exc.usage.aborted)
                    result = await self._template_synthesis(run, exc.reason)
                    result.usage = exc.usage
            else:
                reason = None
                if run.use_llm:
                    reason = "synthesize: no time for the LLM (" + budget.shortfall("synthesize.llm", keep=keep) + ")"
                result = await self._template_synthesis(run, reason)
            elapsed = time.perf_counter() - t0
            span.set_attribute("argo.path", result.path.value)
            span.set_attribute("argo.budget.remaining_ms", budget.remaining_ms())
            if result.choice is not None:
                span.set_attribute("argo.choice", result.choice)
            run.add_time(SYNTHESIZER, elapsed * 1000.0)
        run.note(result)
        return result

    async def _template_synthesis(self, run: _Run, reason: str | None) -> ComponentResult:
        """Extractive synthesis with embedding option scoring while time allows; lexical-only (~1 ms) otherwise.

        The embedding runs in a thread that we stop waiting for at the deadline, so a loaded CPU delays
        the answer's quality, never the answer."""
        lexical = Synthesizer(None, 0, None)
        timeout = run.budget.remaining() - LEXICAL_RESERVE_S
        if run.budget.fits("synthesize.template", keep=LEXICAL_RESERVE_S):
            t0 = time.perf_counter()
            try:
                result = await asyncio.wait_for(
                    asyncio.to_thread(self.synthesizer.template, run.question, run.steps, reason), timeout
                )
                self.estimator.observe("synthesize.template", time.perf_counter() - t0)
                return result
            except asyncio.TimeoutError:
                self.estimator.observe("synthesize.template", time.perf_counter() - t0, censored=True)
        note = "synthesize: embedding option scoring skipped, out of time"
        return lexical.template(run.question, run.steps, f"{reason}; {note}" if reason else note)

    async def _finish(self, run: _Run, strategy: str) -> Answer:
        result = await self._synthesize(run)
        elapsed = run.budget.elapsed_ms()
        run.timings["overhead"] = max(elapsed - sum(run.timings.values()), 0.0)
        sources = list(dict.fromkeys(src for s in run.steps for src in s.sources))
        usage_llm = result.usage
        self._note_llm_health(run)
        return Answer(
            answer=result.text,
            choice=result.choice,
            path=overall_path(run.paths),
            fallback_reason="; ".join(run.fallbacks) or None,
            steps=run.steps,
            elapsed_ms=elapsed,
            strategy=strategy,
            deadline_ms=(run.budget.deadline - run.budget.started) * 1000.0,
            sources=sources,
            timings_ms=run.timings,
            synthesis_usage=usage_llm,
            model=self.model_name,
        )

    def _note_llm_health(self, run: _Run) -> None:
        if run.engine_error:
            self.llm_error = run.engine_error
        elif PathKind.LLM in run.paths:
            self.llm_error = None  # the engine answered again: recovered

    # ---- the single-component RPCs ---------------------------------------------------------------
    async def decompose(self, question: Question, history: Sequence[Step], *, deadline: float) -> Step:
        run = _Run(question, Budget(deadline, self.estimator), use_llm=self.llm is not None, steps=list(history))
        keep = run.budget.final_reserve()
        sub = await self._decompose(run, keep)
        if sub is None:
            sub = self.decomposer.template(question, history, run.fallbacks[-1] if run.fallbacks else None)
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
        """One retrieval, answered even when the store fails or is too slow: no passages, and the reason."""
        if self.retriever is None:
            raise StoreUnavailable("no knowledge base is configured")
        t0 = time.perf_counter()
        passages: list[Passage] = []
        reason: str | None = None
        with tracer.start_as_current_span("argo.retrieve") as span:
            span.set_attribute("db.system", "chroma")
            span.set_attribute("argo.retrieval.top_k", top_k or self.retriever.top_k)
            # A Chroma query cannot be aborted: stop waiting for it at the deadline.
            timeout = max(deadline - time.monotonic(), 0.001)
            try:
                passages = await asyncio.wait_for(self.retriever.retrieve(query, top_k), timeout)
                self.store_error = None
            except StoreUnavailable as exc:
                self.store_error = str(exc)
                span.record_exception(exc)
                reason = f"retrieve: {exc}"
            except asyncio.TimeoutError:
                reason = f"retrieve: Chroma did not answer within {timeout * 1000:.0f} ms"
            span.set_attribute("argo.retrieval.hits", len(passages))
        ms = (time.perf_counter() - t0) * 1000.0
        if reason is None or not self.store_error:  # a store failure says nothing about its speed
            self.estimator.observe("retrieve", ms / 1000.0, censored=reason is not None)
        return Step(
            Action.RETRIEVE,
            PathKind.TEMPLATE,
            0.0,
            0.0,
            ms,
            query=query,
            passages=passages,
            fallback_reason=reason,
            timings_ms={RETRIEVER: ms},
        )

    async def synthesize(self, question: Question, history: Sequence[Step], *, deadline: float) -> Answer:
        run = _Run(question, Budget(deadline, self.estimator), use_llm=self.llm is not None, steps=list(history))
        run.progress = max((s.progress_after for s in history), default=0.0)
        return await self._finish(run, "synthesize")


@contextlib.asynccontextmanager
async def build_pipeline(settings: Settings, llm: LLM | None = None) -> AsyncIterator[ArgoPipeline]:
    """Open the knowledge base (ingesting the built-in one on first use) and, unless given or disabled,
    start the vLLM engine; both are released on exit."""
    kb = KnowledgeBase.open(settings)
    kb.ensure_builtin()
    if llm is not None or not settings.llm:
        pipeline = ArgoPipeline(settings, kb, llm)
        pipeline.calibrate()
        yield pipeline
        return
    from xapp.llm.engine import VLLMEngine

    async with VLLMEngine.start(settings) as engine:
        pipeline = ArgoPipeline(settings, kb, engine)
        pipeline.calibrate()
        await pipeline.calibrate_llm()
        yield pipeline
