"""Managed sources: which documents a knowledge base holds, which files a folder offers, and their hashes.

A *source* is one document, named ``LIBRARY/PATH``: the library is the name of the folder that was ingested
(``argo-kb`` for the built-in knowledge base), the path is the file's path below it. Each source has a record
(content hash, chunk count, when ingested, complete or not) in a small companion Chroma collection, so the
embedded and the server Chroma keep their catalogue in the same place as the chunks.
"""

from __future__ import annotations

import fnmatch
import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xapp.store.chunking import CHUNKER_VERSION, SUPPORTED_SUFFIXES

# Files that are in documentation trees but answer no question: licences, commit stamps, ownership lists,
# and folders of build output. `ingest --no-default-excludes` turns these off; `--exclude` adds more.
DEFAULT_EXCLUDES: tuple[str, ...] = (
    "LICENSE*",
    "LICENCE*",
    "COPYING*",
    "NOTICE*",
    "SOURCE_COMMIT*",
    "AUTHORS*",
    "CONTRIBUTORS*",
    "CODEOWNERS*",
    "CODE_OF_CONDUCT*",
    "node_modules",
    "_build",
    "__pycache__",
)

GENERATION_ID = "__generation__"


def content_hash(data: bytes) -> str:
    """The document's identity for re-ingestion; includes the chunker version, so a new chunker re-reads."""
    return hashlib.sha256(CHUNKER_VERSION.encode() + b"\x00" + data).hexdigest()


def is_excluded(rel: str, patterns: Sequence[str]) -> bool:
    """``rel`` is a POSIX path below the ingested folder. A pattern with a slash matches the whole path; one
    without matches the file name or any folder on the way (``_build`` excludes everything below it). Case is
    ignored, so ``LICENSE*`` also takes ``license.txt``."""
    rel_l = rel.lower()
    parts = rel_l.split("/")
    for pattern in patterns:
        p = pattern.lower().strip("/")
        if not p:
            continue
        if "/" in p:
            if fnmatch.fnmatchcase(rel_l, p) or fnmatch.fnmatchcase(rel_l, p + "/*"):
                return True
        elif any(fnmatch.fnmatchcase(part, p) for part in parts):
            return True
    return False


@dataclass(frozen=True)
class Discovery:
    files: list[Path]
    excluded: list[Path]


def discover(root: Path, exclude: Sequence[str] = (), default_excludes: bool = True) -> Discovery:
    """Supported files under root (or root itself), in a stable order so runs are reproducible; hidden files
    and folders are never taken."""
    if not root.exists():
        raise FileNotFoundError(f"no such file or folder: {root}")
    if root.is_file():
        if root.suffix.lower() not in SUPPORTED_SUFFIXES:
            raise ValueError(f"{root}: unsupported file type (supported: {', '.join(SUPPORTED_SUFFIXES)})")
        return Discovery([root], [])
    patterns = [*(DEFAULT_EXCLUDES if default_excludes else ()), *exclude]
    files: list[Path] = []
    excluded: list[Path] = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in SUPPORTED_SUFFIXES:
            continue
        rel = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        (excluded if is_excluded(rel, patterns) else files).append(path)
    return Discovery(files, excluded)


def iter_documents(root: Path, exclude: Sequence[str] = (), default_excludes: bool = True) -> Iterable[Path]:
    yield from discover(root, exclude, default_excludes).files


def matches_source(source: str, pattern: str) -> bool:
    """``kb remove`` patterns: a source name, a glob (``lib/*.pdf``) or a library (``lib``: all of it)."""
    pattern = pattern.rstrip("/")
    return source == pattern or fnmatch.fnmatchcase(source, pattern) or source.startswith(pattern + "/")


@dataclass(frozen=True)
class SourceRecord:
    source: str
    library: str
    sha256: str
    chunks: int
    ingested_at: float  # epoch seconds of the ingestion that stored this content
    complete: bool  # False while its chunks are being replaced (a run killed there leaves it False)
    format: str
    size: int

    def to_metadata(self) -> dict[str, Any]:
        return {
            "kind": "source",
            "source": self.source,
            "library": self.library,
            "sha256": self.sha256,
            "chunks": self.chunks,
            "ingested_at": self.ingested_at,
            "complete": self.complete,
            "format": self.format,
            "size": self.size,
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> SourceRecord:
        return cls(
            source=str(meta["source"]),
            library=str(meta.get("library", "")),
            sha256=str(meta.get("sha256", "")),
            chunks=int(meta.get("chunks", 0)),
            ingested_at=float(meta.get("ingested_at", 0.0)),
            complete=bool(meta.get("complete", False)),
            format=str(meta.get("format", "")),
            size=int(meta.get("size", 0)),
        )


@dataclass(frozen=True)
class SourceInfo:
    """What ``kb list`` shows: the record joined with the chunks actually stored."""

    source: str
    chunks: int  # chunks in the collection now
    status: str  # "ok", "incomplete" (an ingestion was interrupted), "unmanaged" (chunks without a record)
    ingested_at: float | None
    sha256: str
    format: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "chunks": self.chunks,
            "status": self.status,
            "ingested_at": (
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.ingested_at)) if self.ingested_at else None
            ),
            "sha256": self.sha256,
            "format": self.format,
            "bytes": self.size,
        }
