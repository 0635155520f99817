"""Hybrid retrieval with real bm25s and a real embedded Chroma: exact identifiers, fusion, consistency."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from xapp.config import Settings
from xapp.store.knowledge_base import KnowledgeBase
from xapp.store.lexical import HybridSettings, LexicalIndex, identifiers, reciprocal_rank_fusion, tokenize

# Prose about ports, SCTP and the E2 termination, which a dense search likes for a question about the E2
# port, and one terse service listing that holds the number itself.
CORPUS = {
    "e2term.md": "# E2 termination\nThe E2 termination terminates the E2 interface of the near-RT RIC. E2 nodes "
    "open SCTP associations towards it; it decodes E2AP messages and forwards them to the platform over RMR.",
    "sctp.md": "# SCTP transport\nE2 nodes connect to the RIC over SCTP, a transport protocol with multi-homing. "
    "The port the E2 termination listens on is configured in its Helm chart and exposed as a Kubernetes service.",
    "ports.md": "# Platform ports\nEach platform component listens on an HTTP port for its REST API and on an RMR "
    "port for messages; the ports are defined in the recipe and can be changed there.",
    "services.md": "# Service listing\n```\nservice-ricplt-e2term-sctp-alpha NodePort 10.96.249.236 "
    "36422:32222/SCTP 6m\nservice-ricplt-e2mgr-http ClusterIP 10.97.133.251 3800/TCP 6m1s\n```",
    "msgtypes.md": "# Subscription message types\nRIC_SUB_REQ RIC_SUB_RESP RIC_SUB_FAILURE are the subscription "
    "messages. RIC_SUB_DEL_RESP and RIC_SUB_DEL_FAILURE answer a deletion.",
    "msgdelete.md": "# Deleting a subscription\nAn xApp deletes a subscription by sending RIC_SUB_DEL_REQ to the "
    "subscription manager, which forwards it to the E2 node.",
    "subscriptions.md": "# Subscriptions\nAn xApp asks the subscription manager for a subscription; the manager "
    "merges identical subscriptions and asks the routing manager for routes.",
    "a1.md": "# A1 mediator\nThe A1 mediator receives policy types and instances over HTTP and publishes them "
    "to xApps over RMR.",
}


def _write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def kb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lexical")
    kb = KnowledgeBase.open(Settings(data_dir=root / "data"))
    kb.ingest(_write(root / "docs", CORPUS), show_progress=False)
    return root


@pytest.fixture(scope="module")
def kb(kb_dir: Path) -> KnowledgeBase:
    return KnowledgeBase.open(Settings(data_dir=kb_dir / "data"))


def _dense(kb: KnowledgeBase, text: str, k: int) -> list[str]:
    kb.hybrid = None
    try:
        return [p.source for p in kb.query(text, k)]
    finally:
        kb.hybrid = HybridSettings()


# ---- the tokenizer -----------------------------------------------------------------------------------------


def test_tokens_keep_identifiers_ports_and_dotted_terms_whole() -> None:
    tokens = tokenize(
        "service-ricplt-e2term-sctp-alpha 36422:32222/SCTP RIC_SUBSCRIPTION_REQUEST E2AP "
        "ricxappframe.alarm.alarm /A1-P/v2/healthcheck readSubsFromDb v2.12.3"
    )
    for whole in (
        "service-ricplt-e2term-sctp-alpha",
        "36422:32222/sctp",
        "36422",
        "ric_subscription_request",
        "e2ap",
        "ricxappframe.alarm.alarm",
        "a1-p/v2/healthcheck",
        "a1-p",
        "readsubsfromdb",
        "v2.12.3",
    ):
        assert whole in tokens, whole
    # ... and their parts, so a partial mention still matches
    for part in ("e2term", "sctp", "subscription", "request", "alarm", "healthcheck", "db"):
        assert any(t == part or t.startswith(part[:5]) for t in tokens), part


def test_plain_words_are_stemmed_and_stop_words_dropped_but_identifiers_are_not() -> None:
    assert tokenize("the subscriptions and policies") == tokenize("subscription policy")
    assert "the" not in tokenize("the routing manager")
    assert tokenize("RMR_SEED_RT")[0] == "rmr_seed_rt"
    assert "subscriptions_total" in tokenize("subscriptions_total")  # compounds are never stemmed
    assert tokenize("Subscriptions", stem=False) == ["subscriptions"]


def test_component_short_names_also_index_their_long_names() -> None:
    tokens = tokenize("service-ricplt-e2term-sctp-alpha")
    assert set(tokenize("E2 termination")) <= set(tokens)
    assert set(tokenize("subscription manager")) <= set(tokenize("submgr"))


def test_identifiers_of_a_query_are_names_not_hyphenated_prose() -> None:
    found = identifiers("Is port 36422 of e2term-sctp in RIC_SUB_REQ, readSubsFromDb or E2AP near-RT re-sent E2?")
    assert found == ["36422", "e2term-sctp", "ric_sub_req", "readsubsfromdb", "e2ap"]


def test_rrf_sums_reciprocal_ranks() -> None:
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["c", "a"]], k=10)
    assert fused["a"] == pytest.approx(1 / 11 + 1 / 12)
    assert fused["c"] == pytest.approx(1 / 13 + 1 / 11)
    assert fused["b"] == pytest.approx(1 / 12)
    assert max(fused, key=lambda pid: fused[pid]) == "a"


# ---- hybrid search ------------------------------------------------------------------------------------------


def test_a_port_number_ranks_first_through_hybrid_search_where_dense_search_misses_it(kb: KnowledgeBase) -> None:
    question = "Which E2 termination port is 36422?"
    dense = _dense(kb, question, 3)
    assert dense[0] != "docs/services.md", "premise: the dense search alone prefers the prose"
    passages = kb.query(question, 3)
    assert passages[0].source == "docs/services.md"
    assert "36422" in passages[0].text


def test_a_message_name_ranks_first_among_similar_names(kb: KnowledgeBase) -> None:
    dense = _dense(kb, "RIC_SUB_DEL_REQ", 3)
    passages = kb.query("RIC_SUB_DEL_REQ", 3)
    assert passages[0].source == "docs/msgdelete.md", (dense, [p.source for p in passages])
    # The BM25 half alone says the same: the exact name beats the page listing its siblings.
    assert kb.lexical.search("RIC_SUB_DEL_REQ", 1)[0].source == "docs/msgdelete.md"


def test_hybrid_passages_carry_cosine_scores_and_stored_vectors(kb: KnowledgeBase) -> None:
    question = "Which E2 termination port is 36422?"
    query_vector = kb.embedder.embed([question])[0]
    passages = kb.query(question, 5)
    assert len(passages) == 5 and len({p.id for p in passages}) == 5
    for p in passages:
        assert p.vector is not None and len(p.vector) == len(query_vector)
        assert np.linalg.norm(p.vector) == pytest.approx(1.0, abs=1e-3)
        assert p.score == pytest.approx(float(np.dot(query_vector, p.vector)), abs=1e-3)
    assert kb.query(question, 0) == []


def test_dense_only_mode_is_the_plain_vector_search(kb: KnowledgeBase) -> None:
    kb.hybrid = None
    try:
        passages = kb.query("How does the A1 mediator deliver policies?", 3)
    finally:
        kb.hybrid = HybridSettings()
    assert [p.score for p in passages] == sorted((p.score for p in passages), reverse=True)
    assert passages[0].source == "docs/a1.md"


# ---- consistency with the collection ------------------------------------------------------------------------


def test_index_rebuilds_only_when_the_collection_changed(tmp_path: Path) -> None:
    kb = KnowledgeBase.open(Settings(data_dir=tmp_path / "data"))
    assert kb.query("36422", 3) == []  # an empty store answers, with nothing
    kb.ingest(_write(tmp_path / "docs", dict(list(CORPUS.items())[:4])), show_progress=False)
    index = kb.lexical
    assert index.refresh() is True and len(index) == 4 and index.last_build is not None
    assert index.last_build.tokenized == 4
    assert index.refresh() is False
    kb.ingest(_write(tmp_path / "docs", dict(list(CORPUS.items())[4:5])), show_progress=False)
    assert index.refresh() is True and len(index) == 5
    assert index.last_build.tokenized == 1  # the other four came from the cache


def test_chunks_added_by_another_knowledge_base_are_found(tmp_path: Path) -> None:
    data = tmp_path / "data"
    reader = KnowledgeBase.open(Settings(data_dir=data))
    reader.ingest(_write(tmp_path / "docs", CORPUS), show_progress=False)
    assert reader.query("ZX81_TELEMETRY_PORT", 1)[0].source != "extra/telemetry.md"  # built, without it

    writer = KnowledgeBase.open(Settings(data_dir=data))
    writer.ingest(
        _write(tmp_path / "extra", {"telemetry.md": "# Telemetry\nThe ZX81_TELEMETRY_PORT setting is 47001."}),
        show_progress=False,
    )
    passages = reader.query("ZX81_TELEMETRY_PORT", 3)
    assert passages[0].source == "extra/telemetry.md"
    assert passages[0].vector is not None

    writer.remove_sources(["extra/telemetry.md"])
    assert all(p.source != "extra/telemetry.md" for p in reader.query("ZX81_TELEMETRY_PORT", 3))


def test_chunks_written_by_another_process_are_found_after_refresh(tmp_path: Path) -> None:
    data = tmp_path / "data"
    reader = KnowledgeBase.open(Settings(data_dir=data))
    reader.ingest(_write(tmp_path / "docs", CORPUS), show_progress=False)
    reader.query("warm", 1)
    _write(tmp_path / "other", {"qx.md": "# QX\nThe QX_ANOMALY_THRESHOLD key sets the anomaly threshold."})
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from xapp.config import Settings
        from xapp.store.knowledge_base import KnowledgeBase
        kb = KnowledgeBase.open(Settings(data_dir=Path({str(data)!r})))
        kb.ingest(Path({str(tmp_path / "other")!r}), show_progress=False)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    assert reader.refresh() is True  # the knowledge base's own view of other processes' writes
    passages = reader.query("QX_ANOMALY_THRESHOLD", 3)
    assert passages[0].source == "other/qx.md"


def test_a_plain_collection_works_too(kb: KnowledgeBase) -> None:
    index = LexicalIndex(kb.lexical.collection, stem=False)
    hits = index.search("36422", 5)
    assert [h.source for h in hits] == ["docs/services.md"]
    assert hits[0].score > 0


# ---- the retrieval bench --------------------------------------------------------------------------------------


def test_bench_refusion_reproduces_query_and_writes_its_files(kb_dir: Path, tmp_path: Path) -> None:
    import csv
    import json

    from xapp.bench import retrieval

    kb = KnowledgeBase.open(Settings(data_dir=kb_dir / "data"))
    question = "Which E2 termination port is 36422?"
    kb.hybrid = None
    dense = [(p.id, p.source) for p in kb.query(question, retrieval.SWEEP_DEPTH)]
    kb.hybrid = HybridSettings()
    hits = kb.lexical.search(question, retrieval.SWEEP_DEPTH, HybridSettings().rare_df)
    assert retrieval.fused_sources(dense, hits, HybridSettings(), 5) == [p.source for p in kb.query(question, 5)]

    questions = tmp_path / "eval.jsonl"
    rows = [
        {"id": "t1", "kind": "port", "question": question, "source": "services.md", "also_in": []},
        {"id": "t2", "kind": "message", "question": "RIC_SUB_DEL_REQ", "source": "nowhere.md", "also_in": []},
    ]
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out"
    argv = ["--data-dir", str(kb_dir / "data"), "--docs", str(kb_dir / "docs"), "--questions", str(questions)]
    assert retrieval.main([*argv, "--out", str(out)]) == 0
    summary = {r["mode"]: r for r in csv.DictReader((out / "retrieval_summary.csv").open(encoding="utf-8"))}
    assert set(summary) == {"dense", "lexical", "hybrid"}
    assert float(summary["hybrid"]["recall@1"]) == 0.5  # services.md first; nowhere.md is never found
    assert float(summary["hybrid"]["recall@10"]) == 0.5
    assert (out / "retrieval_sweep.csv").is_file() and (out / "retrieval_run.json").is_file()
