"""ARGO's MDP: thresholds, monotone values, cost response, strategies."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xapp.config import MDPParams, Settings
from xapp.domain import Action
from xapp.errors import ConfigError
from xapp.policy.mdp import quality, solve, solve_cached
from xapp.policy.strategies import LoopState, make_strategy

params_st = st.builds(
    MDPParams,
    delta_retrieve=st.sampled_from([0.1, 0.2, 0.3, 0.4]),
    p_success=st.floats(0.2, 1.0),
    delta_reason=st.sampled_from([0.05, 0.1, 0.15, 0.2]),
    cost_retrieve=st.floats(0.0, 0.5),
    cost_reason=st.floats(0.0, 0.5),
    mu=st.floats(0.0, 2.0),
    gamma=st.floats(0.5, 1.0),
    quality=st.sampled_from(["linear", "sqrt", "saturating", "sigmoid"]),
    grid=st.just(51),
)


@settings(max_examples=150, deadline=None)
@given(params_st)
def test_theta_cont_never_above_theta_star(params: MDPParams) -> None:
    solution = solve(params)
    assert 0.0 <= solution.theta_cont <= solution.theta_star


@settings(max_examples=150, deadline=None)
@given(params_st)
def test_value_is_non_decreasing_in_progress(params: MDPParams) -> None:
    values = solve(params).values
    assert np.all(np.diff(values) >= -1e-9)


@settings(max_examples=100, deadline=None)
@given(params_st, st.floats(0.01, 0.5))
def test_costlier_retrieval_never_raises_the_share_of_retrieve(params: MDPParams, extra: float) -> None:
    cheap = solve(params)
    dear = solve(dataclasses.replace(params, cost_retrieve=params.cost_retrieve + extra))
    assert dear.action_share(Action.RETRIEVE) <= cheap.action_share(Action.RETRIEVE) + 1e-12


def test_defaults_retrieve_then_reason_then_terminate() -> None:
    solution = solve(MDPParams())
    assert 0 < solution.theta_cont < solution.theta_star < 1
    assert solution.policy[0] is Action.RETRIEVE
    assert solution.policy[-1] is Action.TERMINATE


def test_quality_functions_span_zero_to_one() -> None:
    u = np.linspace(0, 2.0, 11)
    for kind in ("linear", "sqrt", "saturating", "sigmoid"):
        q = quality(kind, u, 2.0)
        assert q[0] == pytest.approx(0.0, abs=1e-9) and q[-1] == pytest.approx(1.0)
        assert np.all(np.diff(q) >= 0)


def test_solution_is_cached() -> None:
    assert solve_cached(MDPParams()) is solve_cached(MDPParams())


def test_invalid_parameters_are_refused() -> None:
    with pytest.raises(ConfigError, match="gamma"):
        solve(MDPParams(gamma=1.5))
    with pytest.raises(ConfigError, match="quality"):
        solve(MDPParams(quality="cubic"))


def test_strategies_follow_their_rules() -> None:
    s = Settings()
    sol = solve_cached(s.mdp)
    mdp = make_strategy("mdp", s)
    assert mdp.decide(LoopState(0.0, 0, 0, 0)) is Action.RETRIEVE
    assert mdp.decide(LoopState((sol.theta_cont + sol.theta_star) / 2, 2, 2, 0)) is Action.REASON
    assert mdp.decide(LoopState(sol.theta_star, 3, 3, 0)) is Action.TERMINATE
    fixed = make_strategy("fixed-k", s.replace(fixed_k=2))
    assert [fixed.decide(LoopState(0, i, i, 0)) for i in range(3)] == [Action.RETRIEVE] * 2 + [Action.TERMINATE]
    assert make_strategy("always-reason", s).decide(LoopState(0, 0, 0, 0)) is Action.REASON
    assert make_strategy("always-retrieve", s).decide(LoopState(0, 0, 0, 0)) is Action.RETRIEVE
    template = make_strategy("template", s)
    assert not template.uses_llm and template.decide(LoopState(0, 0, 0, 0)) is Action.RETRIEVE
    a = [make_strategy("random", s, seed=7).decide(LoopState(0, i, 0, 0)) for i in range(1)]
    r1, r2 = make_strategy("random", s, seed=7), make_strategy("random", s, seed=7)
    seq1 = [r1.decide(LoopState(0, i, 0, 0)) for i in range(20)]
    assert seq1 == [r2.decide(LoopState(0, i, 0, 0)) for i in range(20)] and a[0] == seq1[0]
    assert len(set(seq1)) > 1
    with pytest.raises(ConfigError, match="unknown strategy"):
        make_strategy("greedy", s)


def test_policy_cli_json() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "xapp", "policy", "--json", "--cost-retrieve", "0.2"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    doc = json.loads(out)
    assert doc["params"]["cost_retrieve"] == 0.2
    assert 0 <= doc["theta_cont"] <= doc["theta_star"] <= 1


def test_a_retrieval_earns_progress_by_its_new_passages_relevance() -> None:
    from xapp.policy.progress import passage_weight, retrieval_gain

    assert retrieval_gain([], 0.25, 0.7) == 0.0
    assert retrieval_gain([0.2, 0.1], 0.25, 0.7) == 0.0  # below min_score: not information
    assert retrieval_gain([0.75], 0.25, 0.7) == 1.0  # one passage the LLM would be shown: the full δ_r
    assert passage_weight(0.475, 0.25, 0.7) == pytest.approx(0.5)
    assert retrieval_gain([0.475, 0.475], 0.25, 0.7) == pytest.approx(0.75)  # diminishing returns
    weak = retrieval_gain([0.3] * 3, 0.25, 0.7)
    assert 0.0 < weak < retrieval_gain([0.7], 0.25, 0.7)  # many weak hits never equal one strong one
