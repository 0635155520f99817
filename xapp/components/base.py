"""What an LLM-or-template component returns, and the shared LLM call with fallback bookkeeping."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from opentelemetry import trace

from xapp.domain import PathKind, Usage
from xapp.errors import EngineUnavailable
from xapp.llm.base import LLM, Generation, Message

tracer = trace.get_tracer("xapp")


@dataclass
class ComponentResult:
    text: str
    path: PathKind
    usage: Usage = field(default_factory=Usage)
    fallback_reason: str | None = None
    choice: int | None = None
    engine_error: str | None = None  # the engine itself failed (not a timeout): health reports it


async def generate(
    llm: LLM,
    messages: Sequence[Message],
    *,
    max_tokens: int,
    deadline: float,
    stop: Sequence[str] | None = None,
) -> Generation:
    """One LLM generation inside a ``gen_ai.generate`` span; engine faults become ``EngineUnavailable``."""
    with tracer.start_as_current_span("gen_ai.generate") as span:
        span.set_attribute("gen_ai.operation.name", "chat")
        span.set_attribute("gen_ai.request.model", getattr(llm, "model_name", ""))
        span.set_attribute("gen_ai.request.max_tokens", max_tokens)
        try:
            gen = await llm.generate(messages, max_tokens=max_tokens, deadline=deadline, stop=stop)
        except (asyncio.CancelledError, EngineUnavailable):
            raise
        except Exception as exc:  # any engine fault: the caller falls back to its template path
            span.record_exception(exc)
            raise EngineUnavailable(f"LLM generation failed: {exc}") from exc
        span.set_attribute("gen_ai.usage.input_tokens", gen.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", gen.completion_tokens)
        span.set_attribute("gen_ai.server.time_to_first_token", gen.ttft_s)
        span.set_attribute("argo.aborted", gen.aborted)
        if gen.finish_reason:
            span.set_attribute("gen_ai.response.finish_reasons", [gen.finish_reason])
        return gen


def usage_of(gen: Generation) -> Usage:
    return Usage(gen.prompt_tokens, gen.completion_tokens, gen.ttft_s * 1000.0, gen.aborted)
