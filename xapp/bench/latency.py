"""``argo-xapp bench latency``: per-question and per-component latency of the ARGO pipeline, in process.

    argo-xapp bench latency [--queries N | --questions FILE] [--strategy S] [--deadline-ms N]
                            [--warmup N] [--compare-baseline] [--data-dir D] [--model M] --out DIR

The clock of each question starts right before ``pipeline.answer`` with the deadline ``now + deadline_ms``
and stops when the answer is back (``wall_ms``, what a caller would see without transport);
``total_ms`` is the pipeline's own elapsed time, split into policy, decomposer, retriever, reasoner,
synthesizer and overhead as the pipeline measured them (each component is timed around its own call; the
overhead is what lies between those calls, so the parts add up to the total). Knowledge-base opening,
first-use ingestion and engine start-up happen before any clock runs and are reported separately.
Warm-up questions (a separate list, so no measured question finds its prompt already in a cache) run first
and are excluded from the statistics; they are written to the measurements CSV with ``phase=warmup``.

Writes ``latency_measurements.csv``, ``latency_summary.csv``, ``latency_analysis.png`` and
``latency_run.json`` (settings, machine, load average, start-up times) into ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xapp.bench.common import (
    ARGO,
    BASELINE,
    COMPONENTS,
    MEASUREMENT_COLUMNS,
    BenchQuestion,
    Measurement,
    add_run_options,
    bench_settings,
    describe,
    load_questions,
    machine_info,
    prepare_out,
    request_deadline,
    warmup_questions,
    write_csv,
    write_json,
)
from xapp.config import STRATEGIES, Settings
from xapp.domain import Action
from xapp.errors import ArgoError
from xapp.llm.base import LLM

# The three questions the seed system measured by hand, then more of the same kind.
SEED_QUESTIONS = (
    "What are the latency requirements for O-RAN fronthaul?",
    "How does O-RAN handle network slicing?",
    "What is the role of RIC in O-RAN architecture?",
)
DEFAULT_QUESTIONS = SEED_QUESTIONS + (
    "What does the E2 interface connect in O-RAN?",
    "What is the difference between an xApp and an rApp?",
    "Which interface carries policies from the non-RT RIC to the near-RT RIC?",
    "What does the O1 interface manage?",
    "What is an E2 service model and what does E2SM-KPM report?",
    "What is the role of the SMO and which interfaces does it use?",
    "Which functional split does the O-RAN Open Fronthaul use?",
    "What is the O2 interface used for?",
    "How does an xApp subscribe to RAN events through E2?",
)
SUMMARY_COLUMNS = (
    "system",
    "strategy",
    "series",
    "n",
    "mean_ms",
    "median_ms",
    "std_ms",
    "min_ms",
    "max_ms",
    "p95_ms",
    "p99_ms",
    "share_of_total",
    "runs_with_component",
    "deadline_ms",
    "pass_rate",
    "warmup_runs",
    "warmup_mean_ms",
    "ratio_vs_argo",
)


@dataclass
class LatencyReport:
    measured: list[Measurement]
    warmup: list[Measurement]
    baseline: list[Measurement] = field(default_factory=list)
    baseline_warmup: list[Measurement] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


def default_questions(n: int) -> list[BenchQuestion]:
    """``n`` questions from the default list (cycled when n exceeds it)."""
    return [BenchQuestion(q) for q in itertools.islice(itertools.cycle(DEFAULT_QUESTIONS), n)]


async def measure_argo(
    pipeline: Any,
    questions: Sequence[BenchQuestion],
    *,
    strategy: str,
    deadline_ms: float,
    phase: str = "measured",
) -> list[Measurement]:
    """Ask ``questions`` one after another, each with its own deadline, and record what happened."""
    out: list[Measurement] = []
    for i, bq in enumerate(questions):
        started = time.monotonic()
        deadline = request_deadline(pipeline.settings, deadline_ms, started)
        answer = await pipeline.answer(bq.question(), strategy=strategy, deadline=deadline)
        wall_ms = (time.monotonic() - started) * 1000.0
        out.append(
            Measurement(
                system=ARGO,
                phase=phase,
                index=i,
                question=bq.text,
                strategy=strategy,
                deadline_ms=deadline_ms,
                wall_ms=wall_ms,
                total_ms=answer.elapsed_ms,
                components={c: float(answer.timings_ms.get(c, 0.0)) for c in COMPONENTS},
                path=answer.path.value,
                fallback_reason=answer.fallback_reason or "",
                steps=len(answer.steps),
                retrieves=sum(s.action is Action.RETRIEVE for s in answer.steps),
                reasons=sum(s.action is Action.REASON for s in answer.steps),
                prompt_tokens=answer.prompt_tokens,
                completion_tokens=answer.completion_tokens,
                choice=answer.choice,
                answer=answer.answer,
            )
        )
    return out


def summarize(
    measured: Sequence[Measurement],
    warmup: Sequence[Measurement],
    *,
    system: str,
    strategy: str,
    deadline_ms: float,
    argo_mean_ms: float | None = None,
) -> list[dict[str, Any]]:
    """Rows of ``latency_summary.csv`` for one system: total, wall, then one per component."""
    rows: list[dict[str, Any]] = []
    totals = [m.total_ms for m in measured]
    total_mean = describe(totals)["mean"] if totals else float("nan")
    base = {
        "system": system,
        "strategy": strategy,
        "deadline_ms": deadline_ms,
        "warmup_runs": len(warmup),
        "warmup_mean_ms": describe([w.wall_ms for w in warmup])["mean"] if warmup else float("nan"),
    }
    for series, values in (("total", totals), ("wall", [m.wall_ms for m in measured])):
        stats = describe(values)
        row = dict(base, series=series, n=len(values), share_of_total=1.0 if series == "total" else "")
        row.update({f"{k}_ms": v for k, v in stats.items()})
        row["runs_with_component"] = len(values)
        row["pass_rate"] = sum(v <= deadline_ms for v in values) / len(values) if values else float("nan")
        if series == "total" and argo_mean_ms:
            row["ratio_vs_argo"] = stats["mean"] / argo_mean_ms
        rows.append(row)
    for component in COMPONENTS:
        values = [m.components.get(component, 0.0) for m in measured]
        stats = describe(values)
        row = dict(base, series=component, n=len(values))
        row.update({f"{k}_ms": v for k, v in stats.items()})
        row["share_of_total"] = stats["mean"] / total_mean if total_mean and total_mean == total_mean else ""
        row["runs_with_component"] = sum(v > 0 for v in values)
        rows.append(row)
    return rows


async def run_latency(
    settings: Settings,
    questions: Sequence[BenchQuestion],
    out: Path,
    *,
    strategy: str,
    deadline_ms: float,
    warmup: int = 2,
    compare_baseline: bool = False,
    baseline_dtype: str = "auto",
    baseline_threads: int | None = None,
    llm: LLM | None = None,
) -> LatencyReport:
    """The whole bench: ARGO (warm-up, measurement), then optionally the HF baseline; files into ``out``."""
    from xapp.bench import plots
    from xapp.pipeline.runner import build_pipeline

    settings = settings.replace(max_deadline_ms=max(settings.max_deadline_ms, int(deadline_ms)))
    if strategy == "template" and llm is None:
        settings = settings.replace(llm=False)  # no engine to start for a path that never uses it
    prepare_out(out)
    run: dict[str, Any] = {
        "strategy": strategy,
        "deadline_ms": deadline_ms,
        "questions": len(questions),
        "warmup": warmup,
        "settings": settings.to_dict(),
        "machine_before": machine_info(),
    }
    t0 = time.monotonic()
    async with build_pipeline(settings, llm=llm) as pipeline:
        run["startup_s"] = round(time.monotonic() - t0, 2)  # KB open/ingest + embedder + engine start
        run["model"] = pipeline.model_name or None
        warm = await measure_argo(
            pipeline, warmup_questions(warmup), strategy=strategy, deadline_ms=deadline_ms, phase="warmup"
        )
        measured = await measure_argo(pipeline, questions, strategy=strategy, deadline_ms=deadline_ms)
        run["latency_estimates_ms"] = pipeline.estimator.snapshot()
    report = LatencyReport(measured, warm, run=run)
    run["paths"] = {p: sum(m.path == p for m in measured) for p in ("llm", "mixed", "template")}
    report.summary = summarize(measured, warm, system=ARGO, strategy=strategy, deadline_ms=deadline_ms)
    if compare_baseline:
        from xapp.bench.baseline import measure_baseline

        base_settings = settings.replace(llm=False)  # the baseline brings its own model; no vLLM
        baseline = await measure_baseline(
            base_settings, questions, warmup=warmup, dtype=baseline_dtype, threads=baseline_threads
        )
        report.baseline_warmup, report.baseline = baseline.warmup, baseline.measured
        run["baseline"] = baseline.info
        argo_mean = report.summary[0]["mean_ms"]
        report.summary += summarize(
            report.baseline,
            report.baseline_warmup,
            system=BASELINE,
            strategy=baseline.info["strategy"],
            deadline_ms=deadline_ms,
            argo_mean_ms=argo_mean,
        )
        pairs = [b.total_ms / a.total_ms for a, b in zip(measured, report.baseline, strict=True) if a.total_ms > 0]
        base_total = next(r for r in report.summary if r["system"] == BASELINE and r["series"] == "total")
        run["baseline_ratio_mean"] = base_total["ratio_vs_argo"]
        run["baseline_ratio_median_per_question"] = sorted(pairs)[len(pairs) // 2] if pairs else None
    run["machine_after"] = {"loadavg_1_5_15": machine_info().get("loadavg_1_5_15")}

    rows = [m.row() for m in (*warm, *measured, *report.baseline_warmup, *report.baseline)]
    files = [out / "latency_measurements.csv", out / "latency_summary.csv", out / "latency_analysis.png"]
    write_csv(files[0], MEASUREMENT_COLUMNS, rows)
    write_csv(files[1], SUMMARY_COLUMNS, report.summary)
    drawn = plots.plot_latency(
        [m.row() for m in measured],
        [m.row() for m in report.baseline],
        files[2],
        deadline_ms=deadline_ms,
        title=_title(run, strategy, len(measured), len(warm)),
    )
    if not drawn:
        files.remove(files[2])
    write_json(out / "latency_run.json", run)
    report.files = [*files, out / "latency_run.json"]
    return report


def _title(run: dict[str, Any], strategy: str, n: int, warm: int) -> str:
    machine = run["machine_before"]
    model = run.get("model") or "no LLM"
    load = machine.get("loadavg_1_5_15", ["?"])[0]
    paths = ", ".join(f"{k} {v}" for k, v in run["paths"].items())
    return (
        f"ARGO latency — strategy {strategy}, model {model}, {n} questions (+{warm} warm-up excluded), "
        f"deadline {run['deadline_ms']:.0f} ms\nanswer paths: {paths} — {machine['cpus_usable']} CPU cores, "
        f"load avg {load} at start"
    )


def format_summary(report: LatencyReport) -> str:
    lines = [
        f"{'system':<12} {'series':<12} {'n':>4} {'mean':>9} {'median':>9} {'p95':>9} {'p99':>9} "
        f"{'max':>9} {'share':>6} {'pass':>6}"
    ]
    for row in report.summary:
        share = row.get("share_of_total")
        passed = row.get("pass_rate")
        lines.append(
            f"{row['system']:<12} {row['series']:<12} {row['n']:>4} {row['mean_ms']:>9.1f} "
            f"{row['median_ms']:>9.1f} {row['p95_ms']:>9.1f} {row['p99_ms']:>9.1f} {row['max_ms']:>9.1f} "
            f"{(f'{share:.0%}' if isinstance(share, float) else ''):>6} "
            f"{(f'{passed:.0%}' if isinstance(passed, float) else ''):>6}"
        )
    warm = report.warmup
    if warm:
        lines.append(f"warm-up (excluded): {len(warm)} runs, " + ", ".join(f"{w.wall_ms:.0f}" for w in warm) + " ms")
    if report.baseline:
        run = report.run
        lines.append(
            f"HF baseline / ARGO mean total: {run['baseline_ratio_mean']:.1f}x "
            f"(median per question {run['baseline_ratio_median_per_question']:.1f}x)"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="argo-xapp bench latency",
        description="Per-question and per-component latency of the ARGO pipeline (in process).",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--queries", type=int, help=f"measure N questions from the built-in list (default {len(DEFAULT_QUESTIONS)})"
    )
    which.add_argument(
        "--questions", type=Path, help="questions file: .txt (one per line), or ORAN-Bench .jsonl/.json rows"
    )
    p.add_argument("--strategy", choices=STRATEGIES, help="default: the configured strategy (mdp)")
    p.add_argument("--deadline-ms", type=int, help="per-question deadline (default: settings, 1000)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up questions, excluded (default 2)")
    p.add_argument(
        "--compare-baseline",
        action="store_true",
        help="also run the seed's way: HF transformers generate, sequential, no deadline",
    )
    p.add_argument(
        "--baseline-dtype",
        choices=("auto", "float32", "bfloat16", "float16"),
        default="auto",
        help="dtype of the HF baseline model (default: as the checkpoint says)",
    )
    p.add_argument(
        "--baseline-threads",
        type=int,
        help="torch CPU threads of the HF baseline (default: like the vLLM engine, cores - 1)",
    )
    add_run_options(p)
    return p


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    if args.queries is not None and args.queries < 1:
        raise ArgoError(f"--queries must be >= 1, got {args.queries}")
    if args.warmup < 0:
        raise ArgoError(f"--warmup must be >= 0, got {args.warmup}")
    if args.baseline_threads is not None and args.baseline_threads < 1:
        raise ArgoError(f"--baseline-threads must be >= 1, got {args.baseline_threads}")
    settings = bench_settings(args.data_dir, args.model, args.deadline_ms)
    if args.questions is not None:
        loaded = load_questions(args.questions)
        for why in loaded.skipped:
            print(f"skipped {why}", file=sys.stderr)
        questions = loaded.rows
    else:
        questions = default_questions(args.queries or len(DEFAULT_QUESTIONS))
    strategy = args.strategy or settings.strategy
    report = asyncio.run(
        run_latency(
            settings,
            questions,
            args.out,
            strategy=strategy,
            deadline_ms=float(settings.deadline_ms),
            warmup=args.warmup,
            compare_baseline=args.compare_baseline,
            baseline_dtype=args.baseline_dtype,
            baseline_threads=args.baseline_threads,
        )
    )
    print(format_summary(report))
    print("wrote " + ", ".join(str(f) for f in report.files), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
