"""Reasoner: one reasoning step without retrieval — what the evidence so far implies for the question."""

from __future__ import annotations

from collections.abc import Sequence

from xapp.components.base import ComponentResult, fell_back, generate, usage_of
from xapp.components.extractive import rank_evidence
from xapp.domain import Cause, Component, Fallback, PathKind, Question, Step
from xapp.errors import EngineUnavailable
from xapp.llm.base import LLM, Message

REASONER = Component.REASONER


class Reasoner:
    def __init__(self, llm: LLM | None) -> None:
        self.llm = llm

    def template(self, question: Question, history: Sequence[Step]) -> ComponentResult:
        """Extractive note: the single most relevant sentence of the evidence gathered so far."""
        passages = [p for s in history for p in s.passages]
        ranked = rank_evidence(question.text, passages)
        note = ranked[0].sentence if ranked else "No evidence gathered yet."
        return ComponentResult(note, PathKind.TEMPLATE)

    async def reason(
        self, question: Question, history: Sequence[Step], messages: list[Message], *, max_tokens: int, deadline: float
    ) -> ComponentResult:
        assert self.llm is not None
        try:
            gen = await generate(self.llm, messages, max_tokens=max_tokens, deadline=deadline)
        except EngineUnavailable as exc:
            return fell_back(REASONER, Cause.ENGINE_ERROR, str(exc), self.template(question, history))
        text = gen.text.strip()
        if gen.aborted and not text:
            result = fell_back(
                REASONER, Cause.ABORTED, "LLM ran out of time and was aborted", self.template(question, history)
            )
            result.usage = usage_of(gen)
            return result
        # A reasoning note cut short by the deadline is still a usable note.
        result = ComponentResult(text, PathKind.LLM, usage_of(gen))
        if gen.aborted:
            result.fallback = Fallback(REASONER, Cause.ABORTED, "LLM output truncated at the deadline")
        return result
