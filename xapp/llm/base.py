"""What the components need from an LLM engine: the contract, free of vLLM imports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float  # time to first token; equals total_s when nothing was generated
    total_s: float
    aborted: bool  # True when the deadline passed (or the caller cancelled) before the end
    finish_reason: str | None = None  # "stop", "length", "deadline", "cancelled"


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
    ) -> Generation: ...

    def num_unfinished_requests(self) -> int: ...
