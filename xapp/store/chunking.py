"""Section-aware chunking of Markdown, reStructuredText, plain text and PDF documents.

A chunk never crosses a section boundary, carries the heading path of its section ("Overview > E2 setup")
and the source path, and has an id derived from its content, so ingesting the same files twice adds nothing.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

SUPPORTED_SUFFIXES = (".md", ".markdown", ".rst", ".txt", ".pdf")
MAX_CHARS = 1200  # about 250 MiniLM tokens: the model truncates at 256
MIN_CHARS = 40  # shorter fragments (stray headings, link lists) carry no answer


@dataclass(frozen=True)
class Chunk:
    id: str
    text: str
    source: str
    heading: str
    index: int  # position within its source

    @property
    def metadata(self) -> dict[str, str | int]:
        return {"source": self.source, "heading": self.heading, "index": self.index}


_MD_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+<>:.])\1{2,}\s*$")


def _sections_markdown(text: str) -> list[tuple[list[str], str]]:
    sections: list[tuple[list[str], str]] = []
    path: list[str] = []
    body: list[str] = []
    in_code = False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            in_code = not in_code
        match = None if in_code else _MD_HEADING.match(line)
        if match:
            sections.append((list(path), "\n".join(body)))
            body = []
            level = len(match.group(1))
            path = path[: level - 1] + [match.group(2).strip()]
        else:
            body.append(line)
    sections.append((list(path), "\n".join(body)))
    return sections


def _sections_rst(text: str) -> list[tuple[list[str], str]]:
    lines = text.splitlines()
    sections: list[tuple[list[str], str]] = []
    path: list[str] = []
    levels: list[str] = []  # underline characters in order of first appearance = heading depth
    body: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and _RST_UNDERLINE.match(nxt) and len(nxt.strip()) >= len(line.strip()) - 1:
            char = nxt.strip()[0]
            if char not in levels:
                levels.append(char)
            depth = levels.index(char)
            sections.append((list(path), "\n".join(body)))
            body = []
            path = path[:depth] + [line.strip()]
            i += 2
            continue
        if _RST_UNDERLINE.match(line) and nxt.strip() and i + 2 < len(lines) and lines[i + 2] == line:
            i += 1  # overline-style title: the title line comes next, handled above
            continue
        body.append(line)
        i += 1
    sections.append((list(path), "\n".join(body)))
    return sections


def _clean(text: str) -> str:
    text = re.sub(r"\.\. [a-zA-Z-]+::.*", "", text)  # rst directives carry no prose
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def _split(body: str, max_chars: int) -> list[str]:
    """Paragraph-packing split; a paragraph longer than max_chars is split at sentence ends."""
    pieces: list[str] = []
    for para in re.split(r"\n\s*\n", body):
        para = para.strip()
        if not para:
            continue
        if len(para) <= max_chars:
            pieces.append(para)
            continue
        sentence_buf = ""
        for sentence in re.split(r"(?<=[.!?])\s+", para):
            if sentence_buf and len(sentence_buf) + len(sentence) + 1 > max_chars:
                pieces.append(sentence_buf)
                sentence_buf = ""
            sentence_buf = f"{sentence_buf} {sentence}".strip()
            while len(sentence_buf) > max_chars:  # one enormous "sentence" (tables, code)
                pieces.append(sentence_buf[:max_chars])
                sentence_buf = sentence_buf[max_chars:]
        if sentence_buf:
            pieces.append(sentence_buf)
    chunks: list[str] = []
    buf = ""
    for piece in pieces:
        if buf and len(buf) + len(piece) + 2 > max_chars:
            chunks.append(buf)
            buf = ""
        buf = f"{buf}\n\n{piece}" if buf else piece
    if buf:
        chunks.append(buf)
    return chunks


def chunk_id(source: str, heading: str, text: str) -> str:
    return hashlib.sha256(f"{source}\x00{heading}\x00{text}".encode()).hexdigest()[:32]


def read_text(path: Path) -> str:
    if path.suffix.lower() == ".pdf":
        from pypdf import PdfReader

        return "\n\n".join(page.extract_text() or "" for page in PdfReader(str(path)).pages)
    return path.read_text(encoding="utf-8", errors="replace")


def chunk_text(text: str, source: str, suffix: str, max_chars: int = MAX_CHARS) -> list[Chunk]:
    suffix = suffix.lower()
    if suffix in (".md", ".markdown"):
        sections = _sections_markdown(text)
    elif suffix == ".rst":
        sections = _sections_rst(text)
    else:
        sections = [([], text)]
    chunks: list[Chunk] = []
    for path, body in sections:
        heading = " > ".join(path)
        for piece in _split(_clean(body), max_chars):
            if len(piece) < MIN_CHARS:
                continue
            chunks.append(Chunk(chunk_id(source, heading, piece), piece, source, heading, len(chunks)))
    return chunks


def chunk_file(path: Path, source: str, max_chars: int = MAX_CHARS) -> list[Chunk]:
    return chunk_text(read_text(path), source, path.suffix, max_chars)
