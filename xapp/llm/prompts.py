"""Every prompt the LLM components send, in one place.

All prompts start with the same system message so that vLLM's prefix cache reuses its KV blocks across
components and requests; only the user turn differs. Keep the prompts short: on CPU every prompt token costs
prefill time inside a sub-second budget.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from xapp.domain import Action, Question, Step
from xapp.llm.base import Message

SYSTEM = (
    "You are ARGO, an assistant inside an O-RAN near-RT RIC. You answer questions about O-RAN "
    "(RIC, xApps, rApps, E2, A1, O1, O2, Open Fronthaul, SMO, O-CU, O-DU, O-RU) briefly and precisely, "
    "using the evidence you are given."
)

MAX_EVIDENCE_CHARS = 1500  # evidence beyond this costs prefill time and rarely changes the answer


def _evidence(history: Sequence[Step], limit: int = MAX_EVIDENCE_CHARS) -> str:
    lines: list[str] = []
    seen: set[str] = set()
    used = 0
    for step in history:
        if step.action is Action.REASON and step.query:
            text = f"- (note) {step.query}"
            lines.append(text)
            used += len(text)
        for passage in step.passages:
            if passage.id in seen:
                continue
            seen.add(passage.id)
            snippet = " ".join(passage.text.split())
            room = limit - used
            if room <= 80:
                break
            snippet = snippet[: min(len(snippet), room, 500)]
            lines.append(f"- [{passage.source}] {snippet}")
            used += len(snippet)
    return "\n".join(lines) if lines else "(none yet)"


def _options(question: Question) -> str:
    return "\n".join(f"{i}. {strip_option_number(o)}" for i, o in enumerate(question.options, start=1))


def strip_option_number(option: str) -> str:
    """ORAN-Bench options come as "2. text": drop the number, the caller numbers them again."""
    return re.sub(r"^\s*\(?\d+[.):]\s*", "", option).strip()


def decompose_messages(question: Question, history: Sequence[Step], candidates: Sequence[str] = ()) -> list[Message]:
    """``candidates``: rule-based sub-queries not searched yet. Small models copy or adapt one of them far more
    reliably than they invent a query, and larger ones are free to write their own."""
    asked = [s.query for s in history if s.action is Action.RETRIEVE and s.query]
    user = f"Question: {question.text}\n"
    if asked:
        user += "Already searched: " + "; ".join(asked) + "\n"
    if candidates:
        user += "Possible searches: " + "; ".join(candidates[:4]) + "\n"
    user += (
        "Write ONE short search query (at most 12 words) for the O-RAN documentation that finds information "
        "still missing to answer the question. Reply with the query only."
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def reason_messages(question: Question, history: Sequence[Step]) -> list[Message]:
    user = (
        f"Question: {question.text}\nEvidence:\n{_evidence(history)}\n"
        "In one or two sentences, state what the evidence implies for the question."
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def synthesize_messages(question: Question, history: Sequence[Step]) -> list[Message]:
    user = f"Question: {question.text}\nEvidence:\n{_evidence(history)}\n"
    if question.options:
        user += (
            f"Options:\n{_options(question)}\n"
            "Reply with the number of the correct option first, as 'Answer: N', then one sentence why."
        )
    else:
        user += "Answer in at most three sentences."
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


_CHOICE_PATTERNS = (
    re.compile(r"answer\s*(?:is)?\s*[:\-]?\s*(?:option\s*)?\(?([1-9])\)?", re.IGNORECASE),
    re.compile(r"option\s*\(?([1-9])\)?", re.IGNORECASE),
    re.compile(r"^\s*\(?([1-9])[.):\s]", re.MULTILINE),
)


def parse_choice(text: str, options: Sequence[str]) -> int | None:
    """The 1-based option the model named, or None when its reply names none unambiguously."""
    n = len(options)
    for pattern in _CHOICE_PATTERNS:
        match = pattern.search(text)
        if match and 1 <= int(match.group(1)) <= n:
            return int(match.group(1))
    # The model may quote an option instead of numbering it.
    lowered = " ".join(text.lower().split())
    quoted = [
        i
        for i, o in enumerate(options, start=1)
        if len(strip_option_number(o)) > 8 and strip_option_number(o).lower() in lowered
    ]
    return quoted[0] if len(quoted) == 1 else None


def clean_query(text: str) -> str:
    """First line of a model reply, without quotes or a 'Query:' label."""
    line = next((ln for ln in text.strip().splitlines() if ln.strip()), "")
    line = re.sub(r"^(search\s+)?query\s*:\s*", "", line.strip(), flags=re.IGNORECASE)
    return line.strip().strip("\"'`").strip()
