"""Text helpers shared by the template components and the prompts: terms, O-RAN acronyms, sentences, lexical
overlap. Plain functions of text, below every layer (like ``xapp.domain``)."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "then",
        "else",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "from",
        "into",
        "onto",
        "over",
        "under",
        "about",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "do",
        "does",
        "did",
        "has",
        "have",
        "had",
        "having",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "there",
        "their",
        "them",
        "they",
        "he",
        "she",
        "we",
        "you",
        "your",
        "our",
        "us",
        "i",
        "me",
        "my",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "can",
        "could",
        "should",
        "would",
        "may",
        "might",
        "must",
        "shall",
        "will",
        "not",
        "no",
        "nor",
        "so",
        "than",
        "too",
        "very",
        "just",
        "also",
        "such",
        "each",
        "any",
        "all",
        "both",
        "either",
        "neither",
        "some",
        "most",
        "more",
        "other",
        "another",
        "same",
        "own",
        "only",
        "via",
        "per",
        "between",
        "among",
        "within",
        "without",
        "during",
        "before",
        "after",
        "above",
        "below",
        "up",
        "down",
        "out",
        "off",
        "again",
        "further",
        "once",
        "here",
        "main",
        "primary",
        "key",
        "role",
        "purpose",
        "function",
        "used",
        "use",
        "using",
        "based",
        "following",
        "describe",
        "explain",
        "does",
        "do",
        "typically",
        "generally",
        "commonly",
        "best",
    ]
)

# O-RAN vocabulary: the template decomposer turns each acronym it finds into a focused sub-query.
ACRONYMS: dict[str, str] = {
    "RIC": "RAN Intelligent Controller",
    "NEAR-RT RIC": "near-real-time RAN Intelligent Controller",
    "NON-RT RIC": "non-real-time RAN Intelligent Controller",
    "SMO": "Service Management and Orchestration",
    "E2": "E2 interface between near-RT RIC and E2 nodes",
    "E2AP": "E2 Application Protocol",
    "E2SM": "E2 service model",
    "KPM": "E2SM Key Performance Measurement",
    "RC": "E2SM RAN Control",
    "A1": "A1 interface between non-RT RIC and near-RT RIC",
    "O1": "O1 interface for management (FCAPS)",
    "O2": "O2 interface to the O-Cloud",
    "O-CU": "O-RAN Central Unit",
    "O-DU": "O-RAN Distributed Unit",
    "O-RU": "O-RAN Radio Unit",
    "O-CLOUD": "O-Cloud cloud computing platform",
    "OFH": "Open Fronthaul",
    "FH": "fronthaul",
    "CUS": "Control, User and Synchronization planes of Open Fronthaul",
    "M-PLANE": "Open Fronthaul management plane",
    "S-PLANE": "Open Fronthaul synchronization plane",
    "ECPRI": "enhanced Common Public Radio Interface",
    "PTP": "Precision Time Protocol",
    "RMR": "RIC Message Router",
    "SDL": "Shared Data Layer",
    "XAPP": "xApp application on the near-RT RIC",
    "RAPP": "rApp application on the non-RT RIC",
    "OTIC": "Open Testing and Integration Centre",
    "QOS": "quality of service",
    "QOE": "quality of experience",
    "SLA": "service level agreement",
    "MIMO": "multiple-input multiple-output",
    "VES": "VNF Event Stream",
    "NETCONF": "Network Configuration Protocol",
    "YANG": "YANG data model",
    "FCAPS": "fault, configuration, accounting, performance and security management",
    "F1": "F1 interface between CU and DU",
    "E1": "E1 interface between CU-CP and CU-UP",
    "X2": "X2 interface between eNBs",
    "XN": "Xn interface between gNBs",
    "GNB": "gNodeB 5G base station",
    "UE": "user equipment",
    "DMS": "deployment management services",
    "IMS": "infrastructure management services",
}

_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-\.]*[A-Za-z0-9]|[A-Za-z0-9]")
_ACRONYM = re.compile(r"\b(?:near-RT RIC|non-RT RIC|[A-Za-z]?[A-Z][A-Z0-9]*(?:-[A-Za-z0-9]+)*|[xr]Apps?)\b")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def terms(text: str) -> list[str]:
    """Lower-cased content terms: stopwords and one-letter tokens dropped, plural 's' folded."""
    out: list[str] = []
    for token in _TOKEN.findall(text):
        t = token.lower().strip(".-")
        if len(t) < 2 and not t.isdigit():
            continue
        if t in STOPWORDS:
            continue
        if len(t) > 4 and t.endswith("s") and not t.endswith("ss"):
            t = t[:-1]
        out.append(t)
    return out


def acronyms(text: str) -> list[str]:
    """O-RAN entities named in the text, known glossary entries first, in order of appearance."""
    found: list[str] = []
    for match in _ACRONYM.findall(text):
        key = match.upper().rstrip("S") if match.lower() in ("xapps", "rapps") else match.upper()
        if (key in ACRONYMS or (len(match) >= 2 and sum(c.isupper() for c in match) >= 2)) and key not in found:
            found.append(key)
    return found


_BLOCK_BREAK = re.compile(r"\n\s*\n|\n(?=\s*[-*+] |\s*\d+\. |\s*\|)")
_LIST_MARK = re.compile(r"^\s*(?:[-*+]|\d+\.)\s+")


def blocks(text: str) -> list[tuple[str, bool]]:
    """The text's paragraphs, list items and table rows, each on one line, with whether it is a list item
    (its marker dropped)."""
    out: list[tuple[str, bool]] = []
    for raw in _BLOCK_BREAK.split(text):
        item = bool(_LIST_MARK.match(raw))
        block = " ".join(_LIST_MARK.sub("", raw, count=1).split())
        if block:
            out.append((block, item))
    return out


def sentences(text: str) -> list[str]:
    """Split prose into sentences; list items and table rows count as sentences of their own."""
    out: list[str] = []
    for block, _ in blocks(text):
        out.extend(s.strip() for s in _SENTENCE_END.split(block) if s.strip())
    return out


_MARKUP = (
    (re.compile(r"\+[-=+]{3,}\+?"), " "),  # RST/grid table borders
    (re.compile(r"^\s*#+\s+"), ""),  # markdown headings
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # [text](url)
    (re.compile(r":[\w:-]+:`([^`<]+?)\s*(?:<[^>]*>)?`"), r"\1"),  # RST roles, :ref:`text <target>`
    (re.compile(r"`([^`]+?)\s*<[^>]*>`_{0,2}"), r"\1"),  # RST links, `text <url>`_
    (re.compile(r"\*\*(.+?)\*\*|__(.+?)__"), r"\1\2"),  # bold
    (re.compile(r"`{1,2}([^`]+?)`{1,2}_?"), r"\1"),  # code, ``literal``
    (re.compile(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])"), r"\1"),  # emphasis
)


def plain(sentence: str) -> str:
    """A sentence of the docs as a reader wants it in an answer: no markdown or RST markup, a table row's cells
    separated by semicolons."""
    text = sentence
    for pattern, replacement in _MARKUP:
        text = pattern.sub(replacement, text)
    if "|" in text:
        cells = [c.strip() for c in text.strip().strip("|").split("|")]
        text = "; ".join(c for c in cells if c)
    return " ".join(text.split())


def idf(documents: Iterable[Sequence[str]]) -> dict[str, float]:
    docs = [set(d) for d in documents]
    n = len(docs)
    df: Counter[str] = Counter()
    for d in docs:
        df.update(d)
    return {t: math.log(1.0 + (n - c + 0.5) / (c + 0.5)) for t, c in df.items()}


def overlap(query_terms: Sequence[str], doc_terms: Sequence[str], weights: dict[str, float]) -> float:
    """IDF-weighted share of the query's distinct terms that the document contains (0..1)."""
    q = set(query_terms)
    if not q:
        return 0.0
    d = set(doc_terms)
    default = max(weights.values(), default=1.0)
    total = sum(weights.get(t, default) for t in q)
    hit = sum(weights.get(t, default) for t in q & d)
    return hit / total if total else 0.0
