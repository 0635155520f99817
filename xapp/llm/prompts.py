"""Every prompt the LLM components send, in one place.

All prompts start with the same system message so that vLLM's prefix cache reuses its KV blocks across
components and requests; only the user turn differs. Keep the prompts short: on CPU every prompt token costs
prefill time inside a sub-second budget.
"""

from __future__ import annotations

import functools
import itertools
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from xapp.domain import MAX_OPTIONS, Action, Passage, Question, Step
from xapp.llm.base import Message
from xapp.text import idf, overlap, sentences, terms

SYSTEM = (
    "You are ARGO, an assistant inside an O-RAN near-RT RIC. You answer questions about O-RAN "
    "(RIC, xApps, rApps, E2, A1, O1, O2, Open Fronthaul, SMO, O-CU, O-DU, O-RU) briefly and precisely, "
    "using the evidence you are given."
)


@dataclass(frozen=True)
class PromptVariant:
    """One way to write a call's prompt, and what it leaves out (empty: nothing)."""

    messages: list[Message]
    trimmed: str = ""
    passages: int = 0  # how many passages its evidence shows, numbered [1]…[n]


# Evidence in a prompt, richest first: (passages, characters per passage). The planner sends the first that
# fits the time left; on CPU every prompt token costs prefill time inside a sub-second budget.
NO_EVIDENCE = "(none)"
EVIDENCE_LEVELS: tuple[tuple[int, int], ...] = ((6, 500), (4, 400), (3, 300), (2, 250), (1, 200), (0, 0))


def _passages(history: Sequence[Step]) -> list[Passage]:
    """Every distinct passage so far, in the order retrieved (each retrieval's best first)."""
    seen: set[str] = set()
    out: list[Passage] = []
    for step in history:
        for passage in step.passages:
            if passage.id not in seen:
                seen.add(passage.id)
                out.append(passage)
    return out


def _cut(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[:max_chars].rsplit(" ", 1)[0] + " …"


@functools.lru_cache(maxsize=512)
def _sentence_terms(text: str) -> tuple[list[str], list[list[str]]]:
    """A passage's sentences and their terms; cached, as every evidence level of a prompt cuts the same
    passages (the callers only read the lists)."""
    parts = sentences(text)
    return parts, [terms(p) for p in parts]


def focused_snippet(text: str, max_chars: int, focus: Sequence[str], weights: dict[str, float]) -> str:
    """``text`` in at most ``max_chars``: whole when it fits, else the sentences that share most of the
    ``focus`` terms (IDF ``weights``), kept in their order, a gap marked "…"; without focus, its start.

    A chunk is up to 1200 characters and the line a question needs is rarely its first: on our evaluation set
    the answer's key facts were in the first 200 characters of the best passage for 24% of questions and in its
    focused 200 characters for 59% (docs/performance.md)."""
    flat = " ".join(text.split())
    if len(flat) <= max_chars or not focus:
        return _cut(flat, max_chars)
    parts, part_terms = _sentence_terms(text)
    if not parts:
        return _cut(flat, max_chars)
    scores = [overlap(focus, t, weights) for t in part_terms]
    keep: list[int] = []
    used = 0
    for i in sorted(range(len(parts)), key=lambda i: -scores[i]):  # stable: earlier sentences win ties
        if scores[i] <= 0.0 and keep:
            break
        if used + len(parts[i]) + 2 > max_chars and keep:
            continue
        keep.append(i)
        used += len(parts[i]) + 2
    picked = sorted(keep)
    pieces = [parts[picked[0]]]
    for before, i in itertools.pairwise(picked):
        pieces += [parts[i]] if i == before + 1 else ["…", parts[i]]
    return _cut(" ".join(pieces), max_chars)


def evidence_text(
    history: Sequence[Step],
    max_passages: int = EVIDENCE_LEVELS[0][0],
    max_chars: int = EVIDENCE_LEVELS[0][1],
    focus: str = "",
) -> str:
    """The evidence block of a prompt: reasoning notes, then passages numbered in the order retrieved, each cut
    to ``max_chars`` around what ``focus`` (the question, with its options) asks.

    Passages are cited by number ("[2]"), not by source path: a path costs about ten prompt tokens a passage,
    and :func:`resolve_citations` turns the numbers back into sources in the answer the caller reads."""
    lines = [f"- (note) {s.query}" for s in history if s.action is Action.REASON and s.query]
    passages = _passages(history)
    focus_terms = terms(focus)
    weights = idf([t for part in _sentence_terms(p.text)[1] for t in part] for p in passages) if focus_terms else {}
    for number, passage in enumerate(passages[:max_passages], start=1):
        lines.append(f"[{number}] {focused_snippet(passage.text, max_chars, focus_terms, weights)}")
    return "\n".join(lines) if lines else NO_EVIDENCE


_CITATION = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")


def resolve_citations(text: str, history: Sequence[Step], shown: int) -> tuple[str, list[str]]:
    """``text`` with each evidence number ("[2]", "[1, 3]") replaced by its passage's source, and the sources
    cited, in order of first citation. ``shown``: how many passages the prompt showed (its variant's
    ``passages``); a number beyond them names no passage and is dropped: it cites nothing."""
    passages = _passages(history)[:shown]
    cited: list[str] = []

    def replace(match: re.Match[str]) -> str:
        sources = []
        for number in re.split(r"\s*[,;]\s*", match.group(1)):
            index = int(number) - 1
            if 0 <= index < len(passages) and passages[index].source not in sources:
                sources.append(passages[index].source)
        cited.extend(s for s in sources if s not in cited)
        return f"[{'; '.join(sources)}]" if sources else ""

    resolved = _CITATION.sub(replace, text)
    return re.sub(r"[ \t]+([.,;:])", r"\1", resolved).strip(), cited


def choice_focus(question: Question) -> str:
    """What an option choice's evidence is cut around: the question and its options."""
    return " ".join([question.text, *question.options])


def options_named(question: Question, history: Sequence[Step]) -> int:
    """How many options the lead evidence names: the options all of whose own terms (those not shared by every
    option) appear in the first passage, cut as the leanest choice prompt shows it."""
    max_passages, max_chars = EVIDENCE_LEVELS[-2]
    shown = set(terms(evidence_text(history, max_passages, max_chars, focus=choice_focus(question))))
    own = [set(terms(strip_option_number(o))) for o in question.options]
    common = set.intersection(*own) if own else set()
    return sum(bool(o - common) and o - common <= shown for o in own)


def evidence_variants(
    history: Sequence[Step], build: Callable[[str], list[Message]], focus: str = ""
) -> list[PromptVariant]:
    """``build(evidence_text)`` at every evidence level that differs from the richer one before it."""
    available = len(_passages(history))
    variants: list[PromptVariant] = []
    previous = None
    for max_passages, max_chars in EVIDENCE_LEVELS:
        kept = min(max_passages, available)
        text = evidence_text(history, max_passages, max_chars, focus)
        if text == previous:
            continue
        previous = text
        if kept == available and max_chars == EVIDENCE_LEVELS[0][1]:
            trimmed = ""
        elif kept == 0:
            trimmed = f"evidence left out ({available} passages)" if available else ""
        else:
            trimmed = f"evidence trimmed to {kept} of {available} passages, {max_chars} characters each"
        variants.append(PromptVariant(build(text), trimmed, kept))
    return variants


def numbered_options(question: Question) -> str:
    return "\n".join(f"{i}. {strip_option_number(o)}" for i, o in enumerate(question.options, start=1))


def strip_option_number(option: str) -> str:
    """ORAN-Bench options come as "2. text": drop the number, the caller numbers them again."""
    return re.sub(r"^\s*\(?\d+[.):]\s*", "", option).strip()


def _turns(user: str) -> list[Message]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


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
    return _turns(user)


def reason_variants(question: Question, history: Sequence[Step]) -> list[PromptVariant]:
    return evidence_variants(
        history,
        lambda evidence: _turns(
            f"Question: {question.text}\nEvidence:\n{evidence}\n"
            "In one or two sentences, state what the evidence implies for the question."
        ),
        focus=question.text,
    )


def choose_variants(question: Question, history: Sequence[Step]) -> list[PromptVariant]:
    """Multiple choice: the reply's first token is the option's letter, read from one prefill."""
    return evidence_variants(
        history,
        lambda evidence: _turns(
            f"Question: {question.text}\n"
            + (f"Evidence (may be incomplete):\n{evidence}\n" if evidence != NO_EVIDENCE else "")
            + f"Options:\n{lettered_options(question)}\nReply with the letter of the correct option only."
        ),
        focus=choice_focus(question),
    )


# The LLM sees options as "A." … (the format instruction-tuned models learned multiple choice in): on the
# ORAN-Bench dev split the 1.5B chose right closed-book for 67.6% with letters against 60.2% with the
# questions' own numbers (docs/performance.md). Replies still number the choice as the caller did.
OPTION_LETTERS = string.ascii_uppercase[:MAX_OPTIONS]


def option_labels(question: Question) -> list[str]:
    """The label the LLM answers with for each option: A, B, C, …"""
    if len(question.options) > MAX_OPTIONS:
        raise ValueError(f"{len(question.options)} options; at most {MAX_OPTIONS} can be labelled")
    return list(OPTION_LETTERS[: len(question.options)])


def lettered_options(question: Question) -> str:
    labels = option_labels(question)
    return "\n".join(f"{label}. {strip_option_number(o)}" for label, o in zip(labels, question.options, strict=True))


def option_line(question: Question, choice: int) -> str:
    """The chosen option as a reply starts with it: "2. To ensure interoperability …"."""
    return f"{choice}. {strip_option_number(question.options[choice - 1])}"


def answer_variants(question: Question, history: Sequence[Step]) -> list[PromptVariant]:
    """Open questions: an answer grounded in the evidence, citing the sources it uses."""
    return evidence_variants(
        history,
        lambda evidence: _turns(
            f"Question: {question.text}\nEvidence:\n{evidence}\n"
            "Answer from the evidence in at most three sentences; cite the evidence of each fact by its "
            "number, e.g. [1]."
        ),
        focus=question.text,
    )


def synthesize_messages(question: Question, history: Sequence[Step]) -> list[Message]:
    """The richest synthesis prompt (for benches and calibration)."""
    variants = choose_variants(question, history) if question.options else answer_variants(question, history)
    return variants[0].messages


def complete_sentences(text: str) -> str:
    """Cut a reply that stopped mid-sentence back to its last full sentence (all of it if it has none)."""
    text = text.strip()
    if not text or text[-1] in ".!?)]\"'":
        return text
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", text)]
    return text[: ends[-1]] if ends else text


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
