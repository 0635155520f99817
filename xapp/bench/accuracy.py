"""``argo-xapp bench accuracy``: ORAN-Bench-13K multiple choice, by strategy and difficulty.

    argo-xapp bench accuracy --questions FILE_OR_DIR [--strategy S ...] [--limit N] [--deadline-ms N]
                             [--warmup N] [--data-dir D] [--model M] --out DIR

Rows are ``{"question", "options", "answer", "difficulty"}`` objects (the dev split in
``../shared/data/oranbench-dev``) or the original JSON-Lines arrays ``[question, options, "k"]``; without a
``difficulty`` field it comes from the file name (``easy``/``intermediate``/``difficult``, or the
original ``fin_E``/``fin_M``/``fin_H``). ``answer`` is the 1-based index of the correct option.

The majority baseline always answers the most common answer index of the evaluated rows (the answer key of
ORAN-Bench is not uniform, so this, not 25 %, is the bar to beat); ``group_majority_baseline`` is the same with
each difficulty's own most common index. Every question gets the deadline (``--deadline-ms``, default the
configured 1000 ms) like a request to the xApp would. A strategy that needs the LLM starts one vLLM engine,
shared by all strategies of the run. Writes ``accuracy_results.csv`` (one row per question and strategy),
``accuracy_summary.csv``, ``accuracy.png`` and ``accuracy_run.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xapp.bench.common import (
    RUN_COLUMNS,
    RUN_SUMMARY_COLUMNS,
    BenchQuestion,
    add_run_options,
    bench_settings,
    difficulty_order,
    interleave_by_difficulty,
    load_questions,
    machine_info,
    prepare_out,
    request_deadline,
    run_summary,
    same_start,
    timed_answer,
    warmup_questions,
    write_csv,
    write_json,
)
from xapp.config import STRATEGIES, Settings
from xapp.domain import PathKind
from xapp.errors import ArgoError
from xapp.llm.base import LLM
from xapp.policy.strategies import make_strategy

RESULT_COLUMNS = (
    "strategy",
    "index",
    "difficulty",
    "source",
    "question",
    "answer",
    "choice",
    "correct",
    *RUN_COLUMNS,
    "path",
    "llm_answer",
    "llm_probability",
    "option_probabilities",
    "trimmed",
    "fallback_reason",
)
SUMMARY_COLUMNS = (
    "strategy",
    "difficulty",
    "n",
    "correct",
    "accuracy",
    "majority_answer",
    "majority_baseline",
    "group_majority_answer",
    "group_majority_baseline",
    "no_choice",
    *RUN_SUMMARY_COLUMNS,
    "llm_path_share",
    "mixed_path_share",
    "template_path_share",
    "llm_answer_share",
)
ALL = "all"


@dataclass
class AccuracyReport:
    results: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    run: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def row(self, strategy: str, difficulty: str = ALL) -> dict[str, Any]:
        return next(r for r in self.summary if r["strategy"] == strategy and r["difficulty"] == difficulty)


def majority(answers: Sequence[int]) -> int:
    """The most common answer index (the smallest on a tie)."""
    counts = Counter(answers)
    return min(counts, key=lambda a: (-counts[a], a))


async def _answer_all(
    pipeline: Any,
    rows: Sequence[BenchQuestion],
    strategy: str,
    deadline_ms: float,
    progress: bool,
) -> list[dict[str, Any]]:
    from tqdm import tqdm

    out: list[dict[str, Any]] = []
    for i, bq in enumerate(tqdm(rows, desc=strategy, unit="q", disable=not progress, file=sys.stderr)):
        answer, timing = await timed_answer(pipeline, bq.question(), strategy, deadline_ms)
        out.append(
            {
                "strategy": strategy,
                "index": i,
                "difficulty": bq.difficulty or "unknown",
                "source": bq.source,
                "question": bq.text,
                "answer": bq.answer,
                "choice": answer.choice,
                "correct": answer.choice is not None and answer.choice == bq.answer,
                **timing,
                "path": answer.path.value,
                "llm_answer": bool(answer.option_probabilities),
                "llm_probability": max(answer.option_probabilities, default=0.0),
                # Every option's, space-separated (the LLM's only): for analyses such as its bias by position.
                "option_probabilities": " ".join(f"{p:.4f}" for p in answer.option_probabilities),
                "trimmed": answer.trimmed,
                "fallback_reason": answer.fallback_reason or "",
            }
        )
    return out


def summarize(results: Sequence[dict[str, Any]], deadline_ms: float) -> list[dict[str, Any]]:
    """One row per strategy and difficulty, plus ``all`` per strategy."""
    if not results:
        return []
    golds = [r["answer"] for r in results if r["strategy"] == results[0]["strategy"]]
    overall = majority(golds)
    rows: list[dict[str, Any]] = []
    strategies = list(dict.fromkeys(r["strategy"] for r in results))
    difficulties = sorted({r["difficulty"] for r in results}, key=difficulty_order)
    for strategy in strategies:
        mine = [r for r in results if r["strategy"] == strategy]
        for difficulty in [*difficulties, ALL]:
            group = mine if difficulty == ALL else [r for r in mine if r["difficulty"] == difficulty]
            if not group:
                continue
            n = len(group)
            gold = [r["answer"] for r in group]
            own = majority(gold)
            correct = sum(bool(r["correct"]) for r in group)
            rows.append(
                {
                    "strategy": strategy,
                    "difficulty": difficulty,
                    "n": n,
                    "correct": correct,
                    "accuracy": correct / n,
                    "majority_answer": overall,
                    "majority_baseline": gold.count(overall) / n,
                    "group_majority_answer": own,
                    "group_majority_baseline": gold.count(own) / n,
                    "no_choice": sum(r["choice"] is None for r in group),
                    **run_summary(group, deadline_ms),
                    "llm_path_share": sum(r["path"] == PathKind.LLM.value for r in group) / n,
                    "mixed_path_share": sum(r["path"] == PathKind.MIXED.value for r in group) / n,
                    "template_path_share": sum(r["path"] == PathKind.TEMPLATE.value for r in group) / n,
                    "llm_answer_share": sum(bool(r["llm_answer"]) for r in group) / n,
                }
            )
    return rows


async def run_accuracy(
    settings: Settings,
    rows: Sequence[BenchQuestion],
    out: Path,
    *,
    strategies: Sequence[str],
    deadline_ms: float,
    warmup: int = 1,
    progress: bool = True,
    skipped: Sequence[str] = (),
    llm: LLM | None = None,
    baseline_sample: int = 0,
) -> AccuracyReport:
    from xapp.bench import plots
    from xapp.pipeline.runner import build_pipeline

    missing = [r.source for r in rows if r.answer is None or not r.options]
    if missing:
        raise ArgoError(f"{len(missing)} rows have no options or answer, e.g. {missing[0]}")
    settings = settings.replace(max_deadline_ms=max(settings.max_deadline_ms, int(deadline_ms)))
    if llm is None and not any(make_strategy(s, settings).uses_llm for s in strategies):
        settings = settings.replace(llm=False)  # template only: no engine to start
    prepare_out(out)
    run: dict[str, Any] = {
        "strategies": list(strategies),
        "questions": len(rows),
        "skipped_rows": list(skipped),
        "by_difficulty": dict(Counter(r.difficulty or "unknown" for r in rows)),
        "deadline_ms": deadline_ms,
        "warmup": warmup,
        "settings": settings.to_dict(),
        "machine_before": machine_info(),
    }
    results: list[dict[str, Any]] = []
    t0 = time.monotonic()
    async with build_pipeline(settings, llm=llm) as pipeline:
        run["startup_s"] = round(time.monotonic() - t0, 2)
        run["model"] = pipeline.model_name or None
        # What the planner believed of the LLM's costs after start-up and after each strategy: the first
        # strategy runs while the online estimates settle from the start-up calibration.
        run["llm_costs"] = {"startup": pipeline.costs.snapshot()}
        for q in warmup_questions(warmup):  # excluded: first-call costs (embedder, engine, caches)
            deadline = request_deadline(pipeline.settings, deadline_ms, time.monotonic())
            await pipeline.answer(q.question(), strategy=strategies[0], deadline=deadline)
        start_costs = pipeline.costs.state()
        for strategy in strategies:
            await same_start(pipeline, start_costs)  # each strategy from where the first began
            started = time.monotonic()
            results += await _answer_all(pipeline, rows, strategy, deadline_ms, progress)
            run.setdefault("strategy_seconds", {})[strategy] = round(time.monotonic() - started, 1)
            run["llm_costs"][strategy] = pipeline.costs.snapshot()
    files = [out / "accuracy_results.csv", out / "accuracy_summary.csv", out / "accuracy.png"]
    if baseline_sample:
        # After the engine is gone: the seed's transformers model gets the machine to itself, as ARGO had.
        comparison, baseline_rows = await _compare_baseline(settings, rows[:baseline_sample], results, strategies[0])
        run["baseline_comparison"] = comparison
        files.append(out / "accuracy_baseline.csv")
        write_csv(files[-1], BASELINE_COLUMNS, baseline_rows)
    run["machine_after"] = {"loadavg_1_5_15": machine_info().get("loadavg_1_5_15")}
    summary = summarize(results, deadline_ms)
    write_csv(files[0], RESULT_COLUMNS, results)
    write_csv(files[1], SUMMARY_COLUMNS, summary)
    machine = run["machine_before"]
    drawn = plots.plot_accuracy(
        summary,
        files[2],
        title=(
            f"ORAN-Bench accuracy — {len(rows)} questions, deadline {deadline_ms:.0f} ms, "
            f"model {run['model'] or 'none (template only)'}\n{machine['cpus_usable']} CPU cores, "
            f"load avg {machine.get('loadavg_1_5_15', ['?'])[0]} at start"
        ),
    )
    if not drawn:
        files.remove(files[2])
    write_json(out / "accuracy_run.json", run)
    return AccuracyReport(results, summary, run, [*files, out / "accuracy_run.json"])


BASELINE_COLUMNS = ("system", "index", "difficulty", "answer", "choice", "correct", "wall_ms", "completion_tokens")


async def _compare_baseline(
    settings: Settings, sample: Sequence[BenchQuestion], results: Sequence[dict[str, Any]], strategy: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The seed's way (transformers ``generate``, sequential, decompose → retrieve → reason → synthesize with the
    seed's token caps, the option parsed from the generated text) on the first questions ARGO answered."""
    from xapp.bench.baseline import SEED_SETTINGS, measure_baseline

    measured = (await measure_baseline(settings.replace(**SEED_SETTINGS), sample, warmup=1)).measured
    rows: list[dict[str, Any]] = [
        {
            "system": "seed",
            "index": i,
            "difficulty": bq.difficulty or "unknown",
            "answer": bq.answer,
            "choice": m.choice,
            "correct": m.choice is not None and m.choice == bq.answer,
            "wall_ms": m.wall_ms,
            "completion_tokens": m.completion_tokens,
        }
        for i, (bq, m) in enumerate(zip(sample, measured, strict=True))
    ]
    argo: list[dict[str, Any]] = [r for r in results if r["strategy"] == strategy and r["index"] < len(sample)]
    n = len(sample)
    seed_ms = sum(r["wall_ms"] for r in rows) / n
    argo_ms = sum(r["wall_ms"] for r in argo) / n
    comparison = {
        "questions": n,
        "argo_strategy": strategy,
        "argo_accuracy": sum(bool(r["correct"]) for r in argo) / n,
        "seed_accuracy": sum(bool(r["correct"]) for r in rows) / n,
        "seed_no_choice": sum(r["choice"] is None for r in rows),
        "argo_mean_ms": round(argo_ms, 1),
        "seed_mean_ms": round(seed_ms, 1),
        "speedup": round(seed_ms / argo_ms, 1) if argo_ms else None,
    }
    return comparison, rows


def format_comparison(c: dict[str, Any]) -> str:
    return (
        f"seed's way vs ARGO ({c['argo_strategy']}) on the same {c['questions']} questions and model: "
        f"accuracy {c['seed_accuracy']:.1%} vs {c['argo_accuracy']:.1%}, mean latency "
        f"{c['seed_mean_ms']:.0f} ms vs {c['argo_mean_ms']:.0f} ms ({c['speedup']}x faster)"
    )


def format_summary(summary: Sequence[dict[str, Any]]) -> str:
    lines = [
        f"{'strategy':<16} {'difficulty':<13} {'n':>4} {'accuracy':>9} {'majority':>9} {'Δ':>7} "
        f"{'mean ms':>8} {'steps':>6} {'LLM path':>9}"
    ]
    for r in summary:
        delta = (r["accuracy"] - r["majority_baseline"]) * 100
        lines.append(
            f"{r['strategy']:<16} {r['difficulty']:<13} {r['n']:>4} {r['accuracy']:>9.1%} "
            f"{r['majority_baseline']:>9.1%} {delta:>+6.1f}pt {r['mean_ms']:>8.0f} {r['mean_steps']:>6.2f} "
            f"{r['llm_path_share']:>9.0%}"
        )
    if summary:
        lines.append(f"majority baseline: always answer option {summary[0]['majority_answer']}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="argo-xapp bench accuracy", description="ORAN-Bench multiple-choice accuracy by strategy."
    )
    p.add_argument("--questions", type=Path, required=True, help="an ORAN-Bench .jsonl/.json file or a folder")
    p.add_argument(
        "--strategy",
        action="append",
        choices=STRATEGIES,
        help="strategy to evaluate (repeatable; default: the configured one, mdp)",
    )
    p.add_argument(
        "--limit", type=int, help="at most N questions, taken round-robin over the difficulties (in file order)"
    )
    p.add_argument("--deadline-ms", type=int, help="per-question deadline (default: settings, 1000)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up questions, not scored (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--compare-baseline",
        type=int,
        nargs="?",
        const=10,
        default=0,
        metavar="N",
        help="also answer the first N questions (default 10) the seed's way: transformers generate, sequential, "
        "same model; prints both accuracies and the latency ratio",
    )
    add_run_options(p)
    return p


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    if args.limit is not None and args.limit < 1:
        raise ArgoError(f"--limit must be >= 1, got {args.limit}")
    if args.warmup < 0:
        raise ArgoError(f"--warmup must be >= 0, got {args.warmup}")
    settings = bench_settings(args.data_dir, args.model, args.deadline_ms)
    loaded = load_questions(args.questions)
    for why in loaded.skipped:
        print(f"skipped {why}", file=sys.stderr)
    rows = interleave_by_difficulty(loaded.rows, args.limit)
    strategies = list(dict.fromkeys(args.strategy or [settings.strategy]))
    report = asyncio.run(
        run_accuracy(
            settings,
            rows,
            args.out,
            strategies=strategies,
            deadline_ms=float(settings.deadline_ms),
            warmup=args.warmup,
            progress=not args.no_progress,
            skipped=loaded.skipped,
            baseline_sample=min(args.compare_baseline, len(rows)),
        )
    )
    print(format_summary(report.summary))
    if "baseline_comparison" in report.run:
        print(format_comparison(report.run["baseline_comparison"]))
    print("wrote " + ", ".join(str(f) for f in report.files), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
