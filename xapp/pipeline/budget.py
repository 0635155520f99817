"""Every deadline decision of a request: its deadline, the reserves, and what each call may cost.

Search here first. :func:`request_deadline` turns a caller's deadline into the pipeline's (server, CLI and
benches use it); the reserves are the constants below; :meth:`Budget.fits` decides whether a template or
retrieval step may start, and :meth:`Budget.plan_llm` whether an LLM call may — with how much evidence in
its prompt, how many tokens to generate and by when it is aborted.

Two kinds of estimate, shared by all requests of the process:

* :class:`LatencyEstimator` — EWMA (plus spread) of observed latencies per component and path
  (``retrieve``, ``synthesize.template`` …): for work whose cost does not depend on its input size.
* :class:`LLMCostModel` — seconds per uncached prompt token (prefill) and per generated token (decode),
  calibrated at start-up and updated online from LLM calls: an LLM call's cost is counted from its
  prompt before it is sent, and its finish is forecast behind the calls already in the engine (the
  :class:`~xapp.llm.base.EngineQueue` that :class:`MeteredLLM` keeps), so a request whose LLM step cannot
  finish in time behind that queue takes its template path at once.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from xapp.config import Settings
from xapp.llm.base import LLM, Choice, EngineQueue, Generation, Message, QueuedCall, TextCallback
from xapp.llm.prompts import PromptVariant

# Seconds; the first observations replace these quickly.
TEMPLATE_PRIOR_S = 0.01
RETRIEVE_PRIOR_S = 0.05
# --- the reserves: every time a request keeps back, in one place ---------------------------------------
# The lexical-only template synthesis at the very end (~1-10 ms; more on a loaded CPU): always kept free.
LEXICAL_RESERVE_S = 0.025
# A request admitted by the server must have at least this left to produce a template answer (retrieval
# and extractive synthesis run in a few ms; the rest is headroom for a loaded event loop).
ADMISSION_RESERVE_S = 0.05
# The transport's share: ``Settings.safety_margin_ms``, at most this fraction of a short deadline.
MAX_MARGIN_FRACTION = 0.1
# With the event loop's measured lag added (xapp/server/loop_lag.py), at most this fraction of the deadline:
# past it the request would have no time left to answer anything from.
MAX_LOADED_MARGIN_FRACTION = 0.3
# One LLM call's relative error counts at most this much toward the safety factor (which is then at most
# 2×): a single call predicted far too fast (a cold engine, a stalled CPU) must not make every plan after it
# many times too slow; the per-token costs themselves are corrected by the next calls.
MAX_REL_ERROR = 1.0
# Costs are learned only from calls that run, so a model calibrated on a busy moment would refuse the LLM for
# good. When no call has taught it for PROBE_AFTER_S, an idle engine gets one call forecast at most
# PROBE_SLACK over the time left: aborted at the deadline if the forecast was right (the template answers in
# time), a lesson if it was too slow (on a shared 2-core host a start-up calibration forecast option
# choices at ~1.1 s that took 0.5-0.7 s).
PROBE_AFTER_S = 3.0
PROBE_SLACK = 0.5
# … and only while retrieval runs at most this many times its calibrated time: on a busy CPU a probe measures
# the contention, not the engine, and takes the cores the other requests need to answer in time (one run of
# 100 calls at 8 callers on 2 shared cores: with probes, two aborted LLM calls and 8 replies 38-134 ms late;
# the run before, without probes, none late).
PROBE_QUIET = 1.5


def request_deadline(
    settings: Settings,
    deadline_ms: float = 0,
    time_remaining: float | None = None,
    *,
    now: float | None = None,
    loop_lag_s: float = 0.0,
) -> float:
    """The pipeline's deadline (absolute ``time.monotonic()``) for a request.

    The earliest of the request's ``deadline_ms`` (0: the configured default), the configured maximum and
    the caller's own gRPC deadline (``time_remaining`` seconds; None: none), less the safety margin kept back
    for sending the reply and ``loop_lag_s``, what a busy event loop adds before the handler and after it (the
    server's :class:`~xapp.server.loop_lag.LoopLag`). ``deadline_ms`` must already be validated (>= 0). The
    result may lie in the past; the pipeline then answers on the template path at once.
    """
    start = time.monotonic() if now is None else now
    budget_s = caller_deadline(settings, deadline_ms, time_remaining, now=start) - start
    margin_s = min(settings.safety_margin_ms / 1000.0, MAX_MARGIN_FRACTION * budget_s)
    margin_s = min(margin_s + max(loop_lag_s, 0.0), max(margin_s, MAX_LOADED_MARGIN_FRACTION * budget_s))
    return start + budget_s - margin_s


def caller_deadline(
    settings: Settings, deadline_ms: float = 0, time_remaining: float | None = None, *, now: float | None = None
) -> float:
    """When the caller's deadline falls (absolute ``time.monotonic()``): the earliest of the request's
    ``deadline_ms`` (0: the configured default), the configured maximum and the caller's gRPC deadline, with
    no margin kept back. :func:`request_deadline` plans inside it; the server's overrun guard waits for it."""
    start = time.monotonic() if now is None else now
    budget_s = min(deadline_ms or settings.deadline_ms, settings.max_deadline_ms) / 1000.0
    if time_remaining is not None:
        budget_s = min(budget_s, max(time_remaining, 0.0))
    return start + budget_s


class LatencyEstimator:
    """EWMA of latency (and of its absolute deviation) per component key; thread-safe.

    An estimate above its prior drifts back toward the prior while the component is not run
    (time constant ``decay_s``): a component that was slow once, under load, is tried again later instead
    of being planned out for good, since only running it would refresh its estimate.
    """

    def __init__(
        self,
        priors: dict[str, float] | None = None,
        alpha: float = 0.3,
        spread: float = 2.0,
        decay_s: float = 30.0,
    ) -> None:
        self._prior: dict[str, float] = dict(priors or {})
        self._mean: dict[str, float] = dict(self._prior)
        self._dev: dict[str, float] = {k: 0.25 * v for k, v in self._prior.items()}
        self._last: dict[str, float] = {}  # monotonic time of the last observation
        self._alpha = alpha
        self._spread = spread
        self._decay_s = decay_s
        self._lock = threading.Lock()

    @classmethod
    def for_settings(cls, settings: Settings) -> LatencyEstimator:
        return cls(
            {
                "decompose.template": TEMPLATE_PRIOR_S,
                "reason.template": TEMPLATE_PRIOR_S,
                "synthesize.template": 0.05,  # lexical scoring plus embedding the options
                "retrieve": RETRIEVE_PRIOR_S,
            }
        )

    def set_prior(self, key: str, seconds: float) -> None:
        """Replace a prior (and the estimate) with a measurement of this machine, e.g. at start-up."""
        with self._lock:
            self._prior[key] = self._mean[key] = seconds
            self._dev[key] = 0.25 * seconds
            self._last.pop(key, None)

    def estimate(self, key: str) -> float:
        with self._lock:
            mean = self._mean.get(key, TEMPLATE_PRIOR_S)
            dev = self._dev.get(key, 0.0)
            prior, last = self._prior.get(key), self._last.get(key)
            if prior is not None and last is not None and mean > prior:
                w = math.exp(-(time.monotonic() - last) / self._decay_s)
                mean = prior + (mean - prior) * w
                dev = 0.25 * prior + (dev - 0.25 * prior) * w
            return mean + self._spread * dev

    def observe(self, key: str, seconds: float, censored: bool = False) -> None:
        """Record a latency. ``censored``: the work was cut off by a deadline, so it would have taken longer;
        such an observation can raise the estimate but never lower it."""
        if not math.isfinite(seconds) or seconds < 0:
            return
        with self._lock:
            mean = self._mean.get(key)
            self._last[key] = time.monotonic()
            if mean is None:
                self._mean[key], self._dev[key] = seconds, 0.25 * seconds
            elif censored and seconds <= mean:
                return
            else:
                a = self._alpha
                self._dev[key] = (1 - a) * self._dev.get(key, 0.0) + a * abs(seconds - mean)
                self._mean[key] = (1 - a) * mean + a * seconds

    def slowdown(self, key: str) -> float:
        """How many times its prior (its calibrated time) the component takes now: the CPU's contention."""
        with self._lock:
            prior = self._prior.get(key)
            return self._mean.get(key, 0.0) / prior if prior else 1.0

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return {k: round(self._mean[k] * 1000.0, 2) for k in sorted(self._mean)}


@dataclass(frozen=True)
class Forecast:
    """When a call sent now would produce its first token and each further one, behind the engine's queue.
    Seconds from now, pessimistic (the cost model's safety factor applied)."""

    first_s: float  # to its first token: the queue's prefill work ahead of it, then its own prefill
    per_token_s: float  # each further token, decoded beside the calls that decode with it
    wait_s: float = 0.0  # of first_s: the work ahead of it
    crowds_out: str = ""  # why sending it now would push a queued call past its deadline ("" if it would not)

    def finish_s(self, max_tokens: int) -> float:
        return self.first_s + self.per_token_s * max(max_tokens - 1, 0)

    def tokens_within(self, seconds: float) -> int:
        """The most tokens it can generate in ``seconds`` (0 if not even the first)."""
        if seconds < self.first_s:
            return 0
        return 1 + int((seconds - self.first_s) / self.per_token_s)


class LLMCostModel:
    """What an LLM call costs on this machine: ``overhead + prefill·(uncached prompt tokens) + decode·(tokens−1)``,
    and when it would finish behind the calls already in the engine (:meth:`forecast`).

    Calibrated at start-up from two prompt lengths and one short decode, then updated from every call the
    engine makes alone (EWMA): a call that shared the engine says more about the queue than about the engine.
    Plans add a safety factor from the running relative error of the predictions (queued calls' forecasts
    included), so a machine whose speed varies is planned with its slow side.
    """

    def __init__(
        self,
        prefill_s: float = 0.004,
        decode_s: float = 0.08,
        overhead_s: float = 0.03,
        alpha: float = 0.2,
    ) -> None:
        self.prefill_s = prefill_s  # per uncached prompt token
        self.decode_s = decode_s  # per generated token after the first
        self.overhead_s = overhead_s  # per call: scheduling, sampling, detokenizing
        self.cached_tokens = 0.0  # EWMA of the prompt tokens served from the prefix cache
        self.rel_error = 0.1  # EWMA of |observed / predicted − 1|
        self._alpha = alpha
        self._lock = threading.Lock()
        self._taught = time.monotonic()  # last calibration, observation or probe

    def calibrate(self, *, overhead_s: float, prefill_s: float, decode_s: float, cached_tokens: float) -> None:
        with self._lock:
            self.overhead_s = max(overhead_s, 0.0)
            self.prefill_s = max(prefill_s, 1e-5)
            self.decode_s = max(decode_s, 1e-4)
            self.cached_tokens = max(cached_tokens, 0.0)
            self._taught = time.monotonic()

    def claim_probe(self, now: float) -> bool:
        """True (once per PROBE_AFTER_S) when no call has taught the model for that long: see PROBE_SLACK."""
        with self._lock:
            if now - self._taught < PROBE_AFTER_S:
                return False
            self._taught = now
            return True

    def uncached(self, prompt_tokens: int) -> float:
        """The prompt tokens a call is expected to prefill (the prefix cache serves the rest)."""
        return max(prompt_tokens - self.cached_tokens, 1.0)

    def _nominal(self, prompt_tokens: int, max_tokens: int) -> float:
        return self.overhead_s + self.prefill_s * self.uncached(prompt_tokens) + self.decode_s * max(max_tokens - 1, 0)

    def safety(self) -> float:
        # One relative error, not two: a call planned too tight is aborted at its deadline and the template
        # path still answers in time, while one planned too loose never runs the LLM at all.
        return 1.0 + max(0.1, self.rel_error)

    def forecast(self, prompt_tokens: int, queue: Sequence[QueuedCall] = (), *, now: float | None = None) -> Forecast:
        """When a call with this prompt, sent ``now``, would finish behind the calls in ``queue``.

        The engine runs one step at a time and prefills, in one step, every call that waits when the step
        begins (vLLM's token budget per step, 2048 or more on CPU, holds several prompts); a step that has
        begun runs to its end even when its calls are aborted. So the queue is replayed as batches: each
        begins when the previous one ends and holds the calls sent by then (those already past their deadline
        left out), lasting their prefill times together. A new call joins the batch that has not begun yet, or
        opens one when the last has. Calls that decode beside it share each decode step with it (planned
        ``1 + decoders`` times slower). ``crowds_out`` is set when joining would push a call of that batch
        past its deadline: it was there first, and both would lose the LLM."""
        with self._lock:
            now = time.monotonic() if now is None else now
            k = self.safety()
            own = (self.overhead_s + self.prefill_s * self.uncached(prompt_tokens)) * k
            per_token = self.decode_s * k
            busy_until = -math.inf  # end of the last batch
            batch: list[QueuedCall] = []
            batch_start = -math.inf
            i, calls = 0, sorted(queue, key=lambda c: c.entered)
            while i < len(calls):
                start = max(busy_until, calls[i].entered)
                members: list[QueuedCall] = []
                while i < len(calls) and calls[i].entered <= start:
                    if calls[i].deadline > start:
                        members.append(calls[i])
                    i += 1
                if members:
                    batch, batch_start = members, start
                    busy_until = start + sum(self.overhead_s + self.prefill_s * c.prefill_tokens for c in members) * k
            if batch and busy_until <= now and any(c.decode_tokens == 0 for c in batch):
                # Its one-token calls are still in the engine, so its step runs late: assume a little more.
                busy_until = now + max(self.rel_error, 0.1) * (busy_until - batch_start)
            decoders = sum(1 for c in calls if c.decode_tokens > 0 and c.deadline > now)
            per_token *= 1 + decoders
            if batch and batch_start > now:  # a batch is waiting: the call joins it and lengthens it
                first = busy_until + own
                late = [c for c in batch if busy_until <= c.deadline < first]
                crowds = ""
                if late:
                    over = (first - min(c.deadline for c in late)) * 1000.0
                    crowds = f"it would push {len(late)} queued LLM call(s) up to {over:.0f} ms past their deadline"
                return Forecast(first - now, per_token, first - now - own, crowds)
            start = max(busy_until, now)
            return Forecast(start + own - now, per_token, start - now)

    def predict(
        self, prompt_tokens: int, max_tokens: int, *, queue: Sequence[QueuedCall] = (), now: float | None = None
    ) -> float:
        """Seconds to plan for a call with this prompt and up to ``max_tokens`` tokens (pessimistic), sent now
        behind ``queue``."""
        return self.forecast(prompt_tokens, queue, now=now).finish_s(max_tokens)

    def tokens_within(
        self, seconds: float, prompt_tokens: int, *, queue: Sequence[QueuedCall] = (), now: float | None = None
    ) -> int:
        """The most tokens a call with this prompt can generate in ``seconds`` (0 if not even the first)."""
        return self.forecast(prompt_tokens, queue, now=now).tokens_within(seconds)

    def observe(
        self,
        *,
        prompt_tokens: int,
        cached_tokens: int,
        ttft_s: float,
        completion_tokens: int,
        total_s: float,
        aborted: bool,
        forecast_s: float | None = None,
        alone: bool = True,
    ) -> None:
        """Learn from a finished call. ``forecast_s``: the nominal finish :meth:`forecast` gave it when it was
        sent (None: its own cost alone); ``alone``: no other call was in the engine at any time during it —
        only such calls teach the per-token costs, every call teaches the relative error."""
        if not (math.isfinite(ttft_s) and math.isfinite(total_s)) or total_s <= 0:
            return
        a = self._alpha
        with self._lock:
            self._taught = time.monotonic()
            predicted = self._nominal(prompt_tokens, max(completion_tokens, 1))
            if forecast_s is not None and forecast_s > 0:
                predicted = forecast_s
            self.cached_tokens = (1 - a) * self.cached_tokens + a * cached_tokens
            if aborted:
                # Cut off by its deadline: it would have taken longer. It can only widen the safety factor.
                if total_s > predicted:
                    self.rel_error = (1 - a) * self.rel_error + a * min(total_s / predicted - 1, MAX_REL_ERROR)
                return
            self.rel_error = (1 - a) * self.rel_error + a * min(abs(total_s / predicted - 1), MAX_REL_ERROR)
            if not alone:
                return
            uncached = prompt_tokens - cached_tokens
            if uncached >= 16 and completion_tokens >= 1:
                per_token = max(ttft_s - self.overhead_s, 0.0) / uncached
                self.prefill_s = (1 - a) * self.prefill_s + a * max(per_token, 1e-5)
            if completion_tokens >= 3:
                per_token = (total_s - ttft_s) / (completion_tokens - 1)
                self.decode_s = (1 - a) * self.decode_s + a * max(per_token, 1e-4)

    def state(self) -> dict[str, float]:
        """What the model has learned, to :meth:`restore` later (benches: each strategy from the same start)."""
        with self._lock:
            names = ("prefill_s", "decode_s", "overhead_s", "cached_tokens", "rel_error")
            return {name: float(getattr(self, name)) for name in names}

    def restore(self, state: dict[str, float]) -> None:
        with self._lock:
            for name, value in state.items():
                setattr(self, name, value)
            self._taught = time.monotonic()

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return {
                "prefill_ms_per_token": round(self.prefill_s * 1000.0, 3),
                "decode_ms_per_token": round(self.decode_s * 1000.0, 2),
                "overhead_ms": round(self.overhead_s * 1000.0, 2),
                "cached_tokens": round(self.cached_tokens, 1),
                "rel_error": round(self.rel_error, 3),
            }


class MeteredLLM:
    """The engine, with every call it makes entered in the queue the planner reads (:class:`EngineQueue`) and
    taught to the cost model (one place, whichever component calls)."""

    _TOKEN_MEMO = 256  # prompts whose token counts are kept: the planner counts a prompt, then sends it

    def __init__(self, llm: LLM, costs: LLMCostModel) -> None:
        self._llm = llm
        self.costs = costs
        self.model_name = llm.model_name
        self.queue = EngineQueue()
        self._tokens: dict[tuple[tuple[str, str], ...], int] = {}

    async def generate(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        deadline: float,
        stop: Sequence[str] | None = None,
        on_text: TextCallback | None = None,
    ) -> Generation:
        key, forecast = self._enter(messages, max_tokens, deadline)
        try:
            gen = await self._llm.generate(
                messages, max_tokens=max_tokens, deadline=deadline, stop=stop, on_text=on_text
            )
        finally:
            call = self.queue.leave(key)
        self._observe(
            gen.prompt_tokens,
            gen.cached_tokens,
            gen.ttft_s,
            gen.completion_tokens,
            gen.total_s,
            gen.aborted,
            call,
            forecast,
        )
        return gen

    async def choose(self, messages: Sequence[Message], labels: Sequence[str], *, deadline: float) -> Choice:
        key, forecast = self._enter(messages, 1, deadline)
        try:
            c = await self._llm.choose(messages, labels, deadline=deadline)
        finally:
            call = self.queue.leave(key)
        # One prefill and one token: its whole time is the time to the first token.
        self._observe(
            c.prompt_tokens, c.cached_tokens, c.total_s, 0 if c.aborted else 1, c.total_s, c.aborted, call, forecast
        )
        return c

    def _enter(
        self, messages: Sequence[Message], max_tokens: int, deadline: float
    ) -> tuple[int, tuple[Forecast, float]]:
        """Enter the call in the queue (before it is sent: no await between the plan and this), with the
        forecast it is sent under and the safety factor that forecast carries."""
        tokens = self.prompt_tokens(messages)
        now = time.monotonic()
        forecast = self.costs.forecast(tokens, self.queue.calls(), now=now)
        call = QueuedCall(now, self.costs.uncached(tokens), max(max_tokens - 1, 0), deadline)
        return self.queue.enter(call), (forecast, self.costs.safety())

    def _observe(
        self,
        prompt: int,
        cached: int,
        ttft_s: float,
        completion: int,
        total_s: float,
        aborted: bool,
        call: QueuedCall,
        sent_under: tuple[Forecast, float],
    ) -> None:
        forecast, safety = sent_under
        self.costs.observe(
            prompt_tokens=prompt,
            cached_tokens=cached,
            ttft_s=ttft_s,
            completion_tokens=completion,
            total_s=total_s,
            aborted=aborted,
            forecast_s=None if call.alone else forecast.finish_s(max(completion, 1)) / safety,
            alone=call.alone,
        )

    def prompt_tokens(self, messages: Sequence[Message]) -> int:
        key = tuple((m["role"], m["content"]) for m in messages)
        count = self._tokens.get(key)
        if count is None:
            if len(self._tokens) >= self._TOKEN_MEMO:
                self._tokens.clear()
            count = self._tokens[key] = self._llm.prompt_tokens(messages)
        return count

    def queued(self) -> list[QueuedCall]:
        return self.queue.calls()

    def num_unfinished_requests(self) -> int:
        return self._llm.num_unfinished_requests()


class TokenCounter(Protocol):
    """What the planner reads from the engine: prompt sizes and the calls already in it."""

    def prompt_tokens(self, messages: Sequence[Message]) -> int: ...

    def queued(self) -> list[QueuedCall]: ...


@dataclass(frozen=True)
class LLMPlan:
    """An LLM call that fits: the prompt to send, how many tokens, and when to abort it."""

    variant: PromptVariant
    prompt_tokens: int
    max_tokens: int
    deadline: float  # absolute monotonic: the engine aborts the call here
    predicted_s: float
    wait_s: float = 0.0  # of predicted_s: the LLM calls ahead of it in the engine
    probe: bool = False  # forecast not to fit, sent to learn whether the forecast is still right (PROBE_SLACK)

    @property
    def messages(self) -> list[Message]:
        return self.variant.messages


@dataclass(frozen=True)
class NoPlan:
    """No variant fits, not even the leanest with the fewest useful tokens; ``detail`` gives the figures."""

    detail: str


@dataclass
class Budget:
    """Deadline of one request (absolute ``time.monotonic()``), and what must stay free at the end."""

    deadline: float
    estimator: LatencyEstimator
    costs: LLMCostModel = field(default_factory=LLMCostModel)
    started: float = field(default_factory=time.monotonic)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def remaining_ms(self) -> float:
        return self.remaining() * 1000.0

    def elapsed_ms(self) -> float:
        return (time.monotonic() - self.started) * 1000.0

    def fits(self, *keys: str, keep: float = 0.0) -> bool:
        """Would components ``keys``, run one after another now, end before the deadline minus ``keep``?"""
        need = sum(self.estimator.estimate(k) for k in keys)
        return time.monotonic() + need <= self.deadline - keep

    def shortfall(self, *keys: str, keep: float = 0.0) -> str:
        need = sum(self.estimator.estimate(k) for k in keys) * 1000.0
        left = (self.remaining() - keep) * 1000.0
        return f"needs ~{need:.0f} ms, {max(left, 0.0):.0f} ms left"

    def llm_need(self, llm: TokenCounter, prompt_tokens: int, max_tokens: int) -> float:
        """Seconds an LLM call sent now would take to finish, behind the calls already in the engine."""
        return self.costs.predict(prompt_tokens, max_tokens, queue=llm.queued())

    def plan_llm(
        self,
        llm: TokenCounter,
        variants: Sequence[PromptVariant],
        *,
        min_tokens: int,
        max_tokens: int,
        keep: float = 0.0,
    ) -> LLMPlan | NoPlan:
        """The first variant (richest first) whose call, generating at least ``min_tokens``, ends before the
        deadline minus ``keep`` behind the LLM calls already in the engine (their prefill first, then its own,
        :meth:`LLMCostModel.forecast`) without pushing one of them past its deadline; it may generate as many
        tokens as the time left allows, up to ``max_tokens``. The plan's deadline is that instant, so the
        engine aborts the call there if it runs long. No plan: the caller answers through its template path
        at once instead of waiting in the engine's queue."""
        now = time.monotonic()
        until = self.deadline - keep
        left = until - now
        queue = llm.queued()
        need, wait, crowded, tokens = 0.0, 0.0, "", 0
        for variant in variants:
            tokens = llm.prompt_tokens(variant.messages)
            forecast = self.costs.forecast(tokens, queue, now=now)
            need, wait = forecast.finish_s(min_tokens), forecast.wait_s
            if need <= left and not forecast.crowds_out:
                fit = min(max_tokens, forecast.tokens_within(left))
                return LLMPlan(variant, tokens, max(fit, min_tokens), until, forecast.finish_s(fit), wait)
            if need <= left:
                crowded = forecast.crowds_out
        quiet = self.estimator.slowdown("retrieve") <= PROBE_QUIET
        if variants and not queue and quiet and 0 < need <= left * (1 + PROBE_SLACK) and self.costs.claim_probe(now):
            return LLMPlan(variants[-1], tokens, min_tokens, until, need, 0.0, probe=True)
        detail = f"needs ~{need * 1000:.0f} ms, {max(left, 0.0) * 1000:.0f} ms left"
        if self.costs.safety() > 1.25:  # a planner this cautious says so: its recent forecasts were off
            detail += f" (forecasts ×{self.costs.safety():.2f} for their recent error)"
        if queue:
            detail += f", {wait * 1000:.0f} ms of it behind {len(queue)} LLM call(s) in the engine"
        if crowded:
            detail += f"; {crowded}"
        return NoPlan(detail)
