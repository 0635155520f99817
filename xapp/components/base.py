"""What an LLM-or-template component returns, and the shared LLM call with its span and fault handling."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from opentelemetry import trace

from xapp.domain import Cause, Component, Fallback, PathKind, Usage
from xapp.errors import EngineUnavailable
from xapp.llm.base import LLM, Choice, Generation, Message, TextCallback
from xapp.telemetry import attrs

tracer = trace.get_tracer("xapp")


@dataclass
class ComponentResult:
    text: str
    path: PathKind
    usage: Usage = field(default_factory=Usage)
    fallback: Fallback | None = None
    choice: int | None = None  # 1-based option
    probabilities: list[float] = field(default_factory=list)  # per option, when the LLM chose
    engine_error: str | None = None  # the engine itself failed (not a timeout): health reports it

    @property
    def fallback_reason(self) -> str | None:
        return self.fallback.text if self.fallback else None


def fell_back(component: Component, cause: Cause, detail: str, result: ComponentResult) -> ComponentResult:
    """``result`` (a template result) marked as the fallback of ``component``'s LLM path."""
    result.fallback = Fallback(component, cause, detail)
    if cause is Cause.ENGINE_ERROR:
        result.engine_error = detail
    return result


async def generate(
    llm: LLM,
    messages: Sequence[Message],
    *,
    max_tokens: int,
    deadline: float,
    stop: Sequence[str] | None = None,
    on_text: TextCallback | None = None,
) -> Generation:
    """One LLM generation inside a ``gen_ai.generate`` span; engine faults become ``EngineUnavailable``."""
    with tracer.start_as_current_span(attrs.SPAN_GENERATE) as span:
        span.set_attribute(attrs.GEN_AI_OPERATION, "chat")
        span.set_attribute(attrs.GEN_AI_REQUEST_MODEL, getattr(llm, "model_name", ""))
        span.set_attribute(attrs.GEN_AI_REQUEST_MAX_TOKENS, max_tokens)
        try:
            gen = await llm.generate(messages, max_tokens=max_tokens, deadline=deadline, stop=stop, on_text=on_text)
        except (asyncio.CancelledError, EngineUnavailable):
            raise
        except Exception as exc:  # any engine fault: the caller falls back to its template path
            span.record_exception(exc)
            raise EngineUnavailable(f"LLM generation failed: {exc}") from exc
        span.set_attribute(attrs.GEN_AI_USAGE_INPUT_TOKENS, gen.prompt_tokens)
        span.set_attribute(attrs.GEN_AI_USAGE_OUTPUT_TOKENS, gen.completion_tokens)
        span.set_attribute(attrs.GEN_AI_TTFT, gen.ttft_s)
        span.set_attribute(attrs.ABORTED, gen.aborted)
        if gen.finish_reason:
            span.set_attribute(attrs.GEN_AI_FINISH_REASON, [gen.finish_reason])
        return gen


async def choose(llm: LLM, messages: Sequence[Message], labels: Sequence[str], *, deadline: float) -> Choice:
    """One option choice (a single prefill) inside a ``gen_ai.choose`` span."""
    with tracer.start_as_current_span(attrs.SPAN_CHOOSE) as span:
        span.set_attribute(attrs.GEN_AI_OPERATION, "choose")
        span.set_attribute(attrs.GEN_AI_REQUEST_MODEL, getattr(llm, "model_name", ""))
        try:
            result = await llm.choose(messages, labels, deadline=deadline)
        except (asyncio.CancelledError, EngineUnavailable):
            raise
        except Exception as exc:
            span.record_exception(exc)
            raise EngineUnavailable(f"LLM option choice failed: {exc}") from exc
        span.set_attribute(attrs.GEN_AI_USAGE_INPUT_TOKENS, result.prompt_tokens)
        span.set_attribute(attrs.ABORTED, result.aborted)
        return result


def usage_of(gen: Generation) -> Usage:
    return Usage(gen.prompt_tokens, gen.completion_tokens, gen.ttft_s * 1000.0, gen.aborted)
