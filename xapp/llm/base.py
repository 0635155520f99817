"""What the components need from an LLM engine: the contract, free of vLLM imports."""

from __future__ import annotations

import itertools
import math
import threading
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


@dataclass
class QueuedCall:
    """One LLM call this process has in the engine, as the planner sees it."""

    entered: float  # monotonic instant it was sent
    prefill_tokens: float  # prompt tokens it has to prefill (the prefix cache's expected share left out)
    decode_tokens: int  # tokens it may generate after the first
    deadline: float  # the engine aborts it here
    alone: bool = True  # no other call of this process was in the engine at any time during it


class EngineQueue:
    """The LLM calls in the engine: what each has to prefill and decode, and by when it is aborted.

    Every call enters before it is sent and leaves when it returns (finished, aborted or cancelled), so the
    planner can predict when a new call would finish behind them (:meth:`LLMCostModel.forecast`). A call that
    shared the engine with another at any moment is marked not ``alone``: its time says little about the
    engine's own speed. Thread-safe.
    """

    def __init__(self) -> None:
        self._calls: dict[int, QueuedCall] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def enter(self, call: QueuedCall) -> int:
        with self._lock:
            if self._calls:
                call.alone = False
                for other in self._calls.values():
                    other.alone = False
            key = next(self._ids)
            self._calls[key] = call
            return key

    def leave(self, key: int) -> QueuedCall:
        with self._lock:
            return self._calls.pop(key)

    def calls(self) -> list[QueuedCall]:
        """The calls in the engine, oldest first (copies: the planner may read them while others enter)."""
        with self._lock:
            return sorted(
                (QueuedCall(c.entered, c.prefill_tokens, c.decode_tokens, c.deadline, c.alone)
                 for c in self._calls.values()),
                key=lambda c: c.entered,
            )

    def __len__(self) -> int:
        with self._lock:
            return len(self._calls)
