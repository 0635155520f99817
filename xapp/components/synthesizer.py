"""Answer Synthesizer: the final answer from the history and, for multiple-choice questions, the option."""

from __future__ import annotations

from collections.abc import Sequence

from xapp.components.base import ComponentResult, generate, usage_of
from xapp.components.extractive import extractive_answer, pick_option
from xapp.domain import PathKind, Question, Step, Usage
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
        text, _ = extractive_answer(question.text, passages)
        choice = None
        if question.options:
            choice = pick_option(question.text, question.options, passages, self.embedder)
            text = f"{choice}. {prompts.strip_option_number(question.options[choice - 1])} — evidence: {text}"
        return ComponentResult(text, PathKind.TEMPLATE, fallback_reason=reason, choice=choice)

    async def synthesize_llm(self, question: Question, history: Sequence[Step], deadline: float) -> ComponentResult:
        """The LLM path alone. Raises ``NeedsTemplate`` when its output cannot be used; a multiple-choice
        reply whose option cannot be read comes back with ``choice`` None and path MIXED: the caller lets
        the template scorer pick (the pipeline does so under its own time limit)."""
        if self.llm is None:
            raise NeedsTemplate("synthesize: no LLM engine", Usage())
        try:
            gen = await generate(
                self.llm,
                prompts.synthesize_messages(question, history),
                max_tokens=self.max_tokens,
                deadline=deadline,
            )
        except EngineUnavailable as exc:
            raise NeedsTemplate(f"synthesize: {exc}", Usage(), engine_error=str(exc)) from exc
        usage = usage_of(gen)
        text = gen.text.strip()
        if gen.aborted:
            raise NeedsTemplate("synthesize: LLM ran out of time and was aborted", usage)
        if not text:
            raise NeedsTemplate("synthesize: LLM returned an empty answer", usage)
        if not question.options:
            return ComponentResult(text, PathKind.LLM, usage)
        choice = prompts.parse_choice(text, question.options)
        if choice is None:
            return ComponentResult(
                text,
                PathKind.MIXED,
                usage,
                "synthesize: option not readable in LLM output; template scorer chose",
            )
        return ComponentResult(text, PathKind.LLM, usage, choice=choice)


class NeedsTemplate(Exception):
    """The LLM synthesis produced nothing usable; ``usage`` is what it cost anyway."""

    def __init__(self, reason: str, usage: Usage, engine_error: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.usage = usage
        self.engine_error = engine_error
