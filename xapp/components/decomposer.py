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

    def candidates(self, question: Question, history: Sequence[Step]) -> list[str]:
        """Rule-based sub-queries not searched yet (all of them again once every one has been)."""
        asked = self.asked(history)
        every = template_subqueries(question)
        return [q for q in every if q.lower() not in asked] or every

    def template(self, question: Question, history: Sequence[Step], reason: str | None = None) -> ComponentResult:
        return ComponentResult(self.candidates(question, history)[0], PathKind.TEMPLATE, fallback_reason=reason)

    async def decompose(self, question: Question, history: Sequence[Step], deadline: float | None) -> ComponentResult:
        """LLM path when an engine and a deadline are given, else (or when it fails) the template path.

        A sub-query that repeats an earlier one is kept: it is the model's judgement, and its retrieval
        simply brings no new passages, so progress does not advance (a failed retrieval in ARGO's terms)."""
        if self.llm is None or deadline is None:
            return self.template(question, history)
        try:
            gen = await generate(
                self.llm,
                prompts.decompose_messages(question, history, self.candidates(question, history)),
                max_tokens=self.max_tokens,
                deadline=deadline,
            )
        except EngineUnavailable as exc:
            failed = self.template(question, history, f"decompose: {exc}")
            failed.engine_error = str(exc)
            return failed
        usage = usage_of(gen)
        query = prompts.clean_query(gen.text)
        if gen.aborted:
            result = self.template(question, history, "decompose: LLM ran out of time and was aborted")
        elif len(terms(query)) == 0:
            result = self.template(question, history, "decompose: LLM sub-query has no search terms")
        else:
            return ComponentResult(query, PathKind.LLM, usage)
        result.usage = usage
        return result
