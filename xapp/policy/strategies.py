"""Strategies: given the loop's state, pick the next action.

``mdp`` follows the thresholds of the solved MDP; the others are ARGO's baselines for comparison.
``template`` retrieves like ``mdp`` but the pipeline runs every component on its template path (no LLM).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

from xapp.config import STRATEGIES, Settings
from xapp.domain import Action
from xapp.errors import ConfigError
from xapp.policy.mdp import solve_cached


@dataclass(frozen=True)
class LoopState:
    progress: float  # U
    steps_taken: int
    retrieves: int
    reasons: int


class Strategy(Protocol):
    name: str
    uses_llm: bool
    # The loop ends after a retrieval that brought nothing new (progress stayed): true for every strategy but
    # the fixed-k baseline, whose contract is exactly k retrievals.
    stops_when_stale: bool

    def decide(self, state: LoopState) -> Action: ...


@dataclass
class MDPStrategy:
    theta_cont: float
    theta_star: float
    name: str = "mdp"
    uses_llm: bool = True
    stops_when_stale: bool = True

    def decide(self, state: LoopState) -> Action:
        if state.progress >= self.theta_star:
            return Action.TERMINATE
        if state.progress < self.theta_cont:
            return Action.RETRIEVE
        return Action.REASON


@dataclass
class FixedKStrategy:
    """Retrieve exactly k times, then answer (classic single-pass RAG for k=1)."""

    k: int
    name: str = "fixed-k"
    uses_llm: bool = True
    stops_when_stale: bool = False

    def decide(self, state: LoopState) -> Action:
        return Action.RETRIEVE if state.retrieves < self.k else Action.TERMINATE


@dataclass
class AlwaysStrategy:
    """Repeat one action until progress reaches θ* (the step cap stops it otherwise)."""

    action: Action
    theta_star: float
    name: str
    uses_llm: bool = True
    stops_when_stale: bool = True

    def decide(self, state: LoopState) -> Action:
        return Action.TERMINATE if state.progress >= self.theta_star else self.action


@dataclass
class RandomStrategy:
    """Uniform over the three actions; seeded per request so runs are reproducible."""

    rng: random.Random
    name: str = "random"
    uses_llm: bool = True
    stops_when_stale: bool = True

    def decide(self, state: LoopState) -> Action:
        return self.rng.choice((Action.RETRIEVE, Action.REASON, Action.TERMINATE))


@dataclass
class TemplateStrategy:
    """Retrieve while progress is below θ*, never reason (templates cannot), no LLM anywhere."""

    theta_star: float
    name: str = "template"
    uses_llm: bool = False
    stops_when_stale: bool = True

    def decide(self, state: LoopState) -> Action:
        return Action.TERMINATE if state.progress >= self.theta_star else Action.RETRIEVE


def make_strategy(name: str, settings: Settings, seed: int | None = None) -> Strategy:
    """A fresh strategy object for one request (strategies may carry per-request state such as an RNG)."""
    solution = solve_cached(settings.mdp)
    if name == "mdp":
        return MDPStrategy(solution.theta_cont, solution.theta_star)
    if name == "fixed-k":
        return FixedKStrategy(settings.fixed_k)
    if name == "always-reason":
        return AlwaysStrategy(Action.REASON, solution.theta_star, name="always-reason")
    if name == "always-retrieve":
        return AlwaysStrategy(Action.RETRIEVE, solution.theta_star, name="always-retrieve")
    if name == "random":
        return RandomStrategy(random.Random(settings.seed if seed is None else seed))
    if name == "template":
        return TemplateStrategy(solution.theta_star)
    raise ConfigError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
