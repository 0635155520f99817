"""``argo-xapp bench answers``: open answers on our evaluation set — do they contain the key facts, and cite?

    argo-xapp bench answers --data-dir D [--questions bench/data/oran_sc_eval.jsonl] [--strategy S ...]
                            [--deadline-ms 5000] [--limit N] [--warmup N] [--model M] --out DIR

Each question of the set (grounded in the O-RAN SC docs; ingest them into ``--data-dir`` first, e.g. with
``argo-xapp ingest ../shared/data/oran-sc-docs --data-dir D``) is asked **without its options**, as an operator
would, under the deadline. An answer *has its facts* when it contains every one of the row's ``key_facts``
(case, spacing and markdown aside); it *cites its source* when a source named in its text (the LLM cites
evidence as ``[n]``, which the pipeline resolves to ``[source]``) is the file that holds the answer. Retrieval
is credited apart (``source_retrieved``: some step retrieved a passage of that file), so a wrong answer shows
whether retrieval or synthesis lost it. Writes ``answers_results.csv``, ``answers_summary.csv`` and
``answers_run.json`` into ``--out`` and prints the summary.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xapp.bench.common import (
    EVAL_QUESTIONS,
    RUN_COLUMNS,
    RUN_SUMMARY_COLUMNS,
    EvalQuestion,
    add_run_options,
    bench_settings,
    load_eval,
    machine_info,
    matches,
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
from xapp.domain import Answer, PathKind, Question
from xapp.errors import ArgoError
from xapp.policy.strategies import make_strategy

DEFAULT_DEADLINE_MS = 5000

RESULT_COLUMNS = (
    "strategy",
    "id",
    "kind",
    "question",
    "key_facts",
    "facts_found",
    "has_facts",
    "cites_source",
    "source_retrieved",
    "path",
    *RUN_COLUMNS,
    "completion_tokens",
    "answer",
    "fallback_reason",
)
SUMMARY_COLUMNS = (
    "strategy",
    "n",
    "has_facts",
    "fact_share",
    "cites_source",
    "source_retrieved",
    "llm_path_share",
    *RUN_SUMMARY_COLUMNS,
)

_CITED = re.compile(r"\[([^\[\]]+)\]")


def normalise(text: str) -> str:
    """Lower case, markdown emphasis and code marks dropped, runs of spaces as one."""
    return " ".join(re.sub(r"[*`_]", "", text).lower().split())


def facts_found(answer: str, facts: Sequence[str]) -> list[str]:
    text = normalise(answer)
    return [f for f in facts if normalise(f) in text]


def cited_sources(answer: str) -> list[str]:
    """The sources an answer names in brackets ("[a.md]" or "[a.md; b.md]")."""
    return [s.strip() for group in _CITED.findall(answer) for s in group.split(";") if s.strip()]


def score(q: EvalQuestion, answer: Answer) -> dict[str, Any]:
    found = facts_found(answer.answer, q.key_facts)
    return {
        "key_facts": " | ".join(q.key_facts),
        "facts_found": len(found),
        "has_facts": bool(q.key_facts) and len(found) == len(q.key_facts),
        "cites_source": any(matches(s, t) for s in cited_sources(answer.answer) for t in q.targets),
        "source_retrieved": any(matches(s, t) for s in answer.sources for t in q.targets),
    }


async def _answer_all(
    pipeline: Any, questions: Sequence[EvalQuestion], strategy: str, deadline_ms: float, progress: bool
) -> list[dict[str, Any]]:
    from tqdm import tqdm

    out: list[dict[str, Any]] = []
    for q in tqdm(questions, desc=strategy, unit="q", disable=not progress, file=sys.stderr):
        answer, timing = await timed_answer(pipeline, Question(q.question), strategy, deadline_ms)
        out.append(
            {
                "strategy": strategy,
                "id": q.id,
                "kind": q.kind,
                "question": q.question,
                **score(q, answer),
                "path": answer.path.value,
                **timing,
                "completion_tokens": answer.synthesis_usage.completion_tokens,
                "answer": answer.answer,
                "fallback_reason": answer.fallback_reason or "",
            }
        )
    return out


def summarize(results: Sequence[dict[str, Any]], deadline_ms: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for strategy in dict.fromkeys(r["strategy"] for r in results):
        group = [r for r in results if r["strategy"] == strategy]
        n = len(group)
        facts = sum(len(r["key_facts"].split(" | ")) for r in group if r["key_facts"])
        rows.append(
            {
                "strategy": strategy,
                "n": n,
                "has_facts": sum(bool(r["has_facts"]) for r in group) / n,
                "fact_share": sum(r["facts_found"] for r in group) / facts if facts else 0.0,
                "cites_source": sum(bool(r["cites_source"]) for r in group) / n,
                "source_retrieved": sum(bool(r["source_retrieved"]) for r in group) / n,
                "llm_path_share": sum(r["path"] == PathKind.LLM.value for r in group) / n,
                **run_summary(group, deadline_ms),
            }
        )
    return rows


async def run_answers(
    settings: Settings,
    questions: Sequence[EvalQuestion],
    out: Path,
    *,
    strategies: Sequence[str],
    deadline_ms: float,
    warmup: int = 1,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from xapp.pipeline.runner import build_pipeline

    settings = settings.replace(max_deadline_ms=max(settings.max_deadline_ms, int(deadline_ms)))
    if not any(make_strategy(s, settings).uses_llm for s in strategies):
        settings = settings.replace(llm=False)  # template only: no engine to start
    prepare_out(out)
    run: dict[str, Any] = {
        "strategies": list(strategies),
        "questions": len(questions),
        "deadline_ms": deadline_ms,
        "settings": settings.to_dict(),
        "machine_before": machine_info(),
    }
    results: list[dict[str, Any]] = []
    t0 = time.monotonic()
    async with build_pipeline(settings) as pipeline:
        run["startup_s"] = round(time.monotonic() - t0, 2)
        run["model"] = pipeline.model_name or None
        # What the planner believed of the LLM's costs after start-up and after each strategy: the first
        # strategy runs while the online estimates settle from the start-up calibration.
        run["llm_costs"] = {"startup": pipeline.costs.snapshot()}
        run["chunks"] = pipeline.kb.count() if pipeline.kb is not None else 0
        for wq in warmup_questions(warmup):
            deadline = request_deadline(pipeline.settings, deadline_ms, time.monotonic())
            await pipeline.answer(Question(wq.text), strategy=strategies[0], deadline=deadline)
        start_costs = pipeline.costs.state()
        for strategy in strategies:
            await same_start(pipeline, start_costs)  # each strategy from where the first began
            started = time.monotonic()
            results += await _answer_all(pipeline, questions, strategy, deadline_ms, progress)
            run.setdefault("strategy_seconds", {})[strategy] = round(time.monotonic() - started, 1)
            run["llm_costs"][strategy] = pipeline.costs.snapshot()
    run["machine_after"] = {"loadavg_1_5_15": machine_info().get("loadavg_1_5_15")}
    summary = summarize(results, deadline_ms)
    write_csv(out / "answers_results.csv", RESULT_COLUMNS, results)
    write_csv(out / "answers_summary.csv", SUMMARY_COLUMNS, summary)
    write_json(out / "answers_run.json", run)
    return summary, run


def format_summary(summary: Sequence[dict[str, Any]]) -> str:
    lines = [
        f"{'strategy':<16} {'n':>4} {'facts':>7} {'cites':>7} {'retrieved':>9} {'LLM':>5} {'mean ms':>8} "
        f"{'max ms':>7} {'in time':>7} {'steps':>6} {'evid.':>6} {'repeats':>7}"
    ]
    for r in summary:
        lines.append(
            f"{r['strategy']:<16} {r['n']:>4} {r['has_facts']:>7.1%} {r['cites_source']:>7.1%} "
            f"{r['source_retrieved']:>9.1%} {r['llm_path_share']:>5.0%} {r['mean_ms']:>8.0f} {r['max_ms']:>7.0f} "
            f"{r['pass_rate']:>7.0%} {r['mean_steps']:>6.2f} {r['evidence_step_share']:>6.0%} "
            f"{r['repeated_queries']:>7}"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="argo-xapp bench answers",
        description="Open answers on the evaluation set: key facts present, source cited, by strategy.",
        epilog="example: argo-xapp bench answers --data-dir /tmp/argo-docs --strategy mdp --strategy template "
        "--out results/answers",
    )
    p.add_argument(
        "--questions", type=Path, default=EVAL_QUESTIONS, help=f"evaluation set (.jsonl; default {EVAL_QUESTIONS})"
    )
    p.add_argument(
        "--strategy", action="append", choices=STRATEGIES, help="strategy to evaluate (repeatable; default mdp)"
    )
    p.add_argument("--limit", type=int, help="only the first N questions")
    p.add_argument(
        "--deadline-ms",
        type=int,
        default=DEFAULT_DEADLINE_MS,
        help=f"per-question deadline (default {DEFAULT_DEADLINE_MS}: open answers are written, not picked)",
    )
    p.add_argument("--warmup", type=int, default=1, help="warm-up questions, not scored (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_run_options(p)
    return p


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    if args.limit is not None and args.limit < 1:
        raise ArgoError(f"--limit must be >= 1, got {args.limit}")
    settings = bench_settings(args.data_dir, args.model, args.deadline_ms)
    questions = load_eval(args.questions)[: args.limit]
    strategies = list(dict.fromkeys(args.strategy or [settings.strategy]))
    summary, _ = asyncio.run(
        run_answers(
            settings,
            questions,
            args.out,
            strategies=strategies,
            deadline_ms=float(settings.deadline_ms),
            warmup=args.warmup,
            progress=not args.no_progress,
        )
    )
    print(format_summary(summary))
    print(f"wrote answers_results.csv, answers_summary.csv, answers_run.json into {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
