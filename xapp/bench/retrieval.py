"""Retrieval on the O-RAN SC docs: recall@k of the source file, dense vs BM25 vs hybrid, and query latency.

    python -m xapp.bench.retrieval --data-dir D [--docs ../shared/data/oran-sc-docs] --out DIR
                                   [--questions bench/data/oran_sc_eval.jsonl] [--k 10] [--repeat 1]
                                   [--dense-n N] [--lexical-n N] [--rrf-k K] [--no-sweep]

``--docs`` ingests that folder into the data dir first (through :meth:`KnowledgeBase.ingest`, so a second run
adds nothing). Each question of the evaluation set (``bench/data/oran_sc_eval.jsonl``) is asked of
:meth:`KnowledgeBase.query` with ``k`` = 10, dense only (``hybrid = None``) and hybrid, alternately, so both
see the same load; a question is recalled at k when one of the first k passages comes from its ``source`` or
one of its ``also_in`` files. BM25 alone is measured too (:meth:`LexicalIndex.search`). Latency is the wall
time of one ``query`` call (embedding included), after a warm-up; the first BM25 build is timed on its own.

The sweep re-fuses stored rankings (the dense and BM25 top 40 of every question, BM25 with and without
stemming) for each ``dense_n × lexical_n × rrf_k``, which is exactly what ``query`` would return, without
asking again. Writes ``retrieval_results.csv`` (one row per question and mode), ``retrieval_summary.csv``,
``retrieval_sweep.csv`` and ``retrieval_run.json`` into ``--out``, and prints the summary table.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xapp.bench.common import (
    EVAL_QUESTIONS,
    EvalQuestion,
    bench_settings,
    describe,
    load_eval,
    machine_info,
    matches,
    prepare_out,
    write_csv,
    write_json,
)
from xapp.errors import ArgoError
from xapp.store.knowledge_base import KnowledgeBase
from xapp.store.lexical import HybridSettings, LexicalHit, LexicalIndex, fuse

KS = (1, 3, 5, 10)
MODES = ("dense", "lexical", "hybrid")
SWEEP_DEPTH = 40
SWEEP_N = (5, 10, 20, 40)
SWEEP_RRF_K = (5, 10, 20, 30, 60, 100)
SWEEP_EXACT = (0, 1, 2, 3)

RESULT_COLUMNS = ("mode", "id", "kind", "source", "rank", "latency_ms", "top_sources", "question")
SUMMARY_COLUMNS = (
    "mode",
    "n",
    *(f"recall@{k}" for k in KS),
    "mrr@10",
    "latency_mean_ms",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_max_ms",
)
SWEEP_COLUMNS = ("stem", "dense_n", "lexical_n", "rrf_k", "exact_slots", *(f"recall@{k}" for k in KS), "mrr@10")


@dataclass
class Outcome:
    mode: str
    question: EvalQuestion
    sources: list[str]
    latency_ms: float
    rank: int | None = field(init=False)  # 1-based rank of the first passage from a target file

    def __post_init__(self) -> None:
        self.rank = first_hit(self.sources, self.question.targets)


def first_hit(sources: Sequence[str], targets: Sequence[str]) -> int | None:
    for rank, source in enumerate(sources, start=1):
        if any(matches(source, t) for t in targets):
            return rank
    return None


def recall(ranks: Sequence[int | None], k: int) -> float:
    return sum(1 for r in ranks if r is not None and r <= k) / len(ranks) if ranks else float("nan")


def mrr(ranks: Sequence[int | None], depth: int = 10) -> float:
    return sum(1.0 / r for r in ranks if r is not None and r <= depth) / len(ranks) if ranks else float("nan")


def summarize(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for mode in MODES:
        mine = [o for o in outcomes if o.mode == mode]
        if not mine:
            continue
        ranks = [o.rank for o in mine]
        lat = describe([o.latency_ms for o in mine])
        row: dict[str, Any] = {"mode": mode, "n": len(mine)}
        row.update({f"recall@{k}": recall(ranks, k) for k in KS})
        row.update(
            {
                "mrr@10": mrr(ranks),
                "latency_mean_ms": lat["mean"],
                "latency_p50_ms": lat["median"],
                "latency_p95_ms": lat["p95"],
                "latency_max_ms": lat["max"],
            }
        )
        rows.append(row)
    return rows


def by_kind(outcomes: Sequence[Outcome], k: int = 5) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    for o in outcomes:
        table.setdefault(o.question.kind, {})
    for kind in table:
        for mode in MODES:
            ranks = [o.rank for o in outcomes if o.mode == mode and o.question.kind == kind]
            if ranks:
                table[kind][mode] = recall(ranks, k)
    return table


@dataclass
class Rankings:
    """What the sweep re-fuses: per question, the dense and BM25 top ``SWEEP_DEPTH`` as (id, source)."""

    dense: list[list[tuple[str, str]]] = field(default_factory=list)
    lexical: dict[bool, list[list[LexicalHit]]] = field(default_factory=dict)


def fused_sources(
    dense: Sequence[tuple[str, str]], hits: Sequence[LexicalHit], settings: HybridSettings, k: int
) -> list[str]:
    """The sources of :meth:`KnowledgeBase.query`'s top k for these rankings (the same :func:`fuse`)."""
    source = {h.id: h.source for h in hits} | dict(dense)
    return [source[pid] for pid in fuse([pid for pid, _ in dense], hits, settings, k)]


def sweep(questions: Sequence[EvalQuestion], rankings: Rankings, k: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for stem, dense_n, lexical_n, rrf_k, slots in itertools.product(
        sorted(rankings.lexical, reverse=True), SWEEP_N, SWEEP_N, SWEEP_RRF_K, SWEEP_EXACT
    ):
        settings = HybridSettings(dense_n=dense_n, lexical_n=lexical_n, rrf_k=rrf_k, exact_slots=slots)
        ranks = [
            first_hit(fused_sources(d, lx, settings, k), q.targets)
            for q, d, lx in zip(questions, rankings.dense, rankings.lexical[stem], strict=True)
        ]
        row: dict[str, Any] = {
            "stem": stem,
            "dense_n": dense_n,
            "lexical_n": lexical_n,
            "rrf_k": rrf_k,
            "exact_slots": slots,
        }
        row.update({f"recall@{kk}": recall(ranks, kk) for kk in KS})
        row["mrr@10"] = mrr(ranks)
        rows.append(row)
    return rows


def format_table(summary: Sequence[dict[str, Any]], kinds: dict[str, dict[str, float]], title: str) -> str:
    lines = [title, ""]
    lines.append("| mode | n | " + " | ".join(f"R@{k}" for k in KS) + " | MRR@10 | latency mean / p95 ms |")
    lines.append("|---|---|" + "---|" * len(KS) + "---|---|")
    for row in summary:
        lines.append(
            f"| {row['mode']} | {row['n']} | "
            + " | ".join(f"{row[f'recall@{k}']:.3f}" for k in KS)
            + f" | {row['mrr@10']:.3f} | {row['latency_mean_ms']:.1f} / {row['latency_p95_ms']:.1f} |"
        )
    lines += ["", "recall@5 by kind of question:", ""]
    lines.append("| kind | " + " | ".join(MODES) + " |")
    lines.append("|---|" + "---|" * len(MODES))
    for kind, cells in sorted(kinds.items()):
        lines.append(f"| {kind} | " + " | ".join(f"{cells.get(m, float('nan')):.3f}" for m in MODES) + " |")
    return "\n".join(lines)


def run(
    kb: KnowledgeBase,
    questions: Sequence[EvalQuestion],
    out: Path,
    hybrid: HybridSettings,
    k: int = 10,
    repeat: int = 1,
    do_sweep: bool = True,
    warmup: int = 3,
) -> dict[str, Any]:
    prepare_out(out)
    t0 = time.perf_counter()
    kb.lexical.refresh()
    build_ms = (time.perf_counter() - t0) * 1000.0
    build = kb.lexical.last_build
    for q in questions[:warmup]:  # the embedder's first calls are slow
        kb.hybrid = None
        kb.query(q.question, k)
        kb.hybrid = hybrid
        kb.query(q.question, k)
    outcomes: list[Outcome] = []
    rankings = Rankings()
    plain = LexicalIndex(kb.lexical.collection, stem=not kb.lexical.stem) if do_sweep else None
    if plain is not None:
        plain.refresh()
    for q in questions:
        for _ in range(repeat):
            for mode in MODES:
                t = time.perf_counter()
                if mode == "lexical":
                    sources = [h.source for h in kb.lexical.search(q.question, k, hybrid.rare_df)]
                else:
                    kb.hybrid = None if mode == "dense" else hybrid
                    sources = [p.source for p in kb.query(q.question, k)]
                outcomes.append(Outcome(mode, q, sources, (time.perf_counter() - t) * 1000.0))
        if do_sweep and plain is not None:
            kb.hybrid = None
            rankings.dense.append([(p.id, p.source) for p in kb.query(q.question, SWEEP_DEPTH)])
            for index in (kb.lexical, plain):
                rankings.lexical.setdefault(index.stem, []).append(
                    index.search(q.question, SWEEP_DEPTH, hybrid.rare_df)
                )
    kb.hybrid = hybrid
    summary = summarize([o for o in outcomes])
    kinds = by_kind(outcomes)
    write_csv(
        out / "retrieval_results.csv",
        RESULT_COLUMNS,
        (
            {
                "mode": o.mode,
                "id": o.question.id,
                "kind": o.question.kind,
                "source": o.question.targets[0],
                "rank": o.rank,
                "latency_ms": o.latency_ms,
                "top_sources": " ".join(o.sources[:5]),
                "question": o.question.question,
            }
            for o in outcomes
        ),
    )
    write_csv(out / "retrieval_summary.csv", SUMMARY_COLUMNS, summary)
    sweep_rows = sweep(questions, rankings, k) if do_sweep else []
    if sweep_rows:
        write_csv(out / "retrieval_sweep.csv", SWEEP_COLUMNS, sweep_rows)
    doc = {
        "questions": len(questions),
        "chunks": kb.count(),
        "k": k,
        "repeat": repeat,
        "hybrid": asdict(hybrid),
        "stem": kb.lexical.stem,
        "bm25_build_ms": build_ms,
        "bm25_build": asdict(build) if build else None,
        "summary": summary,
        "recall@5_by_kind": kinds,
        "best_sweep": sorted(sweep_rows, key=lambda r: (-r["recall@5"], -r["mrr@10"]))[:5],
        "machine": machine_info(),
    }
    write_json(out / "retrieval_run.json", doc)
    return doc


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="argo-xapp bench retrieval",
        description="Recall@k of the source file and query latency: dense vs BM25 vs hybrid (RRF).",
    )
    p.add_argument("--data-dir", type=Path, help="all state lives here (default: $ARGO_DATA_DIR or per-user dir)")
    p.add_argument("--docs", type=Path, help="ingest this folder first (e.g. ../shared/data/oran-sc-docs)")
    p.add_argument("--questions", type=Path, default=EVAL_QUESTIONS, help="evaluation set (.jsonl)")
    p.add_argument("--out", type=Path, required=True, help="folder for the CSVs and JSON")
    p.add_argument("--k", type=int, default=10, help="passages asked for per query (default 10)")
    p.add_argument("--repeat", type=int, default=1, help="queries per question and mode (default 1)")
    defaults = HybridSettings()
    p.add_argument("--dense-n", type=int, default=defaults.dense_n, help="dense candidates fused")
    p.add_argument("--lexical-n", type=int, default=defaults.lexical_n, help="BM25 candidates fused")
    p.add_argument("--rrf-k", type=float, default=defaults.rrf_k, help="RRF rank offset")
    p.add_argument(
        "--exact-slots", type=int, default=defaults.exact_slots, help="first places for rare exact identifiers"
    )
    p.add_argument("--no-sweep", action="store_true", help="skip the dense_n × lexical_n × rrf_k sweep")
    return p


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    if args.k < max(KS):
        raise ArgoError(f"--k must be >= {max(KS)}, got {args.k}")
    if args.repeat < 1:
        raise ArgoError(f"--repeat must be >= 1, got {args.repeat}")
    questions = load_eval(args.questions)
    settings = bench_settings(args.data_dir, None, None)
    kb = KnowledgeBase.open(settings)
    if args.docs is not None:
        print(kb.ingest(args.docs, show_progress=sys.stderr.isatty()).summary(), file=sys.stderr)
    if kb.count() == 0:
        raise ArgoError(f"the knowledge base in {settings.data_dir} is empty: pass --docs")
    hybrid = HybridSettings(
        dense_n=args.dense_n, lexical_n=args.lexical_n, rrf_k=args.rrf_k, exact_slots=args.exact_slots
    )
    doc = run(kb, questions, args.out, hybrid, k=args.k, repeat=args.repeat, do_sweep=not args.no_sweep)
    title = (
        f"Retrieval, {doc['questions']} questions, {doc['chunks']} chunks, k={args.k}, "
        f"hybrid dense_n={hybrid.dense_n} lexical_n={hybrid.lexical_n} rrf_k={hybrid.rrf_k:g} "
        f"exact_slots={hybrid.exact_slots}; "
        f"BM25 build {doc['bm25_build_ms']:.0f} ms"
    )
    print(format_table(doc["summary"], doc["recall@5_by_kind"], title))
    for row in doc["best_sweep"][:3]:
        print(
            f"sweep best: stem={row['stem']} dense_n={row['dense_n']} lexical_n={row['lexical_n']} "
            f"rrf_k={row['rrf_k']:g} exact_slots={row['exact_slots']} "
            f"recall@5={row['recall@5']:.3f} mrr@10={row['mrr@10']:.3f}"
        )
    print(f"wrote {args.out}/retrieval_{{results,summary,sweep}}.csv, retrieval_run.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main(sys.argv[1:]))
    except ArgoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
