"""Managed sources through the real CLI: re-ingesting replaces, a deleted file goes, an unchanged folder adds
nothing, default and explicit exclusions, kb list/remove/reset/stats; on the embedded Chroma and on a real
``chroma run`` server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kb_support import chroma_server, copy_builtin, write_docx

from xapp.cli import main
from xapp.config import Settings, load_settings
from xapp.store.knowledge_base import BUILTIN_SOURCE_PREFIX, KnowledgeBase

A_OLD = "# Lab policies\n\nThe A1 policy type id used for traffic steering in this lab is 31337, set by the operator.\n"
A_NEW = "# Lab policies\n\nThe A1 policy type id used for traffic steering in this lab is 4242, set by the operator.\n"


def _library(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "a.md").write_text(A_OLD, encoding="utf-8")
    (root / "b.rst").write_text(
        "E2 timers\n=========\n\nThe E2 setup procedure in this lab times out after 4711 milliseconds.\n",
        encoding="utf-8",
    )
    (root / "sub").mkdir()
    (root / "sub" / "c.txt").write_text("The lab's near-RT RIC runs the KPI monitor xApp on node kpi-7.\n")
    write_docx(
        root / "sub" / "d.docx",
        "Lab E2 nodes",
        [("Cells", "Every gNB of the lab serves three cells in band n78.")],
        [["gNB", "PLMN"], ["gnb-alpha", "001-01"]],
    )
    (root / "LICENSE.txt").write_text("Apache License 2.0, which says nothing about O-RAN at all.\n")
    (root / "SOURCE_COMMIT.txt").write_text("commit 0123456789abcdef0123456789abcdef01234567\n")
    return root


@pytest.fixture(params=["embedded", "http"])
def data_dir(
    request: pytest.FixtureRequest, builtin_kb_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """A data dir with the built-in knowledge base already in it; for "http" served by ``chroma run``."""
    data = tmp_path / "data"
    copy_builtin(builtin_kb_settings, data)
    if request.param == "http":
        with chroma_server(data / "chroma") as port:
            monkeypatch.setenv("ARGO_CHROMA_MODE", "http")
            monkeypatch.setenv("ARGO_CHROMA_HOST", "127.0.0.1")
            monkeypatch.setenv("ARGO_CHROMA_PORT", str(port))
            yield data
    else:
        yield data


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _listing(capsys: pytest.CaptureFixture[str], data: Path) -> dict[str, Any]:
    rc, out, _ = _cli(capsys, "kb", "list", "--json", "--data-dir", str(data))
    assert rc == 0
    return {item["source"]: item for item in json.loads(out)}


def _user_sources(listing: dict[str, Any]) -> set[str]:
    return {s for s in listing if not s.startswith(BUILTIN_SOURCE_PREFIX)}


def test_reingest_replaces_changed_removes_deleted_and_adds_nothing_when_unchanged(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lib = _library(tmp_path / "lab-specs")
    kb = KnowledgeBase.open(load_settings({"data_dir": data_dir}))
    builtin_ids = kb.ids()

    rc, out, _ = _cli(capsys, "ingest", str(lib), "--data-dir", str(data_dir), "--no-progress")
    assert rc == 0 and "4 new or changed" in out and "2 excluded" in out
    listing = _listing(capsys, data_dir)
    assert _user_sources(listing) == {
        "lab-specs/a.md",
        "lab-specs/b.rst",
        "lab-specs/sub/c.txt",
        "lab-specs/sub/d.docx",
    }
    assert all(item["status"] == "ok" and item["chunks"] >= 1 and item["ingested_at"] for item in listing.values())

    (lib / "a.md").write_text(A_NEW, encoding="utf-8")
    (lib / "b.rst").unlink()
    rc, out, _ = _cli(capsys, "ingest", str(lib), "--data-dir", str(data_dir), "--no-progress")
    assert rc == 0 and "1 new or changed, 2 unchanged" in out and "1 removed)" in out
    listing = _listing(capsys, data_dir)
    assert _user_sources(listing) == {"lab-specs/a.md", "lab-specs/sub/c.txt", "lab-specs/sub/d.docx"}

    # The collection itself: nothing of the old content, nothing of the deleted file, nothing twice.
    got = kb._col.get(include=["documents", "metadatas"])
    texts = [doc or "" for doc in got["documents"]]
    sources = [str((m or {}).get("source")) for m in got["metadatas"]]
    assert not any("31337" in t for t in texts) and sum("4242" in t for t in texts) == 1
    assert not any("4711" in t for t in texts) and "lab-specs/b.rst" not in sources
    assert not any("LICENSE" in s or "SOURCE_COMMIT" in s for s in sources)
    assert len(set(zip(sources, texts, strict=True))) == len(texts)
    assert builtin_ids <= set(got["ids"])  # the built-in knowledge base was left alone
    per_source = {s: sources.count(s) for s in set(sources)}
    assert {s: item["chunks"] for s, item in listing.items()} == per_source

    ids, count = kb.ids(), kb.count()
    rc, out, _ = _cli(capsys, "ingest", str(lib), "--data-dir", str(data_dir), "--no-progress")
    assert rc == 0 and "0 new or changed, 3 unchanged" in out and "0 added" in out
    assert kb.ids() == ids and kb.count() == count


def test_exclusions_default_and_explicit(builtin_kb_settings: Settings, tmp_path: Path) -> None:
    lib = _library(tmp_path / "lab-specs")
    settings = copy_builtin(builtin_kb_settings, tmp_path / "data")
    kb = KnowledgeBase.open(settings)
    report = kb.ingest(lib, show_progress=False, default_excludes=False)
    assert report.files == 6 and report.excluded_files == 0
    assert "lab-specs/LICENSE.txt" in kb.records("lab-specs")
    # Now excluded (the defaults are back, and sub/ explicitly): those sources leave the knowledge base.
    report = kb.ingest(lib, show_progress=False, exclude=["sub"])
    assert report.excluded_files == 4 and report.removed_sources == 4
    assert set(kb.records("lab-specs")) == {"lab-specs/a.md", "lab-specs/b.rst"}
    report = kb.ingest(lib, show_progress=False, exclude=["*.RST"])  # case does not matter
    assert set(kb.records("lab-specs")) == {"lab-specs/a.md", "lab-specs/sub/c.txt", "lab-specs/sub/d.docx"}


def test_single_file_replaces_the_folders_source(builtin_kb_settings: Settings, tmp_path: Path) -> None:
    lib = _library(tmp_path / "lab-specs")
    kb = KnowledgeBase.open(copy_builtin(builtin_kb_settings, tmp_path / "data"))
    kb.ingest(lib, show_progress=False)
    (lib / "a.md").write_text(A_NEW, encoding="utf-8")
    report = kb.ingest(lib / "a.md", show_progress=False)
    assert report.updated == 1 and report.removed_sources == 0  # a single file prunes nothing else
    assert len(kb.records("lab-specs")) == 4
    texts = kb._col.get(where={"source": "lab-specs/a.md"}, include=["documents"])["documents"]
    assert len(texts) == 1 and "4242" in texts[0]


def test_kb_remove_reset_stats(
    builtin_kb_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lib = _library(tmp_path / "lab-specs")
    settings = copy_builtin(builtin_kb_settings, tmp_path / "data")
    data = str(settings.data_dir)
    assert _cli(capsys, "ingest", str(lib), "--data-dir", data, "--no-progress")[0] == 0
    rc, out, _ = _cli(capsys, "kb", "stats", "--json", "--data-dir", data)
    stats = json.loads(out)
    assert stats["libraries"]["lab-specs"]["sources"] == 4 and stats["libraries"]["argo-kb"]["sources"] == 17
    assert stats["formats"][".docx"] == 1 and stats["incomplete"] == 0 and stats["unmanaged"] == 0

    rc, out, _ = _cli(capsys, "kb", "remove", "lab-specs/sub/*", "lab-specs/a.md", "--data-dir", data)
    assert rc == 0 and "removed 3 sources" in out
    assert _user_sources(_listing(capsys, settings.data_dir)) == {"lab-specs/b.rst"}
    rc, _, err = _cli(capsys, "kb", "remove", "no-such-thing", "--data-dir", data)
    assert rc == 2 and "no source matches 'no-such-thing'" in err
    rc, out, _ = _cli(capsys, "kb", "remove", "lab-specs", "--data-dir", data)  # a whole library
    assert rc == 0 and _user_sources(_listing(capsys, settings.data_dir)) == set()

    rc, _, err = _cli(capsys, "kb", "reset", "--data-dir", data)  # stdin is not a terminal: refuse
    assert rc == 2 and "--yes" in err
    rc, out, _ = _cli(capsys, "kb", "reset", "--yes", "--data-dir", data)
    assert rc == 0 and KnowledgeBase.open(settings).count() == 0 and _listing(capsys, settings.data_dir) == {}


def test_ingest_shows_progress_bars_and_one_summary_line(
    builtin_kb_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lib = _library(tmp_path / "lab-specs")
    settings = copy_builtin(builtin_kb_settings, tmp_path / "data")
    rc, out, err = _cli(capsys, "ingest", str(lib), "--data-dir", str(settings.data_dir))
    assert rc == 0
    assert "reading: 100%" in err and "4/4" in err and "embedding: 100%" in err
    lines = out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ingested 4 files (4 new or changed")
