"""Section-aware chunking of specification formats: Markdown, reStructuredText, plain text, HTML, PDF and DOCX.

Every reader turns a document into :class:`Section` s (heading path, body, page where known); chunking packs
each section's paragraphs into chunks that never cross a section boundary. A table becomes its own section,
one row a paragraph with every cell next to its column header ("Field: value; Range: 0..255"), so a cell
can be retrieved by what it says. Chunk ids are content hashes of (source, heading, text[, page]): the same
text in the same place of the same source is the same chunk, so ingesting it twice stores it once.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

SUPPORTED_SUFFIXES = (".md", ".markdown", ".rst", ".txt", ".html", ".htm", ".pdf", ".docx")
MAX_CHARS = 1200  # about 250 MiniLM tokens: the model truncates at 256
MIN_CHARS = 40  # shorter fragments (stray headings, link lists) carry no answer
# Part of every document's content hash: a change to how documents are read or chunked makes the next
# ingestion re-read every source instead of trusting chunks made the old way.
CHUNKER_VERSION = "2"


class DocumentError(ValueError):
    """A file that cannot be read as the format its suffix says (corrupt PDF, not a DOCX zip, ...)."""


@dataclass(frozen=True)
class Section:
    path: tuple[str, ...]  # heading path, outermost first
    body: str
    page: int | None = None  # 1-based page, where the format has pages
    table: bool = False  # rows of a table: short rows are kept (a cell is an answer)


@dataclass(frozen=True)
class Chunk:
    id: str
    text: str
    source: str
    heading: str
    index: int  # position within its source
    page: int | None = None

    @property
    def metadata(self) -> dict[str, str | int]:
        meta: dict[str, str | int] = {"source": self.source, "heading": self.heading, "index": self.index}
        if self.page is not None:
            meta["page"] = self.page
        return meta


# ---- Markdown and reStructuredText ------------------------------------------------------------------------

_MD_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+<>:.])\1{2,}\s*$")


def _sections_markdown(text: str) -> list[Section]:
    sections: list[Section] = []
    path: list[str] = []
    body: list[str] = []
    in_code = False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            in_code = not in_code
        match = None if in_code else _MD_HEADING.match(line)
        if match:
            sections.append(Section(tuple(path), "\n".join(body)))
            body = []
            level = len(match.group(1))
            path = path[: level - 1] + [match.group(2).strip()]
        else:
            body.append(line)
    sections.append(Section(tuple(path), "\n".join(body)))
    return sections


def _sections_rst(text: str) -> list[Section]:
    lines = text.splitlines()
    sections: list[Section] = []
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
            sections.append(Section(tuple(path), "\n".join(body)))
            body = []
            path = path[:depth] + [line.strip()]
            i += 2
            continue
        if _RST_UNDERLINE.match(line) and nxt.strip() and i + 2 < len(lines) and lines[i + 2] == line:
            i += 1  # overline-style title: the title line comes next, handled above
            continue
        body.append(line)
        i += 1
    sections.append(Section(tuple(path), "\n".join(body)))
    return sections


# ---- tables (DOCX and HTML) -------------------------------------------------------------------------------


def _table_body(rows: list[list[str]]) -> str:
    """One paragraph per row, each cell with its column header; a one-row table is its cells."""
    rows = [row for row in ([" ".join(c.split()) for c in r] for r in rows) if any(row)]
    if not rows:
        return ""
    if len(rows) == 1:
        return "; ".join(c for c in rows[0] if c)
    header, lines = rows[0], []
    for row in rows[1:]:
        cells = [
            f"{header[i]}: {cell}" if i < len(header) and header[i] and header[i] != cell else cell
            for i, cell in enumerate(row)
            if cell
        ]
        lines.append("; ".join(cells))
    return "\n\n".join(lines)


def _dedupe_merged(cells: list[str]) -> list[str]:
    """python-docx repeats a horizontally merged cell once per grid column; keep one."""
    out: list[str] = []
    for cell in cells:
        if not out or cell != out[-1]:
            out.append(cell)
    return out


# ---- DOCX ---------------------------------------------------------------------------------------------------

_DOCX_HEADING = re.compile(r"^(?:heading|überschrift|titre)\s*(\d)$", re.IGNORECASE)


def _docx_heading_level(style_name: str) -> int | None:
    name = style_name.strip()
    if name.lower() == "title":
        return 1
    match = _DOCX_HEADING.match(name)
    return int(match.group(1)) if match else None


def _sections_docx(path: Path) -> list[Section]:
    try:
        import docx
        from docx.table import Table
        from docx.text.paragraph import Paragraph

        document = docx.Document(str(path))
    except Exception as exc:  # PackageNotFoundError, BadZipFile, KeyError on a broken package
        raise DocumentError(f"not a readable .docx file: {exc}") from exc
    sections: list[Section] = []
    heading_path: list[str] = []
    body: list[str] = []
    table_no = 0

    def flush() -> None:
        if body:
            sections.append(Section(tuple(heading_path), "\n\n".join(body)))
            body.clear()

    for block in document.iter_inner_content():
        if isinstance(block, Paragraph):
            text = block.text.strip()
            if not text:
                continue
            level = _docx_heading_level(block.style.name if block.style is not None else "")
            if level is not None:
                flush()
                heading_path[:] = heading_path[: level - 1] + [text]
            else:
                body.append(text)
        elif isinstance(block, Table):
            flush()
            table_no += 1
            rows = [_dedupe_merged([cell.text for cell in row.cells]) for row in block.rows]
            table = _table_body(rows)
            if table:
                sections.append(Section((*heading_path, f"Table {table_no}"), table, table=True))
    flush()
    return sections


# ---- HTML -----------------------------------------------------------------------------------------------------


class _HTMLSections(HTMLParser):
    _SKIP = {"script", "style", "nav", "noscript", "template", "svg", "head"}
    _BLOCK = {"p", "div", "li", "ul", "ol", "section", "article", "br", "pre", "blockquote", "dd", "dt", "hr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[Section] = []
        self.path: list[str] = []
        self.body: list[str] = []
        self.skip = 0
        self.heading: tuple[int, list[str]] | None = None
        self.rows: list[list[str]] | None = None
        self.cell: list[str] | None = None
        self.tables = 0

    def _flush(self) -> None:
        text = "".join(self.body)
        if text.strip():
            self.sections.append(Section(tuple(self.path), text))
        self.body = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self.skip += 1
        elif self.skip:
            return
        elif len(tag) == 2 and tag[0] == "h" and tag[1] in "123456":
            self._flush()
            self.heading = (int(tag[1]), [])
        elif tag == "table":
            self._flush()
            self.rows = []
        elif tag == "tr" and self.rows is not None:
            self.rows.append([])
        elif tag in ("td", "th") and self.rows is not None:
            self.cell = []
        elif tag in self._BLOCK:
            self.body.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self.skip = max(0, self.skip - 1)
        elif self.skip:
            return
        elif self.heading is not None and tag == f"h{self.heading[0]}":
            level, words = self.heading
            self.heading = None
            self.path = self.path[: level - 1] + [" ".join("".join(words).split())]
        elif tag in ("td", "th") and self.cell is not None and self.rows is not None:
            if not self.rows:
                self.rows.append([])
            self.rows[-1].append("".join(self.cell))
            self.cell = None
        elif tag == "table" and self.rows is not None:
            self.tables += 1
            table = _table_body(self.rows)
            if table:
                self.sections.append(Section((*self.path, f"Table {self.tables}"), table, table=True))
            self.rows = None
        elif tag in self._BLOCK:
            self.body.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if self.heading is not None:
            self.heading[1].append(data)
        elif self.cell is not None:
            self.cell.append(data)
        elif self.rows is None:
            self.body.append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def _sections_html(text: str) -> list[Section]:
    parser = _HTMLSections()
    parser.feed(text)
    parser.close()
    return [
        Section(s.path, re.sub(r"[ \t\r\f\v]*\n[ \t\r\f\v]*", "\n", s.body), s.page, s.table) for s in parser.sections
    ]


# ---- PDF ------------------------------------------------------------------------------------------------------

# A numbered specification heading: "5.2.1 E2 Setup procedure". Not a table-of-contents line ("... 12"), not a
# sentence (no final period), short, first number at most 3 digits.
_PDF_HEADING = re.compile(r"^(\d{1,3}(?:\.\d{1,3}){0,5})\.?\s+([A-Z][^\n]{1,90})$")
_TOC_TAIL = re.compile(r"(\.{2,}|…)\s*\d+\s*$")


def _pdf_heading(line: str) -> tuple[int, str] | None:
    match = _PDF_HEADING.match(line.strip())
    if not match or line.rstrip().endswith((".", ",", ";", ":")) or _TOC_TAIL.search(line):
        return None
    return match.group(1).count(".") + 1, f"{match.group(1)} {match.group(2).strip()}"


def _pdf_pages(path: Path) -> list[str]:
    try:
        from pypdf import PdfReader

        return [page.extract_text() or "" for page in PdfReader(str(path)).pages]
    except Exception as exc:  # pypdf.errors.PdfReadError and friends
        raise DocumentError(f"not a readable .pdf file: {exc}") from exc


def _sections_pdf(pages: list[str]) -> list[Section]:
    """Per page, so chunks know their page; numbered headings carry across pages. Running headers and footers
    (a line, digits aside, on more than half of three or more pages) are dropped."""
    norm = lambda line: re.sub(r"\d+", "#", line.strip())  # noqa: E731
    repeated: set[str] = set()
    if len(pages) >= 3:
        seen: Counter[str] = Counter()
        for page in pages:
            lines = [line for line in page.splitlines() if line.strip()]
            seen.update({norm(line) for line in lines[:2] + lines[-2:] if len(line) <= 100})
        repeated = {n for n, c in seen.items() if c > len(pages) / 2}
    sections: list[Section] = []
    path: list[str] = []
    for number, page in enumerate(pages, start=1):
        body: list[str] = []
        lines = [line for line in page.splitlines() if line.strip()]
        for i, line in enumerate(lines):
            heading = _pdf_heading(line)
            if heading is None and (i < 2 or i >= len(lines) - 2) and norm(line) in repeated:
                continue
            if heading is not None:
                if body:
                    sections.append(Section(tuple(path), "\n".join(body), number))
                    body = []
                level, title = heading
                path = path[: level - 1] + [title]
            else:
                body.append(line)
        if body:
            sections.append(Section(tuple(path), "\n".join(body), number))
    return sections


# ---- chunking -------------------------------------------------------------------------------------------------


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
        for sentence in re.split(r"(?<=[.!?;])\s+", para):
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


def chunk_id(source: str, heading: str, text: str, page: int | None = None) -> str:
    key = f"{source}\x00{heading}\x00{text}" + (f"\x00{page}" if page is not None else "")
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def chunk_sections(sections: list[Section], source: str, max_chars: int = MAX_CHARS) -> list[Chunk]:
    chunks: list[Chunk] = []
    for section in sections:
        heading = " > ".join(section.path)
        for piece in _split(_clean(section.body), max_chars):
            if len(piece) < (1 if section.table else MIN_CHARS):
                continue
            chunks.append(
                Chunk(chunk_id(source, heading, piece, section.page), piece, source, heading, len(chunks), section.page)
            )
    return chunks


def text_sections(text: str, suffix: str) -> list[Section]:
    suffix = suffix.lower()
    if suffix in (".md", ".markdown"):
        return _sections_markdown(text)
    if suffix == ".rst":
        return _sections_rst(text)
    if suffix in (".html", ".htm"):
        return _sections_html(text)
    return [Section((), text)]


def read_sections(path: Path) -> list[Section]:
    suffix = path.suffix.lower()
    if suffix == ".docx":
        return _sections_docx(path)
    if suffix == ".pdf":
        return _sections_pdf(_pdf_pages(path))
    return text_sections(path.read_text(encoding="utf-8", errors="replace"), suffix)


def read_text(path: Path) -> str:
    """The document's text, sections joined (headings included): for inspection and tests."""
    parts: list[str] = []
    for section in read_sections(path):
        if section.path:
            parts.append(section.path[-1])
        parts.append(section.body)
    return "\n\n".join(parts)


def chunk_text(text: str, source: str, suffix: str, max_chars: int = MAX_CHARS) -> list[Chunk]:
    return chunk_sections(text_sections(text, suffix), source, max_chars)


def chunk_file(path: Path, source: str, max_chars: int = MAX_CHARS) -> list[Chunk]:
    return chunk_sections(read_sections(path), source, max_chars)
