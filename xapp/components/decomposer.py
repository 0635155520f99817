"""Query Decomposer: the next sub-query to retrieve for, from the question and the steps so far."""

from __future__ import annotations

import re
from collections.abc import Sequence

from xapp.components.base import ComponentResult, fell_back, generate, usage_of
from xapp.domain import Action, Cause, Component, PathKind, Question, Step
from xapp.errors import EngineUnavailable
from xapp.llm import prompts
from xapp.llm.base import LLM, Message
from xapp.text import ACRONYMS, acronyms, terms

DECOMPOSER = Component.DECOMPOSER

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


_STUTTER = re.compile(r"(.{1,4}?)\1{4,}")  # "E-R-C-I-I-I-I-I", "RICRICRICRIC…"


def degenerate(query: str) -> bool:
    """A sub-query a small model wrote while looping: a short unit repeated, or mostly repeated words."""
    if _STUTTER.search(query):
        return True
    words = [w.lower() for w in query.split()]
    return len(words) >= 4 and len(set(words)) <= len(words) / 2


class Decomposer:
    def __init__(self, llm: LLM | None) -> None:
        self.llm = llm

    @staticmethod
    def asked(history: Sequence[Step]) -> set[str]:
        return {s.query.lower() for s in history if s.action is Action.RETRIEVE}

    def candidates(self, question: Question, history: Sequence[Step]) -> list[str]:
        """Rule-based sub-queries not searched yet; empty once every one has been (nothing new to search)."""
        asked = self.asked(history)
        return [q for q in template_subqueries(question) if q.lower() not in asked]

    def template(self, question: Question, history: Sequence[Step]) -> ComponentResult:
        """The next rule-based sub-query; the question itself once every one has been searched."""
        return ComponentResult(next(iter(self.candidates(question, history)), question.text), PathKind.TEMPLATE)

    def messages(self, question: Question, history: Sequence[Step]) -> list[Message]:
        return prompts.decompose_messages(question, history, self.candidates(question, history))

    async def decompose(
        self, question: Question, history: Sequence[Step], messages: list[Message], *, max_tokens: int, deadline: float
    ) -> ComponentResult:
        """The LLM's sub-query; the template one when the LLM fails, runs out of time, or writes an unusable
        query (no search terms, or one already searched)."""
        assert self.llm is not None
        try:
            gen = await generate(self.llm, messages, max_tokens=max_tokens, deadline=deadline)
        except EngineUnavailable as exc:
            return fell_back(DECOMPOSER, Cause.ENGINE_ERROR, str(exc), self.template(question, history))
        query = prompts.clean_query(gen.text)
        if gen.aborted:
            cause, detail = Cause.ABORTED, "LLM ran out of time and was aborted"
        elif len(terms(query)) == 0:
            cause, detail = Cause.UNUSABLE_OUTPUT, "LLM sub-query has no search terms"
        elif query.lower() in self.asked(history):
            cause, detail = Cause.UNUSABLE_OUTPUT, "LLM repeated a searched query"
        elif degenerate(query):
            cause, detail = Cause.UNUSABLE_OUTPUT, "LLM sub-query repeats itself"
        else:
            return ComponentResult(query, PathKind.LLM, usage_of(gen))
        result = fell_back(DECOMPOSER, cause, detail, self.template(question, history))
        result.usage = usage_of(gen)
        return result
