"""Information progress U measured from the evidence a step brings, not granted per step.

The MDP (``xapp.policy.mdp``) plans with δ_r, the progress of a successful retrieval. What a retrieval
actually adds is a share of δ_r: each new passage counts by how close it is to the query — nothing at
``floor`` (``min_score``: below it a passage is not information), fully from ``strong`` up
(``evidence_min_score``: close enough that the synthesizer shows it to the LLM) — and several passages
combine with diminishing returns, 1 − Π(1 − wᵢ), so that many weak hits never equal one strong one.
A retrieval that brings nothing new adds nothing, and the loop stops after it.
"""

from __future__ import annotations

from collections.abc import Iterable


def passage_weight(score: float, floor: float, strong: float) -> float:
    """How much one new passage of similarity ``score`` counts, in [0, 1]."""
    if score < floor:
        return 0.0
    if strong <= floor or score >= strong:
        return 1.0
    return (score - floor) / (strong - floor)


def retrieval_gain(new_scores: Iterable[float], floor: float, strong: float) -> float:
    """The share of δ_r a retrieval earned with its new passages' similarities, in [0, 1]."""
    missing = 1.0
    for score in new_scores:
        missing *= 1.0 - passage_weight(score, floor, strong)
    return 1.0 - missing
