"""The built-in knowledge base is ingested like user documents and repaired on start (issue 15, item 1).

Real ``argo-xapp ingest`` processes on a fresh data dir are killed with SIGKILL at several points of their
first ingestion: before the built-in batch stores anything, inside it, and inside the user library after
it. After the kill inside the built-in batch a server start (``build_pipeline``) must complete it; after the
last kill a re-run must equal one clean run.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kb_support import copy_builtin

from xapp.config import Settings
from xapp.pipeline.runner import build_pipeline
from xapp.store.knowledge_base import BUILTIN_SOURCE_PREFIX, KnowledgeBase

pytestmark = pytest.mark.slow

_BAR = re.compile(r"(reading|embedding)( argo-kb)?:\s+\d+%[^|]*\|[^|]*\|\s*(\d+)/(\d+)")


def _library(root: Path) -> Path:
    root.mkdir(parents=True)
    for i in range(6):
        paras = "\n\n".join(
            f"Lab fact {i}.{j}: the xApp number {i} uses RMR message type {1000 + 10 * i + j} for its "
            f"subscription number {j}, and the E2 node answers it within {20 + j} milliseconds. " * 3
            for j in range(4)
        )
        (root / f"lab-{i}.md").write_text(f"# Lab note {i}\n\n{paras}\n", encoding="utf-8")
    return root


def _ingest(data: Path, lib: Path) -> list[str]:
    return [sys.executable, "-m", "xapp", "ingest", str(lib), "--data-dir", str(data), "--batch-size", "4"]


def _kill_when(cmd: list[str], when: Callable[[str, int, int], bool], timeout: float = 300) -> str:
    """Run cmd, SIGKILL it the moment a progress bar (label, done, total) satisfies ``when``; returns the
    label and count it was killed at. Fails if it finished first."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True, bufsize=1)
    assert proc.stderr is not None
    buf = ""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ch = proc.stderr.read(1)
            if not ch:
                break
            buf += ch
            if ch not in "\r\n]":
                continue
            matches = list(_BAR.finditer(buf[-300:]))
            if matches:
                m = matches[-1]
                label = m.group(1) + (m.group(2) or "")
                if when(label, int(m.group(3)), int(m.group(4))):
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(timeout=60)
                    return f"{label} {m.group(3)}/{m.group(4)}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    raise AssertionError(f"the ingestion ended before the kill point: {buf[-800:]}")


def _builtin_ids(kb: KnowledgeBase) -> set[str]:
    got = kb._col.get(include=["metadatas"])
    return {
        pid
        for pid, meta in zip(got["ids"], got["metadatas"], strict=True)
        if str((meta or {}).get("source", "")).startswith(BUILTIN_SOURCE_PREFIX)
    }


async def _start(settings: Settings) -> set[str]:
    async with build_pipeline(settings.replace(llm=False)) as pipeline:
        assert pipeline.kb is not None
        return _builtin_ids(pipeline.kb)


def test_first_ingestion_killed_inside_the_builtin_batch_is_repaired_on_start(
    builtin_kb_settings: Settings, tmp_path: Path
) -> None:
    lib = _library(tmp_path / "lab")
    clean = KnowledgeBase.open(builtin_kb_settings)
    clean_builtin = _builtin_ids(clean)
    assert len(clean_builtin) > 100
    data = tmp_path / "killed"
    settings = Settings(data_dir=data, llm=False)

    # 1. Killed as the built-in batch starts: its sources are marked incomplete, (almost) nothing stored.
    at = _kill_when(_ingest(data, lib), lambda label, n, total: label == "embedding argo-kb")
    # 2. A re-run, killed inside the built-in batch (some batches stored, most not).
    at2 = _kill_when(_ingest(data, lib), lambda label, n, total: label == "embedding argo-kb" and 24 <= n < total)
    partial = _builtin_ids(KnowledgeBase.open(settings))
    assert 0 < len(partial) < len(clean_builtin), (at, at2, len(partial))
    assert partial < clean_builtin  # whole chunks only, all of them the right ones
    stats = KnowledgeBase.open(settings).stats()
    assert stats["incomplete"] > 0  # `kb list` says so, too

    # 3. A server start completes the built-in knowledge base (before: `count() > 0` left it short for good).
    assert asyncio.run(_start(settings)) == clean_builtin
    assert KnowledgeBase.open(settings).ensure_builtin() is None  # and a second start has nothing to do

    # 4. Killed inside the user library, then run again: equal to one clean run.
    _kill_when(_ingest(data, lib), lambda label, n, total: label == "embedding" and 4 <= n < total)
    subprocess.run(_ingest(data, lib), check=True, capture_output=True)
    reference = copy_builtin(builtin_kb_settings, tmp_path / "clean")
    subprocess.run(_ingest(reference.data_dir, lib), check=True, capture_output=True)
    a, b = KnowledgeBase.open(settings), KnowledgeBase.open(reference)
    assert a.ids() == b.ids() and a.count() == b.count() > len(clean_builtin)
    assert {s.source: (s.chunks, s.status) for s in a.sources()} == {
        s.source: (s.chunks, s.status) for s in b.sources()
    }
