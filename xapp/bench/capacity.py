"""``argo-xapp bench capacity``: how many option choices a second the LLM makes on this machine.

    argo-xapp bench capacity --questions ../shared/data/oranbench-dev [--choices 32] [--batch 1,2,4,8] --out DIR

The closed-book option choice — the leanest prompt the planner sends: the question and its options, one
prefill and one token — for the first ``--choices`` multiple-choice questions of the set, after a warm-up.
For each batch size k the same questions go to the engine k at a time (vLLM prefills those that wait
together, in one step), with the prefix cache reset first so that only the shared system turn is cached,
as for a question never seen before. Per k it reports choices per second with the engine to itself, how long
one group took (what a caller in it waits, to hold against the deadline) and the uncached prompt tokens per
choice.

That figure bounds what the load test can show (docs/load.md): N closed-loop callers at a deadline of D
seconds send at least N / D questions a second, so the LLM can choose for a share s of the multiple-choice
ones only if it makes s × N / D × (their fraction) choices a second — with retrieval, the template path and
the bench client sharing the same cores.

Writes ``capacity.csv`` and ``capacity_run.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from xapp.bench.common import (
    BenchQuestion,
    add_run_options,
    bench_settings,
    counts,
    load_questions,
    machine_info,
    prepare_out,
    write_csv,
    write_json,
)
from xapp.config import Settings
from xapp.errors import ArgoError
from xapp.llm import prompts

COLUMNS = ("batch", "choices", "seconds", "choices_per_s", "group_ms_mean", "group_ms_max", "uncached_tokens_mean")
NO_DEADLINE_S = 600.0  # the engine's own speed is measured: nothing is aborted


async def run_capacity(
    settings: Settings, rows: Sequence[BenchQuestion], out: Path, *, batches: Sequence[int], llm: Any = None
) -> list[dict[str, Any]]:
    """One row per batch size; ``llm``: an engine already running (tests), else the configured one is started."""
    questions = [r.question() for r in rows if r.options]
    if not questions:
        raise ArgoError("no multiple-choice questions to measure with")
    prepare_out(out)
    run: dict[str, Any] = {"machine_before": machine_info(), "batches": list(batches), "choices": len(questions)}
    async with AsyncExitStack() as stack:
        if llm is None:
            from xapp.llm.engine import VLLMEngine

            llm = await stack.enter_async_context(VLLMEngine.start(settings))
        run["model"] = llm.model_name

        async def choose(question: Any) -> Any:
            messages = prompts.choose_variants(question, [])[0].messages
            deadline = time.monotonic() + NO_DEADLINE_S
            return await llm.choose(messages, prompts.option_labels(question), deadline=deadline)

        await choose(questions[0])  # warm-up
        results = []
        for k in batches:
            await llm.reset_prefix_cache()
            await choose(questions[0])  # the shared system turn back in the cache
            groups, tokens, t0 = [], 0, time.monotonic()
            for i in range(0, len(questions), k):
                g0 = time.monotonic()
                chosen = await asyncio.gather(*(choose(q) for q in questions[i : i + k]))
                groups.append(time.monotonic() - g0)
                tokens += sum(c.prompt_tokens - c.cached_tokens for c in chosen)
            seconds = time.monotonic() - t0
            results.append(
                {
                    "batch": k,
                    "choices": len(questions),
                    "seconds": round(seconds, 3),
                    "choices_per_s": round(len(questions) / seconds, 3),
                    "group_ms_mean": round(sum(groups) / len(groups) * 1000.0, 1),
                    "group_ms_max": round(max(groups) * 1000.0, 1),
                    "uncached_tokens_mean": round(tokens / len(questions), 1),
                }
            )
    run["machine_after"] = {"loadavg_1_5_15": machine_info().get("loadavg_1_5_15")}
    write_csv(out / "capacity.csv", COLUMNS, results)
    write_json(out / "capacity_run.json", {**run, "results": results})
    return results


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="argo-xapp bench capacity",
        description="Closed-book option choices per second on this machine, one at a time and k together.",
    )
    p.add_argument("--questions", type=Path, required=True, help="ORAN-Bench file or folder (multiple choice)")
    p.add_argument("--choices", type=int, default=32, help="questions to measure with (default 32)")
    p.add_argument("--batch", type=counts, default=[1, 2, 4, 8], help="batch sizes (default 1,2,4,8)")
    add_run_options(p)
    return p


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    if args.choices < 1:
        raise ArgoError(f"--choices must be at least 1, got {args.choices}")
    rows = load_questions(args.questions).rows[: args.choices]
    settings = bench_settings(args.data_dir, args.model, None)
    for r in asyncio.run(run_capacity(settings, rows, args.out, batches=args.batch)):
        print(
            f"batch {r['batch']:>2}: {r['choices_per_s']:5.2f} choices/s, a group in {r['group_ms_mean']:6.0f} ms "
            f"(max {r['group_ms_max']:.0f}), {r['uncached_tokens_mean']:.0f} uncached prompt tokens a choice"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
