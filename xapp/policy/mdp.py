"""ARGO's MDP over information progress U, solved by value iteration.

State: progress U on a grid over [0, u_max]. Actions:
  * Retrieve: with probability p_s, U ← min(U + δ_r, u_max), else U stays; reward −μ·c_r.
  * Reason:   U ← min(U + δ_p, u_max); reward −μ·c_p.
  * Terminate: reward σ(U) (answer quality), episode ends.

The optimal policy is a threshold policy in practice: Retrieve below θ_cont, Reason between θ_cont and θ*,
Terminate from θ*. Solving takes milliseconds and is cached per parameter set, so it never sits on a request's
hot path: a request only compares U with two floats.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

import numpy as np

from xapp.config import MDPParams
from xapp.domain import Action

_ACTIONS = (Action.RETRIEVE, Action.REASON, Action.TERMINATE)


def quality(kind: str, u: np.ndarray, u_max: float) -> np.ndarray:
    """σ(U): answer quality as a function of progress, normalised to σ(0)=0, σ(u_max)=1."""
    x = np.clip(u / u_max, 0.0, 1.0)
    if kind == "linear":
        return x
    if kind == "sqrt":
        return np.sqrt(x)
    if kind == "saturating":
        return (1.0 - np.exp(-3.0 * x)) / (1.0 - math.exp(-3.0))
    if kind == "sigmoid":
        raw = 1.0 / (1.0 + np.exp(-10.0 * (x - 0.5)))
        lo, hi = 1.0 / (1.0 + math.exp(5.0)), 1.0 / (1.0 + math.exp(-5.0))
        return (raw - lo) / (hi - lo)
    raise ValueError(f"unknown quality function {kind!r}")


@dataclass(frozen=True)
class MDPSolution:
    params: MDPParams
    grid: np.ndarray  # U values
    values: np.ndarray  # V(U)
    q_values: np.ndarray  # shape (len(grid), 3): Q(U, retrieve / reason / terminate)
    policy: tuple[Action, ...]  # optimal action at each grid point
    theta_cont: float
    theta_star: float
    iterations: int

    def action_share(self, action: Action) -> float:
        return sum(1 for a in self.policy if a is action) / len(self.policy)

    def to_dict(self) -> dict[str, object]:
        return {
            "params": asdict(self.params),
            "theta_cont": round(self.theta_cont, 6),
            "theta_star": round(self.theta_star, 6),
            "iterations": self.iterations,
            "share": {a.value: round(self.action_share(a), 4) for a in _ACTIONS},
        }


def _shift_index(n: int, u_max: float, delta: float) -> np.ndarray:
    """Index of min(U + δ, u_max) for each grid point (rounded to the nearest grid point)."""
    step = u_max / (n - 1)
    return np.minimum(np.arange(n) + int(round(delta / step)), n - 1)


def _thresholds(grid: np.ndarray, policy: list[Action]) -> tuple[float, float]:
    """θ* = smallest U from which Terminate is optimal all the way up; θ_cont = the Retrieve/Reason boundary
    below θ* (the first U below θ* from which Reason is optimal up to θ*; θ* when Retrieve rules throughout)."""
    n = len(grid)
    star = n  # index
    for i in range(n - 1, -1, -1):
        if policy[i] is Action.TERMINATE:
            star = i
        else:
            break
    cont = star
    for i in range(star - 1, -1, -1):
        if policy[i] is Action.REASON:
            cont = i
        else:
            break
    theta_star = float(grid[star]) if star < n else float(grid[-1]) + 1e-9
    theta_cont = float(grid[cont]) if cont < n else theta_star
    return min(theta_cont, theta_star), theta_star


def solve(params: MDPParams, tol: float = 1e-9, max_iter: int = 10_000) -> MDPSolution:
    """Value iteration on the grid. With γ = 1 it still converges: every non-terminal step costs, or is capped."""
    params.validate()
    n = params.grid
    grid = np.linspace(0.0, params.u_max, n)
    sigma = quality(params.quality, grid, params.u_max)
    up_r = _shift_index(n, params.u_max, params.delta_retrieve)
    up_p = _shift_index(n, params.u_max, params.delta_reason)
    cost_r = params.mu * params.cost_retrieve
    cost_p = params.mu * params.cost_reason
    values = sigma.copy()
    q = np.zeros((n, 3))
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 - the count is reported
        q[:, 0] = -cost_r + params.gamma * (params.p_success * values[up_r] + (1 - params.p_success) * values)
        q[:, 1] = -cost_p + params.gamma * values[up_p]
        q[:, 2] = sigma
        new_values = q.max(axis=1)
        if np.max(np.abs(new_values - values)) < tol:
            values = new_values
            break
        values = new_values
    # Ties go to the cheaper choice: Terminate, then Reason, then Retrieve.
    order = (2, 1, 0)
    policy: list[Action] = []
    for i in range(n):
        best = q[i].max()
        for idx in order:
            if q[i, idx] >= best - 1e-12:
                policy.append(_ACTIONS[idx])
                break
    theta_cont, theta_star = _thresholds(grid, policy)
    return MDPSolution(
        params=params,
        grid=grid,
        values=values,
        q_values=q.copy(),
        policy=tuple(policy),
        theta_cont=theta_cont,
        theta_star=theta_star,
        iterations=iterations,
    )


@functools.lru_cache(maxsize=64)
def solve_cached(params: MDPParams) -> MDPSolution:
    """Solutions are pure functions of the (frozen, hashable) parameters: solve each set once per process."""
    return solve(params)
