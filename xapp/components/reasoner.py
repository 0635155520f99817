"""Reasoner: one reasoning step without retrieval — what the evidence so far implies for the question."""

from __future__ import annotations

from collections.abc import Sequence

from xapp.components.base import ComponentResult, generate, usage_of
from xapp.components.extractive import rank_evidence
from xapp.domain import PathKind, Question, Step
from xapp.errors import EngineUnavailable
from xapp.llm import prompts
from xapp.llm.base import LLM


class Reasoner:
    def __init__(self, llm: LLM | None, max_tokens: int) -> None:
        self.llm = llm
        self.max_tokens = max_tokens

    def template(self, question: Question, history: Sequence[Step], reason: str | None = None) -> ComponentResult:
        """Extractive note: the single most relevant sentence of the evidence gathered so far."""
        passages = [p for s in history for p in s.passages]
        ranked = rank_evidence(question.text, passages)
        note = ranked[0].sentence if ranked else "No evidence gathered yet."
        return ComponentResult(note, PathKind.TEMPLATE, fallback_reason=reason)

    async def reason(self, question: Question, history: Sequence[Step], deadline: float | None) -> ComponentResult:
        if self.llm is None or deadline is None:
            return self.template(question, history)
        try:
            gen = await generate(
                self.llm,
                prompts.reason_messages(question, history),
                max_tokens=self.max_tokens,
                deadline=deadline,
            )
        except EngineUnavailable as exc:
            failed = self.template(question, history, f"reason: {exc}")
            failed.engine_error = str(exc)
            return failed
        text = gen.text.strip()
        if gen.aborted and not text:
            result = self.template(question, history, "reason: LLM ran out of time and was aborted")
            result.usage = usage_of(gen)
            return result
        # A reasoning note cut short by the deadline is still a usable note.
        reason = "reason: LLM output truncated at the deadline" if gen.aborted else None
        return ComponentResult(text, PathKind.LLM, usage_of(gen), reason)
