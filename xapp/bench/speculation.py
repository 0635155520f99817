"""``argo-xapp bench speculation``: does n-gram (prompt-lookup) speculative decoding speed up our answers?

    argo-xapp bench speculation [--tokens 3] [--answers 12] [--choices 40] [--model M] [--data-dir D] --out DIR

Two engines of the same model side by side — one plain, one with ``ngram_speculation`` — each in its own
engine-core process (vLLM's multiprocess mode; a process holds one in-process engine). The same prompts go to
both, one at a time, alternating which goes first, so both see the same machine load:

* **answers**: open answers grounded in evidence (the synthesizer's prompt with the supporting passages of the
  first rows of ``bench/data/oran_sc_eval.jsonl``), greedy, 48 tokens: time to first token and decode time per
  token, and whether both wrote the same text (greedy speculation must not change it);
* **choices**: option choices (one prefill and one token) on ORAN-Bench dev questions: their latency.

Writes ``speculation_results.csv`` and ``speculation_summary.csv`` into ``--out`` and prints the ratios. Needs
memory for two engines (about 2 × 3 GiB for the 1.5B with a 0.5 GiB KV cache).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xapp.bench.common import (
    EVAL_QUESTIONS,
    add_run_options,
    bench_settings,
    describe,
    load_questions,
    machine_info,
    prepare_out,
    write_csv,
    write_json,
)
from xapp.domain import Action, Passage, PathKind, Question, Step
from xapp.errors import ArgoError
from xapp.llm import prompts
from xapp.llm.base import Message

DEV_QUESTIONS = Path(__file__).resolve().parents[3] / "shared" / "data" / "oranbench-dev"
RESULT_COLUMNS = ("kind", "index", "engine", "prompt_tokens", "tokens", "ttft_ms", "decode_ms_per_token", "total_ms",
                  "same_text")  # fmt: skip
SUMMARY_COLUMNS = ("kind", "engine", "n", "ttft_ms_median", "decode_ms_per_token_median", "decode_ms_per_token_mean",
                   "total_ms_median", "same_text")  # fmt: skip


def answer_prompts(n: int) -> list[list[Message]]:
    """The synthesizer's open-answer prompt, with each row's supporting sentence and three others as evidence."""
    rows = [json.loads(line) for line in EVAL_QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = rows[:n]
    others = " ".join(r["support"] for r in rows[:3])
    out = []
    for r in rows:
        passages = [Passage("p0", r["support"], r["source"], "", 0.8), Passage("p1", others, "other.md", "", 0.7)]
        step = Step(Action.RETRIEVE, PathKind.TEMPLATE, 0.0, 0.3, 1.0, query=r["question"], passages=passages)
        out.append(prompts.answer_variants(Question(r["question"]), [step])[0].messages)
    return out


async def _start(settings: Any, speculation: int) -> Any:
    from vllm.v1.engine.async_llm import AsyncLLM

    from xapp.llm.engine import EngineConfig, _environment, configure_environment, engine_args
    from xapp.llm.models import resolve_model

    config = EngineConfig.from_settings(settings, multiprocessing=True, kv_cache_gib=0.5, ngram_speculation=speculation)
    model = resolve_model(config.model, config.models_dir, int8_default=True)
    _, spawn_env = configure_environment(config, is_cpu=True)
    with _environment(spawn_env):
        return AsyncLLM.from_engine_args(engine_args(config, model, is_cpu=True))


async def _one(llm: Any, ids: list[int], request_id: str, max_tokens: int) -> dict[str, Any]:
    from vllm.sampling_params import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, logprobs=1 if max_tokens == 1 else None)
    started = time.monotonic()
    first: float | None = None
    tokens, text = 0, ""
    async for out in llm.generate({"prompt_token_ids": ids}, params, request_id):
        if first is None and out.outputs[0].token_ids:
            first = time.monotonic()
        tokens, text = len(out.outputs[0].token_ids), out.outputs[0].text
    ended = time.monotonic()
    first = first or ended
    return {
        "prompt_tokens": len(ids),
        "tokens": tokens,
        "ttft_ms": (first - started) * 1000.0,
        "decode_ms_per_token": (ended - first) * 1000.0 / max(tokens - 1, 1),
        "total_ms": (ended - started) * 1000.0,
        "text": text,
    }


async def run_speculation(settings: Any, out: Path, *, tokens: int, answers: int, choices: int) -> list[dict[str, Any]]:
    prepare_out(out)
    run: dict[str, Any] = {"speculative_tokens": tokens, "machine_before": machine_info()}
    engines = {"plain": await _start(settings, 0), f"ngram-{tokens}": await _start(settings, tokens)}
    tokenizer = engines["plain"].get_tokenizer()
    results: list[dict[str, Any]] = []
    try:
        work: list[tuple[str, list[Message], int]] = [("answer", m, 48) for m in answer_prompts(answers)]
        if choices:
            dev = load_questions(DEV_QUESTIONS).rows[:choices]
            work += [("choice", prompts.choose_variants(q.question(), [])[0].messages, 1) for q in dev]
        for i, (kind, messages, max_tokens) in enumerate(work):
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids = tokenizer.encode(text, add_special_tokens=False)
            names = list(engines) if i % 2 == 0 else list(reversed(engines))
            pair = {name: await _one(engines[name], ids, f"{name}-{i}", max_tokens) for name in names}
            same = len({r["text"] for r in pair.values()}) == 1
            for name, r in pair.items():
                results.append({"kind": kind, "index": i, "engine": name, **r, "same_text": same})
    finally:
        for engine in engines.values():
            engine.shutdown()
    summary = []
    for kind in ("answer", "choice"):
        for name in engines:
            mine = [r for r in results if r["kind"] == kind and r["engine"] == name]
            if not mine:
                continue
            summary.append(
                {
                    "kind": kind,
                    "engine": name,
                    "n": len(mine),
                    "ttft_ms_median": describe([r["ttft_ms"] for r in mine])["median"],
                    "decode_ms_per_token_median": describe([r["decode_ms_per_token"] for r in mine])["median"],
                    "decode_ms_per_token_mean": describe([r["decode_ms_per_token"] for r in mine])["mean"],
                    "total_ms_median": describe([r["total_ms"] for r in mine])["median"],
                    "same_text": sum(bool(r["same_text"]) for r in mine) / len(mine),
                }
            )
    run["machine_after"] = {"loadavg_1_5_15": machine_info().get("loadavg_1_5_15")}
    write_csv(out / "speculation_results.csv", RESULT_COLUMNS, results)
    write_csv(out / "speculation_summary.csv", SUMMARY_COLUMNS, summary)
    write_json(out / "speculation_run.json", run)
    return summary


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="argo-xapp bench speculation",
        description="n-gram speculative decoding vs none, same model and prompts, side by side.",
    )
    p.add_argument("--tokens", type=int, default=3, help="tokens proposed per step (default 3)")
    p.add_argument("--answers", type=int, default=12, help="evidence-grounded open answers (default 12)")
    p.add_argument("--choices", type=int, default=40, help="option choices on ORAN-Bench dev questions (default 40)")
    add_run_options(p)
    return p


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    if not 1 <= args.tokens <= 8:
        raise ArgoError(f"--tokens must be in 1..8, got {args.tokens}")
    settings = bench_settings(args.data_dir, args.model, None)
    summary = asyncio.run(
        run_speculation(settings, args.out, tokens=args.tokens, answers=args.answers, choices=args.choices)
    )
    for r in summary:
        print(
            f"{r['kind']:<7} {r['engine']:<8} n={r['n']:<3} ttft {r['ttft_ms_median']:7.0f} ms  decode "
            f"{r['decode_ms_per_token_median']:6.1f} ms/token  total {r['total_ms_median']:7.0f} ms  "
            f"same text {r['same_text']:.0%}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
