"""Answer Synthesizer: the final answer from the history and, for multiple-choice questions, the option."""

from __future__ import annotations

from typing import Sequence

from xapp.components.base import ComponentResult, generate, usage_of
from xapp.components.extractive import extractive_answer, pick_option
from xapp.domain import PathKind, Question, Step
from xapp.errors import EngineUnavailable
from xapp.llm import prompts
from xapp.llm.base import LLM
from xapp.store.embedding import MiniLMEmbedder


class Synthesizer:
    def __init__(self, llm: LLM | None, max_tokens: int, embedder: MiniLMEmbedder | None = None) -> None:
        self.llm = llm
        self.max_tokens = max_tokens
        self.embedder = embedder

    def template(self, question: Question, history: Sequence[Step], reason: str | None = None) -> ComponentResult:
        """Extractive synthesis; with options, the option best supported by the evidence."""
        passages = [p for s in history for p in s.passages]
        text, _ = extractive_answer(question.text, passages, self.embedder)
        choice = None
        if question.options:
            choice = pick_option(question.text, question.options, passages, self.embedder)
            text = f"{choice}. {prompts.strip_option_number(question.options[choice - 1])} — evidence: {text}"
        return ComponentResult(text, PathKind.TEMPLATE, fallback_reason=reason, choice=choice)

    async def synthesize(self, question: Question, history: Sequence[Step], deadline: float | None
                         ) -> ComponentResult:
        if self.llm is None or deadline is None:
            return self.template(question, history)
        try:
            gen = await generate(self.llm, prompts.synthesize_messages(question, history),
                                 max_tokens=self.max_tokens, deadline=deadline)
        except EngineUnavailable as exc:
            return self.template(question, history, f"synthesize: {exc}")
        usage = usage_of(gen)
        text = gen.text.strip()
        if gen.aborted:
            result = self.template(question, history, "synthesize: LLM ran out of time and was aborted")
            result.usage = usage
            return result
        if not question.options:
            if not text:
                result = self.template(question, history, "synthesize: LLM returned an empty answer")
                result.usage = usage
                return result
            return ComponentResult(text, PathKind.LLM, usage)
        choice = prompts.parse_choice(text, question.options)
        if choice is None:
            # The model's prose stands, the template scorer picks the option; the path says both ran.
            fallback = self.template(question, history)
            return ComponentResult(text, PathKind.MIXED, usage,
                                   "synthesize: option not readable in LLM output; template scorer chose",
                                   fallback.choice)
        return ComponentResult(text, PathKind.LLM, usage, choice=choice)
