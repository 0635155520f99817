"""The time budget of one request, and the running latency estimates it plans with.

ARGO plans with the time it has: a step starts only if its estimated latency fits before the deadline minus
the reserve that the final synthesis needs. Estimates are exponentially weighted means of observed
latencies per component and path (``decompose.llm``, ``retrieve``, ``synthesize.template`` …), shared by all
requests of the process, plus a spread term so that a component that is usually fast but sometimes slow is
planned with its slow side.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

from xapp.config import Settings

# Seconds; the first observations replace these quickly. LLM priors assume ~40 tok/s on CPU.
TEMPLATE_PRIOR_S = 0.01
RETRIEVE_PRIOR_S = 0.05
LEXICAL_RESERVE_S = 0.025  # the lexical-only template synthesis at the very end (~1-10 ms; more on a loaded CPU)


def llm_prior_s(max_tokens: int, tokens_per_s: float = 40.0, prefill_s: float = 0.15) -> float:
    return prefill_s + max_tokens / tokens_per_s


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
                "decompose.llm": llm_prior_s(settings.max_tokens_decompose),
                "reason.llm": llm_prior_s(settings.max_tokens_reason),
                "synthesize.llm": llm_prior_s(settings.max_tokens_synthesize),
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

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return {k: round(self._mean[k] * 1000.0, 2) for k in sorted(self._mean)}


@dataclass
class Budget:
    """Deadline of one request (absolute ``time.monotonic()``), and what must stay free at the end."""

    deadline: float
    estimator: LatencyEstimator
    started: float = field(default_factory=time.monotonic)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def remaining_ms(self) -> float:
        return self.remaining() * 1000.0

    def elapsed_ms(self) -> float:
        return (time.monotonic() - self.started) * 1000.0

    def final_reserve(self) -> float:
        """Time kept free whatever else happens: the lexical template synthesis. Embedding the options
        (``synthesize.template``) only uses what is left, since a retrieval is worth more than it."""
        return LEXICAL_RESERVE_S

    def fits(self, *keys: str, keep: float = 0.0) -> bool:
        """Would components ``keys``, run one after another now, end before the deadline minus ``keep``?"""
        need = sum(self.estimator.estimate(k) for k in keys)
        return time.monotonic() + need <= self.deadline - keep

    def shortfall(self, *keys: str, keep: float = 0.0) -> str:
        need = sum(self.estimator.estimate(k) for k in keys) * 1000.0
        left = (self.remaining() - keep) * 1000.0
        return f"needs ~{need:.0f} ms, {max(left, 0.0):.0f} ms left"
