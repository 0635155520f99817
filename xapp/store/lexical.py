"""Lexical (BM25) search over the chunks of the Chroma collection, kept consistent with it by fingerprint.

Dense MiniLM search finds paraphrases but misses exact identifiers: a question about port ``36422``,
``RIC_SUB_REQ`` or ``RMR_SEED_RT`` needs the chunk that holds that very string. :class:`LexicalIndex` is a
`bm25s <https://github.com/xhluca/bm25s>`_ index over the same chunks, built from the collection's own
contents (``collection.get``), so it does not care which process or which code path wrote them.

**Consistency.** Before each search the index compares the collection's fingerprint — its ``count()`` and
the id of its newest record (``get(offset=count - 1, limit=1)``; Chroma returns records in insertion order)
— with the one it was built from; about 2 ms on the full O-RAN SC corpus. Any add, upsert of a new id or
delete changes it; the index then lists the ids (a few ms), fetches only the chunks it has not tokenised yet,
and rebuilds the BM25 matrix from cached tokens (~40 ms; a full build of the 1,232 chunks of the O-RAN SC
docs takes ~0.5 s on this project's 2-core machine, docs/performance.md). So the index lives in memory and is
built on first use (the pipeline's start-up calibration query does that) rather than persisted. It reads
the collection through a function, so when the knowledge base re-opens its embedded client after another
process wrote (see :mod:`xapp.store.knowledge_base`), the next search sees the new view and rebuilds; it
needs no hook in ingestion. One case the fingerprint cannot see is a rewrite of an existing id with
different text while the count stays the same; ingestion never does that, because chunk ids are hashes of
their content.

**Tokens.** :func:`tokenize` lower-cases, keeps identifiers intact and also indexes their parts: a "compound"
of alphanumerics joined by ``. _ - / :`` is one token (``36422:32222/sctp``, ``ricxappframe.alarm.alarm``,
``ric_sub_req``, ``e2term-sctp-alpha``), then its ``/``/``:`` segments, then its atoms split at ``. _ -`` and
at camelCase humps (``readSubsFromDb`` → ``read``, ``subs``, ``from``, ``db``). Plain words are stemmed
(Snowball English through PyStemmer) and English stop words dropped; compounds and tokens with digits are
never stemmed, so exact matches stay exact. The platform's short component names (``e2term``, ``submgr``,
:data:`ABBREVIATIONS`) also index the words of their long names.

**Fusion.** :func:`fuse` combines the dense ranking and the BM25 hits by reciprocal rank fusion, then keeps
the first ``exact_slots`` places for chunks that contain a rare identifier the query names (:func:`identifiers`
held by at most ``rare_df`` of the chunks): RRF alone lets prose about the same subject, ranked high by
both searches, beat the one terse line that holds ``36422``. Settings in :class:`HybridSettings`, tuned
with ``python -m xapp.bench.retrieval``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

_COMPOUND = re.compile(r"[A-Za-z0-9]+(?:[._\-/:][A-Za-z0-9]+)*")
_SEGMENT_SPLIT = re.compile(r"[/:]")
_ATOM_SPLIT = re.compile(r"[._\-]")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_HUMP = re.compile(r"[a-z][A-Z]")
_FETCH_BATCH = 500
# The RIC platform's short component names, as Kubernetes services, Helm releases and RMR endpoints spell them:
# a chunk that says ``service-ricplt-e2term-sctp-alpha`` also answers a question about the "E2 termination".
ABBREVIATIONS = {
    "e2term": "e2 termination",
    "e2t": "e2 termination",
    "e2mgr": "e2 manager",
    "submgr": "subscription manager",
    "rtmgr": "routing manager",
    "routemgr": "routing manager",
    "appmgr": "xapp manager",
    "a1mediator": "a1 mediator",
    "o1mediator": "o1 mediator",
    "vespamgr": "ves manager",
    "alarmmgr": "alarm manager",
    "dbaas": "database",
    "rnib": "radio network information base",
}


@lru_cache(maxsize=1)
def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer("english")


def _word(token: str, stem: bool, out: list[str], expand: bool = True) -> None:
    """A lower-cased atom: dropped if a stop word, stemmed if purely alphabetic; a component's short name
    (:data:`ABBREVIATIONS`) brings the words of its long name along."""
    if not token or token in _stopwords():
        return
    expansion = ABBREVIATIONS.get(token) if expand else None
    if stem and token.isalpha() and len(token) > 3:
        token = _stemmer().stemWord(token)
    out.append(token)
    for word in expansion.split() if expansion else ():
        _word(word, stem, out, expand=False)


def tokenize(text: str, stem: bool = True) -> list[str]:
    """BM25 tokens of ``text``: whole identifiers plus their parts (see the module docstring)."""
    out: list[str] = []
    for match in _COMPOUND.finditer(text):
        raw = match.group(0)
        compound = raw.lower()
        if not _SEGMENT_SPLIT.search(raw) and not _ATOM_SPLIT.search(raw):
            parts = _CAMEL.findall(raw) if not raw.islower() and not raw.isupper() else []
            if len(parts) > 1:
                out.append(compound)  # the identifier as written: readsubsfromdb
                for part in parts:
                    _word(part.lower(), stem, out)
            else:
                _word(compound, stem, out)
            continue
        out.append(compound)
        segments = [s for s in _SEGMENT_SPLIT.split(raw) if s]
        for segment in segments if len(segments) > 1 else []:
            if _ATOM_SPLIT.search(segment):
                out.append(segment.lower())
        for segment in segments:
            for atom in _ATOM_SPLIT.split(segment):
                if not atom:
                    continue
                parts = _CAMEL.findall(atom) if not atom.islower() and not atom.isupper() else []
                if len(parts) > 1:
                    out.append(atom.lower())
                    for part in parts:
                        _word(part.lower(), stem, out)
                else:
                    _word(atom.lower(), stem, out)
    return out


def identifiers(text: str) -> list[str]:
    """The identifier-like terms of a query, lower-cased, as :func:`tokenize` indexes them whole: anything with
    ``_``, a camelCase hump, a joiner (``. - / :``) or a digit (three characters or more: ``36422``,
    ``e2ap``, not ``E2``), and acronyms of three capitals or more (``RMR``, ``DBAAS``); not words joined by
    one or two hyphens (``near-RT``, ``subscription-based``), though ``service-ricplt-dbaas-tcp`` is a name."""
    out: list[str] = []
    for match in _COMPOUND.finditer(text):
        raw = match.group(0)
        parts = raw.split("-")
        if len(parts) in (2, 3) and all(p.isalpha() for p in parts) and not any(_HUMP.search(p) for p in parts):
            continue  # hyphenated words (near-RT, re-send, subscription-based) are prose, not names
        if (
            "_" in raw
            or _HUMP.search(raw)
            or _SEGMENT_SPLIT.search(raw)
            or _ATOM_SPLIT.search(raw)
            or (len(raw) >= 3 and any(c.isdigit() for c in raw))
            or (len(raw) >= 3 and raw.isupper())
        ):
            out.append(raw.lower())
    return list(dict.fromkeys(out))


def document_text(text: str, heading: str) -> str:
    """What the BM25 index sees of a chunk: its heading path, then its text (as the embedder sees it)."""
    return f"{heading}\n{text}" if heading else text


@dataclass(frozen=True)
class LexicalHit:
    id: str
    score: float  # BM25 score (bm25s "lucene" variant); only comparable within one query
    text: str
    source: str
    heading: str
    exact: int = 0  # how many of the query's rare identifiers (see LexicalIndex.search) the chunk contains


@dataclass
class _Doc:
    tokens: list[str]
    text: str
    source: str
    heading: str


@dataclass(frozen=True)
class BuildStats:
    chunks: int
    tokenized: int  # chunks fetched and tokenised by this build (the rest came from the cache)
    seconds: float


class LexicalIndex:
    """BM25 over a Chroma collection's chunks, rebuilt when the collection's fingerprint changes.

    Thread-safe: searches share one lock with the refresh, so a rebuild is seen whole or not at all.
    """

    def __init__(
        self, collection: Any | Callable[[], Any], k1: float = 1.2, b: float = 0.75, stem: bool = True
    ) -> None:
        # A collection, or a function returning the current one (a knowledge base swaps in a fresh client
        # when another process wrote to an embedded store).
        self._get_collection: Callable[[], Any] = collection if callable(collection) else (lambda: collection)
        self._k1 = k1
        self._b = b
        self._stem = stem
        self._lock = threading.Lock()
        self._fingerprint: tuple[int, str | None] | None = None
        self._docs: dict[str, _Doc] = {}
        self._ids: list[str] = []
        self._bm25: Any = None
        self._df: dict[str, int] = {}  # chunks holding each token
        self.last_build: BuildStats | None = None

    @property
    def collection(self) -> Any:
        return self._get_collection()

    @property
    def stem(self) -> bool:
        return self._stem

    # ---- consistency -----------------------------------------------------------------------------
    def fingerprint(self) -> tuple[int, str | None]:
        """(count, id of the newest record): changes with every add, delete or new upsert."""
        collection = self._get_collection()
        count = int(collection.count())
        if count == 0:
            return (0, None)
        newest = collection.get(offset=count - 1, limit=1, include=[])["ids"]
        return (count, str(newest[0]) if newest else None)

    def refresh(self) -> bool:
        """Bring the index up to date with the collection; returns whether it was rebuilt."""
        with self._lock:
            return self._refresh_locked()

    def _refresh_locked(self) -> bool:
        collection = self._get_collection()
        fingerprint = self.fingerprint()
        if fingerprint == self._fingerprint:
            return False
        t0 = time.perf_counter()
        ids = [str(i) for i in collection.get(include=[])["ids"]] if fingerprint[0] else []
        missing = [i for i in ids if i not in self._docs]
        for start in range(0, len(missing), _FETCH_BATCH):
            batch = missing[start : start + _FETCH_BATCH]
            got = collection.get(ids=batch, include=["documents", "metadatas"])
            for pid, doc, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True):
                meta = meta or {}
                text, heading = doc or "", str(meta.get("heading", ""))
                self._docs[str(pid)] = _Doc(
                    tokenize(document_text(text, heading), self._stem), text, str(meta.get("source", "")), heading
                )
        present = set(ids)
        for gone in [i for i in self._docs if i not in present]:
            del self._docs[gone]
        ids = [i for i in ids if i in self._docs]  # written between the listing and the fetch: next refresh
        self._ids = ids
        self._bm25 = self._build([self._docs[i].tokens for i in ids]) if ids else None
        df: dict[str, int] = {}
        for i in ids:
            for token in set(self._docs[i].tokens):
                df[token] = df.get(token, 0) + 1
        self._df = df
        self._fingerprint = fingerprint
        self.last_build = BuildStats(len(ids), len(missing), time.perf_counter() - t0)
        return True

    def _build(self, corpus_tokens: Sequence[list[str]]) -> Any:
        import bm25s

        bm25 = bm25s.BM25(k1=self._k1, b=self._b, method="lucene")
        # A chunk with no token at all still needs a row; "" is bm25s's own empty token.
        bm25.index([tokens or [""] for tokens in corpus_tokens], show_progress=False)
        return bm25

    # ---- reading ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._ids)

    def search(self, text: str, n: int, rare_df: float = 0.02) -> list[LexicalHit]:
        """The ``n`` best BM25 matches for ``text`` (fewer when fewer chunks share a token with it).

        Each hit's ``exact`` counts the query's rare identifiers it contains: :func:`identifiers` of the
        query held by at most ``rare_df`` of the chunks (and by at least one).
        """
        with self._lock:
            self._refresh_locked()
            if self._bm25 is None or n <= 0:
                return []
            query_ids = self._bm25.get_tokens_ids(_unique(tokenize(text, self._stem)))
            if not query_ids:
                return []
            scores = np.asarray(self._bm25.get_scores(query_ids), dtype=np.float64)
            n = min(n, len(scores))
            top = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
            top = top[np.lexsort((top, -scores[top]))]  # best first, ties in index order
            limit = max(1.0, rare_df * len(self._ids))
            rare = [t for t in identifiers(text) if 0 < self._df.get(t, 0) <= limit]
            hits: list[LexicalHit] = []
            for i in top:
                if scores[i] <= 0.0:
                    break
                pid = self._ids[int(i)]
                doc = self._docs[pid]
                exact = 0
                if rare:
                    held = set(doc.tokens)
                    exact = sum(1 for t in rare if t in held)
                hits.append(LexicalHit(pid, float(scores[i]), doc.text, doc.source, doc.heading, exact))
            return hits


def _unique(tokens: Iterable[str]) -> list[str]:
    """Query tokens once each: a repeated query word should not count twice."""
    return list(dict.fromkeys(tokens))


def reciprocal_rank_fusion(rankings: Sequence[Sequence[str]], k: float = 60.0) -> dict[str, float]:
    """RRF (Cormack et al., 2009): each id scores the sum over rankings of 1 / (k + rank), ranks from 1."""
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, pid in enumerate(ranking, start=1):
            fused[pid] = fused.get(pid, 0.0) + 1.0 / (k + rank)
    return fused


@dataclass(frozen=True)
class HybridSettings:
    """How :meth:`KnowledgeBase.query` fuses the two searches (tuned on bench/data/oran_sc_eval.jsonl)."""

    dense_n: int = 20  # dense candidates taken into the fusion (at least k)
    lexical_n: int = 10  # BM25 candidates taken into the fusion
    rrf_k: float = 60.0  # RRF's rank offset: larger flattens the advantage of the very first ranks
    exact_slots: int = 1  # first places kept for BM25 hits holding a rare identifier the query names
    rare_df: float = 0.02  # "rare": in at most this share of the chunks


def fuse(dense: Sequence[str], hits: Sequence[LexicalHit], settings: HybridSettings, k: int) -> list[str]:
    """The ids of the hybrid top ``k``: the dense ranking (best first) and the BM25 hits fused by RRF, ties
    to the better dense rank; then up to ``exact_slots`` hits that contain a rare identifier of the query
    (most such identifiers first, then BM25 order) move to the front. A question naming ``36422`` or
    ``RIC_SUB_DEL_REQ`` gets the chunk that holds it first even when prose about the same subject wins both
    rankings' sums."""
    dense = list(dense[: max(k, settings.dense_n)])
    hits = list(hits[: settings.lexical_n])
    fused = reciprocal_rank_fusion([dense, [h.id for h in hits]], k=settings.rrf_k)
    dense_rank = {pid: r for r, pid in enumerate(dense)}
    order = sorted(fused, key=lambda pid: (-fused[pid], dense_rank.get(pid, len(dense_rank))))
    if settings.exact_slots > 0:
        exact = sorted((h for h in hits if h.exact > 0), key=lambda h: -h.exact)  # stable: BM25 order
        front = [h.id for h in exact[: settings.exact_slots]]
        order = front + [pid for pid in order if pid not in front]
    return order[:k]
