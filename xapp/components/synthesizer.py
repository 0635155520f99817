"""Answer Synthesizer: the final answer from the history and, for multiple-choice questions, the option."""

from __future__ import annotations

from collections.abc import Sequence

from xapp.components.base import ComponentResult, choose, fell_back, generate, usage_of
from xapp.components.extractive import extractive_answer, pick_option
from xapp.domain import Cause, Component, PathKind, Question, Step, Usage
from xapp.errors import EngineUnavailable
from xapp.llm import prompts
from xapp.llm.base import LLM, Message, TextCallback
from xapp.store.embedding import MiniLMEmbedder

SYNTHESIZER = Component.SYNTHESIZER


def _failed(cause: Cause, detail: str, usage: Usage | None = None) -> ComponentResult:
    """An LLM synthesis that produced nothing usable: the pipeline answers through templates instead."""
    return fell_back(SYNTHESIZER, cause, detail, ComponentResult("", PathKind.TEMPLATE, usage or Usage()))


class Synthesizer:
    def __init__(
        self, llm: LLM | None, embedder: MiniLMEmbedder | None = None, related_min_score: float | None = None
    ) -> None:
        self.llm = llm
        self.embedder = embedder
        self.related_min_score = related_min_score  # evidence less similar is not about the question

    def template(self, question: Question, history: Sequence[Step]) -> ComponentResult:
        """Extractive synthesis; with options, the option best supported by the evidence."""
        passages = [p for s in history for p in s.passages]
        text, _ = extractive_answer(question.text, passages)
        choice = None
        if question.options:
            choice = pick_option(question.text, question.options, passages, self.embedder, self.related_min_score)
            text = f"{prompts.option_line(question, choice)} — evidence: {text}"
        return ComponentResult(text, PathKind.TEMPLATE, choice=choice)

    async def choose(
        self, question: Question, history: Sequence[Step], messages: list[Message], *, deadline: float
    ) -> ComponentResult:
        """The LLM's option from one prefill, with the probability of every option."""
        assert self.llm is not None
        try:
            result = await choose(self.llm, messages, prompts.option_labels(question), deadline=deadline)
        except EngineUnavailable as exc:
            return _failed(Cause.ENGINE_ERROR, str(exc))
        usage = Usage(result.prompt_tokens, 0 if result.aborted else 1, result.total_s * 1000.0, result.aborted)
        if result.index is None:
            return _failed(Cause.ABORTED, "LLM ran out of time and was aborted", usage)
        choice = result.index + 1
        text = prompts.option_line(question, choice)
        evidence, _ = extractive_answer(question.text, [p for s in history for p in s.passages], max_sentences=1)
        if any(s.passages for s in history):
            text += f" — evidence: {evidence}"
        return ComponentResult(text, PathKind.LLM, usage, choice=choice, probabilities=list(result.probabilities))

    async def answer(
        self, messages: list[Message], *, max_tokens: int, deadline: float, on_text: TextCallback | None = None
    ) -> ComponentResult:
        """The LLM's answer to an open question, ending on a full sentence (``on_text`` streams the draft;
        the result may end earlier, on the last full sentence)."""
        assert self.llm is not None
        try:
            gen = await generate(self.llm, messages, max_tokens=max_tokens, deadline=deadline, on_text=on_text)
        except EngineUnavailable as exc:
            return _failed(Cause.ENGINE_ERROR, str(exc))
        usage = usage_of(gen)
        text = prompts.complete_sentences(gen.text) if gen.finish_reason != "stop" else gen.text.strip()
        if gen.aborted and not text:
            return _failed(Cause.ABORTED, "LLM ran out of time and was aborted", usage)
        if not text:
            return _failed(Cause.UNUSABLE_OUTPUT, "LLM returned an empty answer", usage)
        return ComponentResult(text, PathKind.LLM, usage)
