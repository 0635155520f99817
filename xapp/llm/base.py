"""What the components need from an LLM engine: the contract, free of vLLM imports."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from xapp.errors import EngineUnavailable

# Receives each new piece of a reply's text as the LLM generates it (one or more tokens).
TextCallback = Callable[[str], None]


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float  # time to first token; equals total_s when nothing was generated
    total_s: float
    aborted: bool  # True when the deadline passed (or the caller cancelled) before the end
    finish_reason: str | None = None  # "stop", "length", "deadline", "cancelled"
    cached_tokens: int = 0  # prompt tokens served from the prefix cache (no prefill work)


@dataclass(frozen=True)
class Choice:
    """One prefill's next-token distribution over a question's option labels."""

    probabilities: tuple[float, ...]  # per label, renormalised over the labels: sums to 1 (empty if aborted)
    prompt_tokens: int
    total_s: float
    aborted: bool  # the deadline passed before the prefill finished
    cached_tokens: int = 0

    @property
    def index(self) -> int | None:
        """0-based label with the highest probability (ties: the earlier one); None when aborted."""
        if not self.probabilities:
            return None
        return max(range(len(self.probabilities)), key=lambda i: (self.probabilities[i], -i))


Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": ...}


class LLM(Protocol):
    """An engine that generates chat completions under a deadline.

    ``deadline`` is an absolute ``time.monotonic()`` instant. When it passes, the engine aborts the
    request and returns what was generated so far with ``aborted=True``; when the calling task is
    cancelled it aborts the request and re-raises ``CancelledError``. No request is left running.
    """

    model_name: str

    async def generate(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        deadline: float,
        stop: Sequence[str] | None = None,
        on_text: TextCallback | None = None,
    ) -> Generation:
        """``on_text``, when given, receives the reply's text piece by piece as it is generated."""
        ...

    async def choose(self, messages: Sequence[Message], labels: Sequence[str], *, deadline: float) -> Choice:
        """The probability of each label (each one token) as the reply's first token, from one prefill."""
        ...

    def prompt_tokens(self, messages: Sequence[Message]) -> int:
        """How many tokens ``messages`` take as a prompt (what prefill costs are counted in)."""
        ...

    def num_unfinished_requests(self) -> int: ...


def label_probabilities(top: dict[int, float], ids: Sequence[int], *, exact: bool) -> tuple[float, ...]:
    """Each label's probability as the first token, renormalised over the labels.

    ``top``: token id → log-probability as the engine returned them. ``exact``: they include every label
    (``logprob_token_ids``). Otherwise they are the top-k: a missing label gets an equal share of the mass the
    top-k leave, capped at the smallest returned probability (it ranked below all of them).
    """
    logps = [top.get(i, -math.inf) for i in ids]
    if not exact:
        missing = [k for k, lp in enumerate(logps) if not math.isfinite(lp)]
        if missing:
            probs = [math.exp(lp) for lp in top.values()]
            share = max(1.0 - sum(probs), 0.0) / len(missing)
            share = min(share, min(probs, default=1.0))
            for k in missing:
                logps[k] = math.log(share) if share > 0 else -math.inf
    best = max(logps)
    if not math.isfinite(best):
        raise EngineUnavailable("the LLM returned no log-probability for any option label")
    weights = [math.exp(lp - best) for lp in logps]
    norm = sum(weights)
    return tuple(w / norm for w in weights)
