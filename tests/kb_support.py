"""Helpers for the knowledge-base tests (tests/test_kb_*.py): a real ``chroma run`` server on a free port,
copies of the session's built-in knowledge base (so a test does not embed it again), and real .docx/.pdf
files built at test time."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from xapp.config import Settings

CHROMA = Path(sys.executable).with_name("chroma")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def copy_builtin(builtin_settings: Settings, dest: Path) -> Settings:
    """A data dir holding a copy of the session's ingested built-in knowledge base (complete records
    included): ``ensure_builtin`` there is a no-op instead of a 30-second embedding."""
    shutil.copytree(builtin_settings.chroma_dir, dest / "chroma")
    return Settings(data_dir=dest, llm=False)


@contextlib.contextmanager
def chroma_server(path: Path, timeout: float = 60.0) -> Iterator[int]:
    """``chroma run`` over ``path`` on a free port of 127.0.0.1; yields the port once it answers heartbeats."""
    with chroma_process(path, free_port(), timeout) as (port, _proc):
        yield port


@contextlib.contextmanager
def chroma_process(path: Path, port: int, timeout: float = 60.0) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``chroma run`` over ``path`` on ``port`` of 127.0.0.1; yields (port, process) once it answers heartbeats
    (the process for tests that stop and continue it)."""
    log = (path.parent / f"chroma-{port}.log").open("wb")
    proc = subprocess.Popen(
        [str(CHROMA), "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"chroma run exited with {proc.returncode}: {Path(log.name).read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("chroma run did not answer its heartbeat")
            time.sleep(0.2)
        yield port, proc
    finally:
        proc.send_signal(signal.SIGCONT)  # a test may have stopped it
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def write_docx(path: Path, title: str, sections: Sequence[tuple[str, str]], table: Sequence[Sequence[str]]) -> Path:
    """A Word document: a title heading, then (heading 2, paragraph) sections; the table goes after the first."""
    import docx

    document = docx.Document()
    document.add_heading(title, level=1)
    for i, (heading, text) in enumerate(sections):
        document.add_heading(heading, level=2)
        document.add_paragraph(text)
        if i == 0 and table:
            t = document.add_table(rows=len(table), cols=len(table[0]))
            for r, row in enumerate(table):
                for c, value in enumerate(row):
                    t.cell(r, c).text = value
    document.save(str(path))
    return path


def write_pdf(path: Path, header: str, pages: Sequence[Sequence[tuple[str, str]]]) -> Path:
    """A specification-like PDF: every page starts with the same running header and ends with a page
    footer; each page holds numbered clauses (heading, body text)."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_auto_page_break(auto=False)
    for number, clauses in enumerate(pages, start=1):
        pdf.add_page()
        pdf.set_font("Helvetica", size=9)
        pdf.cell(0, 6, header, new_x="LMARGIN", new_y="NEXT")
        for heading, body in clauses:
            pdf.set_font("Helvetica", style="B", size=12)
            pdf.cell(0, 8, heading, new_x="LMARGIN", new_y="NEXT")
            pdf.set_font("Helvetica", size=11)
            pdf.multi_cell(0, 6, body, new_x="LMARGIN", new_y="NEXT")
        pdf.set_y(-20)
        pdf.set_font("Helvetica", size=9)
        pdf.cell(0, 6, f"Copyright O-RAN Test Alliance. Page {number}", new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))
    return path
