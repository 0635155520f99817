"""What the components need from an LLM engine: the contract, free of vLLM imports."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

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
