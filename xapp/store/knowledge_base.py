"""The knowledge base: a Chroma collection of O-RAN text chunks embedded offline with MiniLM.

Embedded ``PersistentClient`` under the data directory by default; ``HttpClient`` to a ``chroma run`` server
when ``chroma_mode`` is ``http``. Chroma is synchronous; async callers run ``query`` in a thread.

Sources are managed (see :mod:`xapp.store.sources`): ingesting a document again replaces its chunks, a
document gone from an ingested folder is removed, an unchanged one is not even read again. The built-in
knowledge base is ingested the same way and repaired whenever it is not complete (a first ingestion killed
midway, a package upgrade that changed it).

Seeing other processes' writes: a server Chroma answers every client from one index, so a running xApp sees
what ``argo-xapp ingest`` wrote at once. An embedded ``PersistentClient`` keeps its vector index in memory and
does *not* see another process's writes (measured with chromadb 1.5: ``get`` sees new ids, ``count`` and
``query`` do not, deletions stay visible). Every write therefore bumps a generation record; a knowledge base
checks it at most once a second, off the query path, and re-opens its client when it changed.
"""

from __future__ import annotations

import atexit
import contextlib
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xapp.config import Settings
from xapp.domain import Passage
from xapp.errors import ConfigError, StoreUnavailable
from xapp.store.chunking import Chunk, chunk_file
from xapp.store.embedding import BATCH_SIZE, MiniLMEmbedder
from xapp.store.lexical import HybridSettings, LexicalIndex, fuse
from xapp.store.sources import (
    GENERATION_ID,
    SourceInfo,
    SourceRecord,
    content_hash,
    discover,
    iter_documents,
    matches_source,
)

BUILTIN_KB_DIR = Path(__file__).resolve().parent / "kb"
BUILTIN_LIBRARY = "argo-kb"
BUILTIN_SOURCE_PREFIX = BUILTIN_LIBRARY + "/"
REFRESH_INTERVAL_S = 1.0  # how often a knowledge base looks for other processes' writes
# Longest one HTTP call to a Chroma server may take before its thread gives up (chromadb's own client waits
# forever: a hung server held threads for good). Far above a query (~25 ms) and an ingestion batch; callers
# bound their own waits much tighter (store_timeout_ms), this only frees the thread.
HTTP_TIMEOUT_S = 30.0
_PAGE = 1000  # ids per get/delete call (below every Chroma backend's batch limit)

__all__ = ["BUILTIN_KB_DIR", "BUILTIN_SOURCE_PREFIX", "IngestReport", "KnowledgeBase", "iter_documents"]


@dataclass
class IngestReport:
    files: int = 0  # documents found (after exclusions)
    skipped_files: int = 0  # unreadable ones (their earlier chunks, if any, are kept)
    excluded_files: int = 0
    unchanged: int = 0  # same content hash as stored: not read again
    updated: int = 0  # new or changed sources whose chunks were (re)written
    removed_sources: int = 0  # sources no longer in the folder
    chunks: int = 0  # chunks of the updated sources
    added: int = 0  # of those, embedded and stored now
    already_present: int = 0  # of those, stored before (same text in the same place)
    removed: int = 0  # chunks deleted: stale parts of changed sources and removed sources
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"ingested {self.files} files ({self.updated} new or changed, {self.unchanged} unchanged, "
            f"{self.skipped_files} skipped, {self.excluded_files} excluded, {self.removed_sources} removed): "
            f"{self.chunks} chunks, {self.added} added, {self.already_present} already present, "
            f"{self.removed} removed in {self.seconds:.1f} s"
        )


def _chroma_settings(token_file: str = "") -> Any:
    from chromadb.config import Settings as ChromaSettings

    if not token_file:
        return ChromaSettings(anonymized_telemetry=False)
    # A Chroma server with token auth (the chart's: CHROMA_SERVER_AUTHN_PROVIDER): "Authorization: Bearer".
    try:
        token = Path(token_file).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"chroma_token_file: cannot read {token_file}: {exc.strerror or exc}") from None
    if not token:
        raise ConfigError(f"chroma_token_file: {token_file} is empty")
    return ChromaSettings(
        anonymized_telemetry=False,
        chroma_client_auth_provider="chromadb.auth.token_authn.TokenAuthClientProvider",
        chroma_client_auth_credentials=token,
    )


def _open_client(settings: Settings) -> Any:
    import chromadb

    if settings.chroma_mode == "http":
        try:
            client = chromadb.HttpClient(
                host=settings.chroma_host,
                port=settings.chroma_port,
                settings=_chroma_settings(settings.chroma_token_file),
            )
        except ConfigError:
            raise
        except Exception as exc:  # chromadb raises bare ValueError/ConnectionError variants
            raise StoreUnavailable(
                f"cannot reach Chroma at {settings.chroma_host}:{settings.chroma_port}: {exc}"
            ) from exc
        _bound_http_calls(client)
        return client
    settings.chroma_dir.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(settings.chroma_dir), settings=_chroma_settings())


def _bound_http_calls(client: Any) -> None:
    """Give chromadb's HTTP session (an ``httpx.Client`` created with ``timeout=None``) a timeout; chromadb has
    no setting for it. Best effort: a chromadb without this attribute keeps its own behaviour."""
    session = getattr(getattr(client, "_server", None), "_session", None)
    if session is not None and hasattr(session, "timeout"):
        import httpx

        session.timeout = httpx.Timeout(HTTP_TIMEOUT_S)


def _reopen_embedded(path: Path) -> Any:
    """A fresh PersistentClient that reads what other processes wrote. chromadb caches one System per path
    and would hand the stale one back; drop it from the cache (clients still holding it keep working)."""
    import chromadb
    from chromadb.api.shared_system_client import SharedSystemClient

    with SharedSystemClient._refcount_lock:
        SharedSystemClient._identifier_to_system.pop(str(path), None)
        SharedSystemClient._identifier_to_refcount.pop(str(path), None)
    return chromadb.PersistentClient(path=str(path), settings=_chroma_settings())


# Refresh checks in flight. A daemon thread still inside chromadb's Rust bindings while the interpreter
# finalises crashes the process (SIGSEGV at the exit of `argo-xapp ingest`, 2 runs in 8 before this): at exit,
# no new check starts and the running ones are waited for (a few ms; at most 10 s for a hung Chroma server).
_checks: weakref.WeakSet[threading.Thread] = weakref.WeakSet()
_exiting = threading.Event()


@atexit.register
def _join_checks() -> None:
    _exiting.set()
    for thread in list(_checks):
        thread.join(timeout=10.0)


class KnowledgeBase:
    def __init__(
        self,
        client: Any,
        collection_name: str,
        embedder: MiniLMEmbedder,
        reopen: Callable[[], Any] | None = None,
        mode: str = "embedded",
    ) -> None:
        self._client = client
        self._embedder = embedder
        self._reopen = reopen  # embedded: a fresh client that sees other processes' writes
        self.collection_name = collection_name
        self.mode = mode
        self._col, self._sources = self._open_collections(client)
        self._generation = self._read_generation()
        self._checked_at = time.monotonic()
        self._refresh_lock = threading.Lock()
        # BM25 over the same chunks, rebuilt from the current collection when its fingerprint changes.
        self.lexical = LexicalIndex(lambda: self._collection)
        self.hybrid: HybridSettings | None = HybridSettings()

    @classmethod
    def open(cls, settings: Settings, embedder: MiniLMEmbedder | None = None) -> KnowledgeBase:
        reopen = None
        if settings.chroma_mode != "http":
            path = settings.chroma_dir
            reopen = lambda: _reopen_embedded(path)  # noqa: E731
        return cls(
            _open_client(settings), settings.collection, embedder or MiniLMEmbedder(), reopen, settings.chroma_mode
        )

    def _open_collections(self, client: Any) -> tuple[Any, Any]:
        # Vectors come from our own embedder; Chroma's default one would try a download.
        chunks = client.get_or_create_collection(
            name=self.collection_name, metadata={"hnsw:space": "cosine"}, embedding_function=None
        )
        sources = client.get_or_create_collection(name=f"{self.collection_name}.sources", embedding_function=None)
        return chunks, sources

    @property
    def _collection(self) -> Any:
        """The chunk collection for reading; looks (at most once a second, in the background) whether another
        process changed the store, and swaps in a fresh view when it did."""
        self._maybe_check()
        return self._col

    @property
    def embedder(self) -> MiniLMEmbedder:
        return self._embedder

    def count(self) -> int:
        return int(self._collection.count())

    def ids(self) -> set[str]:
        return set(self._collection.get(include=[])["ids"])

    def check(self) -> None:
        """The store answers a trivial request (heartbeat, count) or ``StoreUnavailable`` says what failed."""
        try:
            self._client.heartbeat()
            self._collection.count()
        except Exception as exc:
            raise StoreUnavailable(f"Chroma ping failed: {exc}") from exc

    def ping(self) -> bool:
        """Honest health: the store answers a trivial request."""
        try:
            self.check()
            return True
        except StoreUnavailable:
            return False

    # ---- seeing other processes' writes ---------------------------------------------------------------
    def _read_generation(self) -> str | None:
        try:
            got = self._sources.get(ids=[GENERATION_ID], include=["metadatas"])
        except Exception:
            return None  # a collection deleted by another process's reset: refresh will re-open it
        metas = got.get("metadatas") or []
        return str(metas[0].get("value")) if metas and metas[0] else ""

    def _bump_generation(self) -> None:
        value = uuid.uuid4().hex
        self._sources.upsert(
            ids=[GENERATION_ID], embeddings=[[1.0]], metadatas=[{"kind": "generation", "value": value}]
        )
        self._generation = value

    def _maybe_check(self) -> None:
        now = time.monotonic()
        if _exiting.is_set() or now - self._checked_at < REFRESH_INTERVAL_S:
            return
        if not self._refresh_lock.acquire(blocking=False):
            return
        self._checked_at = now

        def check() -> None:
            try:
                self._refresh_if_changed()
            except Exception as exc:  # the store is down: queries will say so; try again next interval
                print(f"knowledge base refresh failed: {exc}", file=sys.stderr)
            finally:
                self._refresh_lock.release()

        thread = threading.Thread(target=check, name="kb-refresh", daemon=True)
        _checks.add(thread)
        thread.start()

    def _refresh_if_changed(self) -> bool:
        generation = self._read_generation()
        if generation is not None and generation == self._generation:
            return False
        self._do_refresh()
        return True

    def refresh(self) -> bool:
        """Look now whether another process changed the store; re-open if so. True when it had changed."""
        with self._refresh_lock:
            self._checked_at = time.monotonic()
            return self._refresh_if_changed()

    def _do_refresh(self) -> None:
        client = self._reopen() if self._reopen is not None else self._client
        chunks, sources = self._open_collections(client)
        self._client, self._col, self._sources = client, chunks, sources
        self._generation = self._read_generation()

    # ---- reading ---------------------------------------------------------------------------------
    def query(self, text: str, k: int) -> list[Passage]:
        """The ``k`` passages that best match ``text``: dense MiniLM search and BM25 fused by rank.

        The dense top ``hybrid.dense_n`` and the BM25 top ``hybrid.lexical_n`` (see :mod:`xapp.store.lexical`)
        are fused by reciprocal rank fusion, with the first places kept for chunks that hold a rare identifier
        the query names (:func:`xapp.store.lexical.fuse`); the list comes in that order, best first. Each passage's
        ``score`` stays the cosine similarity of the query with the passage's stored embedding (so a
        BM25-only hit scores as the embedder sees it: the order, not the score, carries the fusion), and
        ``vector`` holds that embedding. ``hybrid = None`` gives the dense search alone.
        """
        if k <= 0:
            return []
        hybrid = self.hybrid
        try:
            collection = self._collection
            vector = self._embedder.embed([text])[0]
            result = collection.query(
                query_embeddings=[vector.tolist()],
                n_results=max(k, hybrid.dense_n) if hybrid else k,
                include=["documents", "metadatas", "distances", "embeddings"],
            )
            hits = self.lexical.search(text, hybrid.lexical_n, hybrid.rare_df) if hybrid else []
        except Exception as exc:
            raise StoreUnavailable(f"Chroma query failed: {exc}") from exc
        dense: dict[str, Passage] = {}
        embeddings = result.get("embeddings")
        vectors = embeddings[0] if embeddings is not None else [None] * len(result["ids"][0])
        for pid, doc, meta, dist, vec in zip(
            result["ids"][0],
            result["documents"][0],
            result["metadatas"][0],
            result["distances"][0],
            vectors,
            strict=True,
        ):
            meta = meta or {}
            dense[pid] = Passage(
                id=pid,
                text=doc or "",
                source=str(meta.get("source", "")),
                heading=str(meta.get("heading", "")),
                score=1.0 - float(dist),
                vector=tuple(float(x) for x in vec) if vec is not None else None,
            )
        if not hybrid:
            return list(dense.values())[:k]
        order = fuse(list(dense), hits, hybrid, k)
        lexical = {h.id: h for h in hits}
        missing = [pid for pid in order if pid not in dense]
        stored: dict[str, Any] = {}
        if missing:  # BM25-only hits: their stored embeddings, for the score and the option scorer
            try:
                got = collection.get(ids=missing, include=["embeddings"])
            except Exception as exc:
                raise StoreUnavailable(f"Chroma get failed: {exc}") from exc
            stored = dict(zip(got["ids"], got["embeddings"], strict=True))
        passages: list[Passage] = []
        for pid in order:
            if pid in dense:
                passages.append(dense[pid])
                continue
            hit, vec = lexical[pid], stored.get(pid)
            if vec is None:
                continue  # deleted since the BM25 index was built: not in the store any more
            passages.append(
                Passage(
                    id=pid,
                    text=hit.text,
                    source=hit.source,
                    heading=hit.heading,
                    score=float(np.dot(vector, np.asarray(vec, dtype=np.float32))),
                    vector=tuple(float(x) for x in vec),
                )
            )
        return passages

    # ---- the catalogue --------------------------------------------------------------------------------
    def records(self, library: str | None = None) -> dict[str, SourceRecord]:
        where: dict[str, Any] = {"kind": "source"}
        if library is not None:
            where = {"$and": [{"kind": "source"}, {"library": library}]}
        got = self._sources.get(where=where, include=["metadatas"])
        return {
            rec.source: rec for rec in (SourceRecord.from_metadata(dict(m)) for m in got.get("metadatas") or [] if m)
        }

    def _write_records(self, records: Sequence[SourceRecord]) -> None:
        for start in range(0, len(records), _PAGE):
            page = records[start : start + _PAGE]
            self._sources.upsert(
                ids=[r.source for r in page], embeddings=[[1.0]] * len(page), metadatas=[r.to_metadata() for r in page]
            )

    def _chunk_sources(self) -> dict[str, int]:
        """Chunks per source, counted in the collection itself (what is really there)."""
        counts: dict[str, int] = {}
        offset = 0
        while True:
            got = self._col.get(include=["metadatas"], limit=_PAGE, offset=offset)
            metas = got.get("metadatas") or []
            for meta in metas:
                source = str((meta or {}).get("source", ""))
                counts[source] = counts.get(source, 0) + 1
            if len(got["ids"]) < _PAGE:
                return counts
            offset += _PAGE

    def sources(self) -> list[SourceInfo]:
        """Every source: its record joined with the chunks stored for it, sorted by name."""
        counts = self._chunk_sources()
        records = self.records()
        infos: list[SourceInfo] = []
        for name in sorted(set(counts) | set(records)):
            rec = records.get(name)
            if rec is None:
                infos.append(SourceInfo(name, counts[name], "unmanaged", None, "", Path(name).suffix.lower(), 0))
                continue
            status = "ok" if rec.complete and counts.get(name, 0) == rec.chunks else "incomplete"
            infos.append(
                SourceInfo(name, counts.get(name, 0), status, rec.ingested_at, rec.sha256, rec.format, rec.size)
            )
        return infos

    def stats(self) -> dict[str, Any]:
        infos = self.sources()
        libraries: dict[str, dict[str, int]] = {}
        formats: dict[str, int] = {}
        for info in infos:
            lib = libraries.setdefault(info.source.split("/", 1)[0], {"sources": 0, "chunks": 0})
            lib["sources"] += 1
            lib["chunks"] += info.chunks
            formats[info.format or "?"] = formats.get(info.format or "?", 0) + 1
        return {
            "collection": self.collection_name,
            "mode": self.mode,
            "embedder": self._embedder.name,
            "chunks": self._col.count(),
            "sources": len(infos),
            "incomplete": sum(1 for i in infos if i.status == "incomplete"),
            "unmanaged": sum(1 for i in infos if i.status == "unmanaged"),
            "bytes": sum(i.size for i in infos),
            "libraries": libraries,
            "formats": formats,
        }

    # ---- writing ---------------------------------------------------------------------------------
    def _ids_of(self, source: str) -> list[str]:
        return list(self._col.get(where={"source": source}, include=[])["ids"])

    def _delete_ids(self, ids: Sequence[str]) -> None:
        for start in range(0, len(ids), _PAGE):
            page = list(ids[start : start + _PAGE])
            self._col.delete(ids=page)

    def _remove_source(self, source: str) -> int:
        ids = self._ids_of(source)
        self._delete_ids(ids)
        self._sources.delete(ids=[source])
        return len(ids)

    def remove_sources(self, patterns: Sequence[str]) -> dict[str, int]:
        """Remove the sources matching each pattern (a name, a glob or a library); returns chunks removed per
        source. A pattern that matches nothing raises ``KeyError`` before anything is removed."""
        known = set(self.records()) | set(self._chunk_sources())
        matched: dict[str, None] = {}
        for pattern in patterns:
            hits = sorted(s for s in known if matches_source(s, pattern))
            if not hits:
                raise KeyError(pattern)
            matched.update(dict.fromkeys(hits))
        removed = {source: self._remove_source(source) for source in matched}
        if removed:
            self._bump_generation()
        return removed

    def reset(self) -> None:
        """Drop every chunk and record. The built-in knowledge base comes back on the next start."""
        for name in (self.collection_name, f"{self.collection_name}.sources"):
            with contextlib.suppress(Exception):  # not there (another process reset first)
                self._client.delete_collection(name)
        self._col, self._sources = self._open_collections(self._client)
        self._bump_generation()

    def add_chunks(self, chunks: Sequence[Chunk], batch_size: int = BATCH_SIZE, progress: Any = None) -> int:
        """Embed and store the chunks not yet present; returns how many were added. Chunks already stored get
        their metadata (position, page) refreshed without being embedded again.

        Each batch is written in one call with content-hash ids, so a run killed midway leaves only whole
        chunks behind and the next run adds exactly the rest.
        """
        added = 0
        for start in range(0, len(chunks), batch_size):
            added += self._add_batch(chunks[start : start + batch_size], batch_size)
            if progress is not None:
                progress.update(len(chunks[start : start + batch_size]))
        return added

    def _add_batch(self, batch: Sequence[Chunk], batch_size: int) -> int:
        unique = list({c.id: c for c in batch}.values())
        present = set(self._col.get(ids=[c.id for c in unique], include=[])["ids"])
        fresh = [c for c in unique if c.id not in present]
        kept = [c for c in unique if c.id in present]
        if kept:
            self._col.update(ids=[c.id for c in kept], metadatas=[c.metadata for c in kept])
        if fresh:
            # The heading gives a chunk that starts mid-section its subject back.
            vectors = self._embedder.embed(
                [f"{c.heading}: {c.text}" if c.heading else c.text for c in fresh], batch_size=batch_size
            )
            self._col.upsert(
                ids=[c.id for c in fresh],
                documents=[c.text for c in fresh],
                metadatas=[c.metadata for c in fresh],
                embeddings=vectors.tolist(),
            )
        return len(fresh)

    def ingest(
        self,
        root: Path,
        source_prefix: str = "",
        batch_size: int = BATCH_SIZE,
        show_progress: bool = True,
        *,
        exclude: Sequence[str] = (),
        default_excludes: bool = True,
        library: str | None = None,
    ) -> IngestReport:
        """Ingest a file or every supported file below a folder, replacing what each source held before.

        Sources are named ``LIBRARY/PATH``: the library is ``library``, else the folder's name (a single file:
        its folder's name, so it replaces the same source a folder ingestion made). A folder's ingestion also
        removes the sources of its library whose files are gone or now excluded. ``source_prefix`` (older
        callers) names the library ``source_prefix`` without its slash.
        """
        from tqdm import tqdm

        t0 = time.monotonic()
        root = root.resolve()
        found = discover(root, exclude, default_excludes)
        is_dir = root.is_dir()
        base = root if is_dir else root.parent
        if library is None:
            library = source_prefix.rstrip("/") or base.name or "docs"
        builtin = library == BUILTIN_LIBRARY
        desc = f" {BUILTIN_LIBRARY}" if builtin else ""
        report = IngestReport(files=len(found.files), excluded_files=len(found.excluded))
        records = self.records(library)
        current: set[str] = set()
        todo: list[tuple[SourceRecord, list[Chunk]]] = []
        with tqdm(
            total=len(found.files), unit="file", desc=f"reading{desc}", disable=not show_progress, file=sys.stderr
        ) as bar:
            for path in found.files:
                source = f"{library}/{path.relative_to(base).as_posix()}"
                current.add(source)
                try:
                    data = path.read_bytes()
                    digest = content_hash(data)
                    old = records.get(source)
                    if old is not None and old.complete and old.sha256 == digest:
                        report.unchanged += 1
                        continue
                    chunks = chunk_file(path, source)
                except (OSError, UnicodeError, ValueError) as exc:
                    bar.write(f"skipping {path}: {exc}", file=sys.stderr)
                    report.skipped_files += 1
                    continue
                finally:
                    bar.update(1)
                record = SourceRecord(
                    source,
                    library,
                    digest,
                    len({c.id for c in chunks}),
                    time.time(),
                    False,
                    path.suffix.lower(),
                    len(data),
                )
                todo.append((record, chunks))
        gone = sorted(set(records) - current) if is_dir else []

        # Mark the sources about to change as incomplete first: a run killed from here on leaves them so, and
        # the next run (or start, for the built-in ones) redoes them.
        self._write_records([record for record, _ in todo])
        report.updated = len(todo)
        report.chunks = sum(record.chunks for record, _ in todo)
        total = sum(len(chunks) for _, chunks in todo)
        with tqdm(
            total=total, unit="chunk", desc=f"embedding{desc}", disable=not show_progress, file=sys.stderr
        ) as bar:
            pending: list[tuple[SourceRecord, list[Chunk], set[str]]] = []
            batch: list[Chunk] = []
            for record, chunks in todo:
                pending.append((record, chunks, set(self._ids_of(record.source))))
                for chunk in chunks:
                    batch.append(chunk)
                    if len(batch) >= batch_size:
                        report.added += self._add_batch(batch, batch_size)
                        bar.update(len(batch))
                        batch = []
                        report.removed += self._finish_sources(pending[:-1])
                        pending = pending[-1:]
            if batch:
                report.added += self._add_batch(batch, batch_size)
                bar.update(len(batch))
            report.removed += self._finish_sources(pending)
        report.already_present = report.chunks - report.added
        for source in gone:
            report.removed += self._remove_source(source)
        report.removed_sources = len(gone)
        if todo or gone:
            self._bump_generation()
        report.seconds = time.monotonic() - t0
        return report

    def _finish_sources(self, done: Sequence[tuple[SourceRecord, list[Chunk], set[str]]]) -> int:
        """Every chunk of these sources is stored: delete what they held before and mark them complete."""
        removed = 0
        finished: list[SourceRecord] = []
        for record, chunks, before in done:
            stale = sorted(before - {c.id for c in chunks})
            self._delete_ids(stale)
            removed += len(stale)
            finished.append(
                SourceRecord(
                    record.source,
                    record.library,
                    record.sha256,
                    record.chunks,
                    time.time(),
                    True,
                    record.format,
                    record.size,
                )
            )
        self._write_records(finished)
        return removed

    def ensure_builtin(self, show_progress: bool = False) -> IngestReport | None:
        """The O-RAN knowledge base shipped with the package, by content hash like any library: ingested on
        first use, and repaired on every start where it is not complete (a first ingestion killed midway, a
        source removed, a package upgrade that changed a file). None when it was already complete."""
        records = self.records(BUILTIN_LIBRARY)
        expected = {
            BUILTIN_SOURCE_PREFIX + path.relative_to(BUILTIN_KB_DIR).as_posix(): content_hash(path.read_bytes())
            for path in discover(BUILTIN_KB_DIR, default_excludes=False).files
        }
        if {s: r.sha256 for s, r in records.items() if r.complete} == expected:
            return None
        from xapp.telemetry.logging import notice

        started = time.monotonic()
        notice(
            "preparing the built-in knowledge base (once per data directory; under a minute on 2 cores)",
            files=len(expected),
        )
        report = self.ingest(
            BUILTIN_KB_DIR, library=BUILTIN_LIBRARY, default_excludes=False, show_progress=show_progress
        )
        notice("built-in knowledge base ready", chunks=self.count(), seconds=round(time.monotonic() - started, 1))
        return report
