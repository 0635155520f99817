"""Specification formats: .docx (headings, tables), multi-page .pdf (pages, numbered clauses, running headers),
.html, read by the real libraries from files built here, chunked section by section and retrievable."""

from __future__ import annotations

from pathlib import Path

import pytest
from kb_support import write_docx, write_pdf

from xapp.config import Settings
from xapp.store.chunking import SUPPORTED_SUFFIXES, DocumentError, chunk_file
from xapp.store.knowledge_base import KnowledgeBase

TABLE = [
    ["IE/Group Name", "Presence", "Range", "Semantics description"],
    ["RIC Request ID", "M", "0..65535", "Identifies the subscription request of the xApp"],
    ["RAN Function ID", "M", "0..4095", "Identifies the service model function of the E2 node"],
    ["RIC Action Type", "M", "report, insert, policy", "Kind of action the E2 node performs"],
]


def _docx(tmp_path: Path) -> Path:
    return write_docx(
        tmp_path / "lib" / "E2AP.docx",
        "E2 Application Protocol",
        [
            ("RIC Subscription procedure", "The near-RT RIC sends a RIC SUBSCRIPTION REQUEST to the E2 node."),
            ("RIC Indication procedure", "The E2 node reports with RIC INDICATION messages to the subscriber."),
        ],
        TABLE,
    )


def test_docx_headings_and_table_become_section_chunks(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    chunks = chunk_file(_docx(tmp_path), "lib/E2AP.docx")
    by_heading = {c.heading: c.text for c in chunks}
    assert by_heading["E2 Application Protocol > RIC Subscription procedure"].startswith("The near-RT RIC sends")
    table = by_heading["E2 Application Protocol > RIC Subscription procedure > Table 1"]
    # Every cell is there, beside its column header, one row per paragraph.
    assert "IE/Group Name: RAN Function ID; Presence: M; Range: 0..4095" in table
    assert all(cell in table for row in TABLE[1:] for cell in row)
    assert by_heading["E2 Application Protocol > RIC Indication procedure"].startswith("The E2 node reports")
    assert all(c.page is None for c in chunks)  # Word does not know its pages


def test_docx_table_cells_are_retrievable(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    _docx(tmp_path)
    kb = KnowledgeBase.open(Settings(data_dir=tmp_path / "data"))
    report = kb.ingest(tmp_path / "lib", show_progress=False)
    assert report.files == 1 and report.added == 3
    passages = kb.query("What is the range of the RAN Function ID information element?", 1)
    assert passages[0].source == "lib/E2AP.docx"
    assert passages[0].heading.endswith("> Table 1") and "0..4095" in passages[0].text


def test_pdf_pages_clauses_and_running_headers(tmp_path: Path) -> None:
    pages = [
        [("1 Scope", "This document specifies the A1 interface between the non-RT RIC and the near-RT RIC. " * 3)],
        [
            ("2 Procedures", "The A1 policy management service creates, updates and deletes policies. " * 3),
            ("2.1 Policy creation", "A policy of type 20008 carries the QoS target of a slice. " * 3),
        ],
        [("2.2 Policy deletion", "The non-RT RIC deletes a policy instance by its identifier. " * 3)],
        [("3 Enrichment information", "EI jobs deliver enrichment data to consumers in the near-RT RIC. " * 3)],
    ]
    path = write_pdf(tmp_path / "A1AP.pdf", "O-RAN.WG2.A1AP-v03.01 Technical Specification", pages)
    chunks = chunk_file(path, "specs/A1AP.pdf")
    got = {(c.page, c.heading) for c in chunks}
    assert got == {
        (1, "1 Scope"),
        (2, "2 Procedures"),
        (2, "2 Procedures > 2.1 Policy creation"),
        (3, "2 Procedures > 2.2 Policy deletion"),
        (4, "3 Enrichment information"),
    }
    text = " ".join(c.text for c in chunks)
    assert "type 20008" in text
    assert "Technical Specification" not in text and "Copyright" not in text  # header and footer dropped
    assert all(c.metadata["page"] == c.page for c in chunks)
    # The same text on another page is another chunk (its page is part of its identity).
    assert len({c.id for c in chunks}) == len(chunks)


def test_html_headings_and_tables(tmp_path: Path) -> None:
    path = tmp_path / "guide.html"
    path.write_text(
        "<html><head><title>t</title><style>p {color: red}</style><script>var x = 1;</script></head><body>"
        "<nav>Home | Docs</nav><h1>A1 mediator</h1><p>The A1 mediator receives A1 policies from the non-RT RIC.</p>"
        "<h2>Policy types</h2><table><tr><th>Type</th><th>ID</th></tr><tr><td>QoS target</td><td>20008</td></tr>"
        "</table><p>Policy types are registered by xApps when they start.</p></body></html>",
        encoding="utf-8",
    )
    chunks = chunk_file(path, "site/guide.html")
    assert [(c.heading, c.text) for c in chunks] == [
        ("A1 mediator", "The A1 mediator receives A1 policies from the non-RT RIC."),
        ("A1 mediator > Policy types > Table 1", "Type: QoS target; ID: 20008"),
        ("A1 mediator > Policy types", "Policy types are registered by xApps when they start."),
    ]


@pytest.mark.parametrize("suffix", [".docx", ".pdf"])
def test_a_broken_file_is_a_document_error(tmp_path: Path, suffix: str) -> None:
    assert suffix in SUPPORTED_SUFFIXES
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"this is not a real document")
    with pytest.raises(DocumentError):
        chunk_file(path, "x")
