"""Knowledge base: section-aware chunking, content-hash ids, idempotent and kill-safe ingestion, queries."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kb_support import copy_builtin

from xapp.config import Settings
from xapp.store.chunking import chunk_text
from xapp.store.knowledge_base import KnowledgeBase

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "oran-sc-docs"
CORPUS = SHARED / "ric-plt-a1"


def test_markdown_chunks_keep_heading_path_and_stable_ids() -> None:
    text = "# A1 mediator\nIntro paragraph about the A1 mediator component.\n\n## Policy types\n" + (
        " ".join(
            f"Policy type {i} is a JSON schema that the near-RT RIC registers with the A1 mediator." for i in range(30)
        )
    )
    chunks = chunk_text(text, "docs/a1.md", ".md", max_chars=400)
    assert chunks[0].heading == "A1 mediator"
    assert all(c.heading == "A1 mediator > Policy types" for c in chunks[1:])
    assert all(len(c.text) <= 400 for c in chunks)
    assert [c.id for c in chunks] == [c.id for c in chunk_text(text, "docs/a1.md", ".md", max_chars=400)]
    assert len({c.id for c in chunks}) == len(chunks)
    # The same text in the same section is the same chunk: ingesting it twice stores it once.
    assert (
        chunk_text("## S\n" + "Same words about E2 here. " * 3, "a.md", ".md")[0].id
        == chunk_text("## S\n" + "Same words about E2 here. " * 3, "a.md", ".md")[0].id
    )


def test_rst_sections_follow_underline_levels() -> None:
    text = (
        "Title\n=====\n\nIntro text about the routing manager here.\n\n"
        "Sub\n---\n\nDetails about RMR routes and the routing manager tables."
    )
    chunks = chunk_text(text, "x.rst", ".rst")
    assert [c.heading for c in chunks] == ["Title", "Title > Sub"]


def test_builtin_kb_answers_oran_queries(builtin_kb: KnowledgeBase) -> None:
    assert builtin_kb.count() > 100
    passages = builtin_kb.query("What does the E2 termination in the near-RT RIC do?", 4)
    assert len(passages) == 4
    assert all(-1.0 <= p.score <= 1.0 for p in passages)  # cosine; the order is the hybrid fusion's (lexical.fuse)
    assert all(p.source.startswith("argo-kb/") for p in passages)
    assert any("E2" in p.text for p in passages)


def test_reingesting_the_same_folder_adds_nothing(builtin_kb_settings: Settings, tmp_path: Path) -> None:
    kb = KnowledgeBase.open(copy_builtin(builtin_kb_settings, tmp_path / "data"))
    assert kb.ensure_builtin() is None  # complete: nothing to do on start
    first = kb.ingest(CORPUS, show_progress=False)
    ids, count = kb.ids(), kb.count()
    second = kb.ingest(CORPUS, show_progress=False)
    assert first.added == first.chunks > 0 and first.updated == first.files > 0
    assert second.added == 0 and second.updated == 0 and second.unchanged == first.files
    assert kb.ids() == ids and kb.count() == count


def _ingest_cmd(data_dir: Path) -> list[str]:
    return [sys.executable, "-m", "xapp", "ingest", str(CORPUS), "--data-dir", str(data_dir), "--batch-size", "4"]


@pytest.mark.slow
def test_ingestion_killed_midway_then_rerun_equals_one_clean_run(builtin_kb_settings: Settings, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    killed_dir, clean_dir = tmp_path / "killed", tmp_path / "clean"
    # Give both runs the built-in knowledge base first, so the kill lands in the corpus ingestion.
    for d in (killed_dir, clean_dir):
        copy_builtin(builtin_kb_settings, d)
    proc = subprocess.Popen(
        _ingest_cmd(killed_dir), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True, bufsize=1
    )
    progress = re.compile(r"embedding:\s+\d+%.*?\|\s*(\d+)/(\d+)")
    buf = ""
    assert proc.stderr is not None
    deadline = time.monotonic() + 300
    done = 0
    while time.monotonic() < deadline:
        ch = proc.stderr.read(1)
        if not ch:
            break
        buf += ch
        matches = list(progress.finditer(buf[-200:]))
        match = matches[-1] if matches else None
        if match and 8 <= int(match.group(1)) < int(match.group(2)):
            done = int(match.group(1))
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert done > 0, f"never saw ingestion progress: {buf[-500:]}"
    partial = KnowledgeBase.open(Settings(data_dir=killed_dir))
    builtin = KnowledgeBase.open(Settings(data_dir=clean_dir)).count()
    assert builtin < partial.count(), "the killed run stored none of its batches"

    subprocess.run(_ingest_cmd(killed_dir), check=True, capture_output=True, env=env)
    subprocess.run(_ingest_cmd(clean_dir), check=True, capture_output=True, env=env)
    a, b = KnowledgeBase.open(Settings(data_dir=killed_dir)), KnowledgeBase.open(Settings(data_dir=clean_dir))
    assert a.ids() == b.ids()
    assert a.count() == b.count() > builtin
