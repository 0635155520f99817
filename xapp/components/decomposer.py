"""Query Decomposer: the next sub-query to retrieve for, from the question and the steps so far."""

from __future__ import annotations

import re
from collections.abc import Sequence

from xapp.components.base import ComponentResult, generate, usage_of
from xapp.components.text import ACRONYMS, acronyms, terms
from xapp.domain import Action, PathKind, Question, Step
from xapp.errors import EngineUnavailable
from xapp.llm import prompts
from xapp.llm.base import LLM

_SPLIT = re.compile(
    r"\?\s+|;\s*|,?\s+(?:and also|as well as|and how|and what|and why|and which|versus|vs\.?)\s+",
    re.IGNORECASE,
)


def template_subqueries(question: Question) -> list[str]:
    """Rule-based decomposition: the question itself, its clauses, then one query per O-RAN entity."""
    text = " ".join(question.text.split())
    queries = [text]
    clauses = [c.strip(" ?.,") for c in _SPLIT.split(text)]
    if len(clauses) > 1:
        queries.extend(c for c in clauses if len(terms(c)) >= 2)
    content = terms(text)
    for entity in acronyms(text):
        expansion = ACRONYMS.get(entity)
        focus = " ".join(t for t in content if t != entity.lower())[:60]
        queries.append(f"{expansion or entity} {focus}".strip())
    if question.options:
        # Evidence for the options helps the scorer tell them apart.
        queries.extend(f"{text} {prompts.strip_option_number(o)}" for o in question.options)
    seen: set[str] = set()
    unique = []
    for q in queries:
        key = q.lower()
        if q and key not in seen:
            seen.add(key)
            unique.append(q)
    return unique


class Decomposer:
    def __init__(self, llm: LLM | None, max_tokens: int) -> None:
        self.llm = llm
        self.max_tokens = max_tokens

    @staticmethod
    def asked(history: Sequence[Step]) -> set[str]:
        return {s.query.lower() for s in history if s.action is Action.RETRIEVE}

    def template(
        self, question: Question, history: Sequence[Step], reason: str | None = None
    ) -> ComponentResult:
        asked = self.asked(history)
        candidates = template_subqueries(question)
        query = next((q for q in candidates if q.lower() not in asked), candidates[0])
        return ComponentResult(query, PathKind.TEMPLATE, fallback_reason=reason)

    async def decompose(
        self, question: Question, history: Sequence[Step], deadline: float | None
    ) -> ComponentResult:
        """LLM path when an engine and a deadline are given, else (or when it fails) the template path."""
        if self.llm is None or deadline is None:
            return self.template(question, history)
        try:
            gen = await generate(
                self.llm,
                prompts.decompose_messages(question, history),
                max_tokens=self.max_tokens,
                deadline=deadline,
            )
        except EngineUnavailable as exc:
            return self.template(question, history, f"decompose: {exc}")
        usage = usage_of(gen)
        query = prompts.clean_query(gen.text)
        if gen.aborted:
            result = self.template(question, history, "decompose: LLM ran out of time and was aborted")
        elif len(terms(query)) == 0 or query.lower() in self.asked(history):
            result = self.template(question, history, "decompose: LLM sub-query unusable")
        else:
            return ComponentResult(query, PathKind.LLM, usage)
        result.usage = usage
        return result
