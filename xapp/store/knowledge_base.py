"""The knowledge base: a Chroma collection of O-RAN text chunks embedded offline with MiniLM.

Embedded ``PersistentClient`` under the data directory by default; ``HttpClient`` to a ``chroma run`` server
when ``chroma_mode`` is ``http``. Chroma is synchronous; async callers run ``query`` in a thread.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xapp.config import Settings
from xapp.domain import Passage
from xapp.errors import StoreUnavailable
from xapp.store.chunking import SUPPORTED_SUFFIXES, Chunk, chunk_file
from xapp.store.embedding import BATCH_SIZE, MiniLMEmbedder

BUILTIN_KB_DIR = Path(__file__).resolve().parent / "kb"
BUILTIN_SOURCE_PREFIX = "argo-kb/"


@dataclass
class IngestReport:
    files: int = 0
    skipped_files: int = 0
    chunks: int = 0
    added: int = 0
    already_present: int = 0

    def summary(self) -> str:
        return (
            f"ingested {self.files} files ({self.skipped_files} skipped): {self.chunks} chunks, "
            f"{self.added} added, {self.already_present} already present"
        )


def _open_client(settings: Settings) -> Any:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if settings.chroma_mode == "http":
        try:
            return chromadb.HttpClient(
                host=settings.chroma_host, port=settings.chroma_port, settings=chroma_settings
            )
        except Exception as exc:  # chromadb raises bare ValueError/ConnectionError variants
            raise StoreUnavailable(
                f"cannot reach Chroma at {settings.chroma_host}:{settings.chroma_port}: {exc}"
            ) from exc
    settings.chroma_dir.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(settings.chroma_dir), settings=chroma_settings)


class KnowledgeBase:
    def __init__(self, client: Any, collection_name: str, embedder: MiniLMEmbedder) -> None:
        self._client = client
        self._embedder = embedder
        self.collection_name = collection_name
        # Vectors come from our own embedder; Chroma's default one would try a download.
        self._collection = client.get_or_create_collection(
            name=collection_name, metadata={"hnsw:space": "cosine"}, embedding_function=None
        )

    @classmethod
    def open(cls, settings: Settings, embedder: MiniLMEmbedder | None = None) -> KnowledgeBase:
        return cls(_open_client(settings), settings.collection, embedder or MiniLMEmbedder())

    @property
    def embedder(self) -> MiniLMEmbedder:
        return self._embedder

    def count(self) -> int:
        return int(self._collection.count())

    def ids(self) -> set[str]:
        return set(self._collection.get(include=[])["ids"])

    def ping(self) -> bool:
        """Honest health: the store answers a trivial request."""
        try:
            self._client.heartbeat()
            self._collection.count()
            return True
        except Exception:
            return False

    # ---- reading ---------------------------------------------------------------------------------
    def query(self, text: str, k: int) -> list[Passage]:
        try:
            vector = self._embedder.embed([text])[0]
            result = self._collection.query(
                query_embeddings=[vector.tolist()],
                n_results=k,
                include=["documents", "metadatas", "distances", "embeddings"],
            )
        except Exception as exc:
            raise StoreUnavailable(f"Chroma query failed: {exc}") from exc
        passages: list[Passage] = []
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
            passages.append(
                Passage(
                    id=pid,
                    text=doc or "",
                    source=str(meta.get("source", "")),
                    heading=str(meta.get("heading", "")),
                    score=1.0 - float(dist),
                    vector=tuple(float(x) for x in vec) if vec is not None else None,
                )
            )
        return passages

    # ---- writing ---------------------------------------------------------------------------------
    def add_chunks(self, chunks: Sequence[Chunk], batch_size: int = BATCH_SIZE, progress: Any = None) -> int:
        """Embed and store the chunks not yet present; returns how many were added.

        Each batch is written in one call with content-hash ids, so a run killed midway leaves only whole
        chunks behind and the next run adds exactly the rest.
        """
        unique: dict[str, Chunk] = {}
        for chunk in chunks:
            unique.setdefault(chunk.id, chunk)
        todo = list(unique.values())
        added = 0
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            present = set(self._collection.get(ids=[c.id for c in batch], include=[])["ids"])
            fresh = [c for c in batch if c.id not in present]
            if fresh:
                # The heading gives a chunk that starts mid-section its subject back.
                vectors = self._embedder.embed(
                    [f"{c.heading}: {c.text}" if c.heading else c.text for c in fresh], batch_size=batch_size
                )
                self._collection.upsert(
                    ids=[c.id for c in fresh],
                    documents=[c.text for c in fresh],
                    metadatas=[c.metadata for c in fresh],
                    embeddings=vectors.tolist(),
                )
                added += len(fresh)
            if progress is not None:
                progress.update(len(batch))
        return added

    def ingest(
        self, root: Path, source_prefix: str = "", batch_size: int = BATCH_SIZE, show_progress: bool = True
    ) -> IngestReport:
        """Ingest a file or every supported file below a folder; sources are paths relative to ``root``."""
        from tqdm import tqdm

        root = root.resolve()
        files = list(iter_documents(root))
        report = IngestReport()
        chunks: list[Chunk] = []
        for path in files:
            rel = path.name if root.is_file() else path.relative_to(root).as_posix()
            try:
                file_chunks = chunk_file(path, source_prefix + rel)
            except (OSError, UnicodeError, ValueError) as exc:
                print(f"skipping {path}: {exc}", file=sys.stderr)
                report.skipped_files += 1
                continue
            report.files += 1
            chunks.extend(file_chunks)
        unique_ids = {c.id for c in chunks}
        report.chunks = len(unique_ids)
        with tqdm(
            total=len(chunks), unit="chunk", desc="embedding", disable=not show_progress, file=sys.stderr
        ) as bar:
            report.added = self.add_chunks(chunks, batch_size=batch_size, progress=bar)
        report.already_present = report.chunks - report.added
        return report

    def ensure_builtin(self, show_progress: bool = False) -> IngestReport | None:
        """First use: an empty collection gets the O-RAN knowledge base shipped with the package."""
        if self.count() > 0:
            return None
        return self.ingest(BUILTIN_KB_DIR, source_prefix=BUILTIN_SOURCE_PREFIX, show_progress=show_progress)


def iter_documents(root: Path) -> Iterable[Path]:
    """Supported files under root (or root itself), in a stable order so runs are reproducible."""
    if not root.exists():
        raise FileNotFoundError(f"no such file or folder: {root}")
    if root.is_file():
        if root.suffix.lower() not in SUPPORTED_SUFFIXES:
            raise ValueError(f"{root}: unsupported file type (supported: {', '.join(SUPPORTED_SUFFIXES)})")
        yield root
        return
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in SUPPORTED_SUFFIXES and not path.name.startswith("."):
            yield path
