"""Template-path accuracy on the ORAN-Bench dev split, next to the majority baseline, by difficulty.

    .venv/bin/python bench/template_accuracy.py [--questions ../shared/data/oranbench-dev] [--limit N]
        [--deadline-ms 1000] [--data-dir D] [--out DIR]

The template strategy answers with no LLM at all (template decomposition, Chroma retrieval, the
evidence-based option scorer), each question inside the deadline like a request to the xApp. The majority
baseline always answers the most common answer index of the same rows. A thin front end over
``argo-xapp bench accuracy --strategy template`` (``xapp.bench.accuracy``), which also writes the CSVs
and the plot into ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from xapp.bench.accuracy import run_accuracy
from xapp.bench.common import bench_settings, interleave_by_difficulty, load_questions
from xapp.errors import ArgoError

DEV_SPLIT = Path(__file__).resolve().parents[2] / "shared" / "data" / "oranbench-dev"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--questions", type=Path, default=DEV_SPLIT, help=f"default: {DEV_SPLIT}")
    p.add_argument("--limit", type=int, help="at most N questions, round-robin over difficulties")
    p.add_argument("--deadline-ms", type=int, help="per-question deadline (default: settings, 1000)")
    p.add_argument("--data-dir", type=Path, help="default: $ARGO_DATA_DIR or the per-user dir")
    p.add_argument("--out", type=Path, help="CSVs and plot go here (default: a temporary folder)")
    args = p.parse_args(argv)
    try:
        settings = bench_settings(args.data_dir, None, args.deadline_ms)
        loaded = load_questions(args.questions)
        rows = interleave_by_difficulty(loaded.rows, args.limit)
        out = args.out or Path(tempfile.mkdtemp(prefix="template-accuracy-"))
        report = asyncio.run(
            run_accuracy(
                settings,
                rows,
                out,
                strategies=["template"],
                deadline_ms=float(settings.deadline_ms),
                skipped=loaded.skipped,
            )
        )
    except ArgoError as exc:
        print(f"template_accuracy: error: {exc}", file=sys.stderr)
        return 2
    print(f"Template path on {args.questions} ({len(rows)} questions, deadline {settings.deadline_ms} ms)")
    for why in loaded.skipped:
        print(f"  skipped {why}")
    print(f"{'difficulty':<13} {'n':>4} {'template':>9} {'majority':>9} {'Δ':>8} {'mean ms':>8} {'in time':>8}")
    for r in report.summary:
        print(
            f"{r['difficulty']:<13} {r['n']:>4} {r['accuracy']:>9.1%} {r['majority_baseline']:>9.1%} "
            f"{(r['accuracy'] - r['majority_baseline']) * 100:>+6.1f}pt {r['mean_ms']:>8.0f} {r['pass_rate']:>8.0%}"
        )
    print(
        f"majority baseline: always answer option {report.summary[0]['majority_answer']} "
        f"(per difficulty, its own most common option would score "
        + ", ".join(f"{r['difficulty']} {r['group_majority_baseline']:.1%}" for r in report.summary)
        + ")"
    )
    print(f"files: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
