"""The O-RAN SC evaluation set: schema, size, balance, and quotes that really occur in their sources."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EVAL_FILE = ROOT / "bench" / "data" / "oran_sc_eval.jsonl"
DOCS = ROOT.parent / "shared" / "data" / "oran-sc-docs"
KINDS = {"port", "message", "config", "role", "deployment", "interface"}
FIELDS = {"id", "kind", "question", "options", "answer", "answer_text", "key_facts", "source", "also_in", "support"}


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _rows() -> list[dict]:
    return [json.loads(line) for line in EVAL_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_schema_and_size() -> None:
    rows = _rows()
    assert len(rows) >= 60
    assert len({r["id"] for r in rows}) == len(rows)
    assert len({r["question"] for r in rows}) == len(rows)
    for r in rows:
        assert set(r) == FIELDS, r["id"]
        assert r["kind"] in KINDS
        assert isinstance(r["question"], str) and r["question"].strip().endswith("?")
        assert isinstance(r["options"], list) and len(r["options"]) == 4 and len(set(r["options"])) == 4
        assert isinstance(r["answer"], int) and 1 <= r["answer"] <= 4
        assert r["options"][r["answer"] - 1] == r["answer_text"]
        assert r["key_facts"] and all(isinstance(f, str) and f.strip() for f in r["key_facts"])
        # An open answer is judged on facts the quoted evidence holds.
        for fact in r["key_facts"]:
            assert fact.lower() in (r["support"] + " " + r["answer_text"]).lower(), (r["id"], fact)
        assert r["source"] and not r["source"].startswith("/") and ".." not in r["source"].split("/")
        assert isinstance(r["also_in"], list) and r["source"] not in r["also_in"]
        assert len(_norm(r["support"])) >= 10


def test_answers_are_balanced_and_sources_varied() -> None:
    rows = _rows()
    counts = Counter(r["answer"] for r in rows)
    assert max(counts.values()) - min(counts.values()) <= 2, counts  # "always answer 2" earns ~25 %, no more
    assert len({r["source"] for r in rows}) >= 25
    assert len({r["source"].split("/")[0] for r in rows}) >= 8
    assert set(Counter(r["kind"] for r in rows)) == KINDS


@pytest.mark.skipif(not DOCS.is_dir(), reason="../shared/data/oran-sc-docs is not present")
def test_support_sentences_occur_in_their_sources() -> None:
    texts = {
        p.relative_to(DOCS).as_posix(): _norm(p.read_text(encoding="utf-8", errors="replace"))
        for p in DOCS.rglob("*")
        if p.is_file()
    }
    for r in _rows():
        support = _norm(r["support"])
        assert r["source"] in texts, (r["id"], r["source"])
        assert support in texts[r["source"]], (r["id"], r["source"], support)
        holders = sorted(k for k, t in texts.items() if support in t and k != r["source"])
        assert r["also_in"] == holders, r["id"]


def test_loads_into_the_accuracy_bench() -> None:
    from xapp.bench.common import load_questions

    questions = load_questions(EVAL_FILE)
    assert len(questions.rows) == len(_rows()) and not questions.skipped
