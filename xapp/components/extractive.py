"""Template answering: extractive synthesis and multiple-choice option scoring over retrieved evidence.

No LLM. Sentences of the retrieved passages are ranked by IDF-weighted term overlap with the question,
blended with their passage's retrieval score. Options are scored by how well the evidence covers the terms
that set each option apart, plus (with an embedder) the cosine similarity between "question + option" and
the passages' stored embeddings, so only the few options are embedded per request, never the evidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from xapp.domain import Passage
from xapp.llm.prompts import strip_option_number
from xapp.store.embedding import MiniLMEmbedder
from xapp.text import idf, overlap, plain, sentences, terms

MAX_SENTENCES = 200  # bounds the lexical work on long evidence: a few ms either way


@dataclass(frozen=True)
class Evidence:
    sentence: str
    source: str
    score: float


def _candidate_sentences(passages: Sequence[Passage]) -> list[tuple[str, Passage]]:
    seen: set[str] = set()
    out: list[tuple[str, Passage]] = []
    for passage in passages:
        if passage.id in seen:
            continue
        seen.add(passage.id)
        for sentence in sentences(passage.text):
            if len(sentence) >= 25 and len(terms(sentence)) >= 3:
                out.append((sentence, passage))
    return out[:MAX_SENTENCES]


def rank_evidence(question: str, passages: Sequence[Passage]) -> list[Evidence]:
    """Sentences of the passages, most relevant to the question first."""
    candidates = _candidate_sentences(passages)
    if not candidates:
        return []
    sentence_terms = [terms(s) for s, _ in candidates]
    weights = idf(sentence_terms)
    q_terms = terms(question)
    scores = np.array([overlap(q_terms, st, weights) for st in sentence_terms])
    scores += 0.5 * np.array([max(p.score, 0.0) for _, p in candidates])
    order = np.argsort(-scores, kind="stable")
    return [Evidence(candidates[i][0], candidates[i][1].source, float(scores[i])) for i in order]


def extractive_answer(question: str, passages: Sequence[Passage], max_sentences: int = 3) -> tuple[str, list[str]]:
    """The most relevant sentences, the best first, as plain text (no markup), and the sources they came from.

    A sentence that ends in a colon only announces what follows it (a list, a code block) and is left out."""
    ranked = rank_evidence(question, passages)
    picked: list[tuple[str, Evidence]] = []
    seen_terms: list[set[str]] = []
    for ev in ranked:
        text = plain(ev.sentence)
        t = set(terms(text))
        if text.endswith(":") or len(t) < 3:
            continue
        if any(len(t & s) >= 0.8 * len(t) for s in seen_terms):
            continue  # near-duplicate of a sentence already chosen
        picked.append((text, ev))
        seen_terms.append(t)
        if len(picked) == max_sentences:
            break
    if not picked:
        return "No relevant information was found in the knowledge base.", []
    sources = list(dict.fromkeys(ev.source for _, ev in picked))
    return " ".join(text for text, _ in picked), sources


def score_options(
    question: str, options: Sequence[str], passages: Sequence[Passage], embedder: MiniLMEmbedder | None = None
) -> list[float]:
    """Support of each option in the evidence; the highest wins. Ties keep the earlier option."""
    texts = [strip_option_number(o) for o in options]
    option_terms = [terms(t) for t in texts]
    candidates = _candidate_sentences(passages)
    evidence_terms = [terms(s) for s, _ in candidates]
    weights = idf(evidence_terms + option_terms)
    # Terms shared by every option say nothing about which one is right.
    common = set.intersection(*(set(t) for t in option_terms)) if option_terms else set()
    evidence_vocab: set[str] = set().union(*evidence_terms) if evidence_terms else set()
    scores = np.zeros(len(options))
    for i, ot in enumerate(option_terms):
        distinct = [t for t in ot if t not in common]
        scores[i] = overlap(distinct, list(evidence_vocab), weights) if distinct else 0.0
    vectors = [p.vector for p in passages if p.vector is not None]
    if embedder is not None and vectors:
        option_vecs = embedder.embed([f"{question} {t}" for t in texts])
        sims = option_vecs @ np.asarray(vectors, dtype=np.float32).T  # (options, passages)
        scores += sims.max(axis=1)
    return scores.tolist()


def pick_option(
    question: str, options: Sequence[str], passages: Sequence[Passage], embedder: MiniLMEmbedder | None = None
) -> int:
    scores = score_options(question, options, passages, embedder)
    return int(np.argmax(scores)) + 1
