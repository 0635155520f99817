"""What the LLM costs across HTTP, and what an xApp replica without an engine spends per request.

Start a vLLM OpenAI-compatible server first (docs/scaling.md has the exact command), then::

    argo-xapp bench remote --url http://127.0.0.1:18917 --tokenizer MODEL_DIR \
        --questions ../shared/data/oranbench-dev --n 20 --out results/remote

Three measurements, one after the other, on fresh ORAN-Bench questions each (interleaved by difficulty):

1. **Option choice over HTTP** (``RemoteLLM.choose``, closed-book prompt): the client's time per call against
   the server's own end-to-end time for it (``vllm:e2e_request_latency_seconds`` from ``/metrics``, read
   before and after each call, calls one at a time). Their difference is what the HTTP hop adds: request
   encoding, the TCP round trip, SSE parsing, and the server's HTTP layer.
2. **Concurrent option choices** (``--concurrency`` levels, ``--rounds`` bursts each, fresh questions): the
   choices per second one server sustains and their latency, as several replicas would load it.
3. **Answers through the pipeline** (``build_pipeline`` with ``llm_url``, the built-in knowledge base,
   ``--deadline-ms``; the next ``--n`` questions, so that none is in the server's prefix cache yet): wall
   time, path, and the CPU time this process spent per answer (``time.process_time``: retrieval, embedding,
   templates, prompt rendering, the HTTP client) — the cost of one request on an xApp replica, which sizes
   the replicas (docs/scaling.md).

Writes ``remote.csv`` (one row per call) and ``remote.json`` (the summary) under ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from xapp.bench.common import counts, interleave_by_difficulty, load_questions, percentile, write_csv, write_json
from xapp.config import Settings
from xapp.domain import Question
from xapp.errors import ArgoError
from xapp.llm import prompts
from xapp.llm.remote import RemoteConfig, RemoteLLM


def server_e2e(url: str) -> tuple[float, float]:
    """(sum of seconds, count) of the server's e2e request latency histogram."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    total = count = 0.0
    for line in text.splitlines():
        m = re.match(r"^vllm:e2e_request_latency_seconds_(sum|count)(?:\{[^}]*\})? ([-+0-9.e]+)$", line)
        if m:
            if m.group(1) == "sum":
                total += float(m.group(2))
            else:
                count += float(m.group(2))
    return total, count


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from xapp.pipeline.runner import build_pipeline

    levels = args.concurrency
    burst = sum(levels) * args.rounds
    rows = interleave_by_difficulty(load_questions(args.questions).rows, 2 * args.n + burst)
    asked = [Question(r.text, tuple(prompts.strip_option_number(o) for o in r.options)) for r in rows]
    # Different questions for each part: none may find another's prompts in the prefix cache.
    questions, answered, bursts = asked[: args.n], asked[args.n : 2 * args.n], asked[2 * args.n :]
    concurrent: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []

    config = RemoteConfig(url=args.url, tokenizer=args.tokenizer)
    async with RemoteLLM.start(config, wait_s=30) as llm:
        if not llm.is_running:
            raise ArgoError(f"no LLM server at {args.url}: {llm.last_error}")
        warm = prompts.choose_variants(questions[0], [])[0].messages
        await llm.choose(warm, prompts.option_labels(questions[0]), deadline=time.monotonic() + 60)
        for q in questions:
            messages = prompts.choose_variants(q, [])[0].messages
            s0, c0 = server_e2e(args.url)
            choice = await llm.choose(messages, prompts.option_labels(q), deadline=time.monotonic() + 60)
            s1, c1 = server_e2e(args.url)
            server_s = (s1 - s0) if c1 - c0 == 1 else float("nan")
            out.append(
                {
                    "kind": "choose",
                    "prompt_tokens": choice.prompt_tokens,
                    "cached_tokens": choice.cached_tokens,
                    "client_ms": choice.total_s * 1000,
                    "server_ms": server_s * 1000,
                    "hop_ms": (choice.total_s - server_s) * 1000,
                    "path": "",
                    "cpu_ms": float("nan"),
                }
            )
        # Several option choices at once, as several replicas would send them: what one server sustains.
        for level in levels:
            walls, latencies = [], []
            for _ in range(args.rounds):
                batch, bursts = bursts[:level], bursts[level:]
                t0 = time.monotonic()
                done = await asyncio.gather(
                    *(
                        llm.choose(
                            prompts.choose_variants(q, [])[0].messages,
                            prompts.option_labels(q),
                            deadline=time.monotonic() + 60,
                        )
                        for q in batch
                    )
                )
                walls.append(time.monotonic() - t0)
                latencies += [c.total_s for c in done]
            concurrent.append(
                {
                    "concurrency": level,
                    "choices_per_s": level * args.rounds / sum(walls),
                    "latency_ms_mean": statistics.mean(latencies) * 1000,
                    "latency_ms_max": max(latencies) * 1000,
                }
            )

    settings = Settings(data_dir=args.data_dir, llm_url=args.url, llm_tokenizer=args.tokenizer).validate()
    async with build_pipeline(settings) as pipeline:
        costs = pipeline.costs.snapshot()
        for q in answered:
            cpu0, t0 = time.process_time(), time.monotonic()
            answer = await pipeline.answer(q, deadline=time.monotonic() + args.deadline_ms / 1000)
            wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
            out.append(
                {
                    "kind": "answer",
                    "prompt_tokens": "",
                    "cached_tokens": "",
                    "client_ms": wall * 1000,
                    "server_ms": float("nan"),
                    "hop_ms": float("nan"),
                    "path": answer.path.value,
                    "cpu_ms": cpu * 1000,
                }
            )

    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "remote.csv", list(out[0]), out)
    chooses = [r for r in out if r["kind"] == "choose"]
    answers = [r for r in out if r["kind"] == "answer"]
    hops = [r["hop_ms"] for r in chooses if r["hop_ms"] == r["hop_ms"]]
    summary = {
        "n": len(questions),
        "choose_client_ms_mean": statistics.mean(r["client_ms"] for r in chooses),
        "choose_client_ms_p95": percentile([r["client_ms"] for r in chooses], 95),
        "choose_server_ms_mean": statistics.mean(r["server_ms"] for r in chooses if r["server_ms"] == r["server_ms"]),
        "choose_prompt_tokens_mean": statistics.mean(r["prompt_tokens"] for r in chooses),
        "hop_ms_mean": statistics.mean(hops),
        "hop_ms_p95": percentile(hops, 95),
        "answer_wall_ms_mean": statistics.mean(r["client_ms"] for r in answers),
        "answer_wall_ms_max": max(r["client_ms"] for r in answers),
        "answer_cpu_ms_mean": statistics.mean(r["cpu_ms"] for r in answers),
        "answer_cpu_ms_p95": percentile([r["cpu_ms"] for r in answers], 95),
        "answers_by_path": {p: sum(r["path"] == p for r in answers) for p in sorted({r["path"] for r in answers})},
        "inside_deadline": sum(r["client_ms"] <= args.deadline_ms for r in answers),
        "concurrent_choices": concurrent,
        "cost_model_after_calibration": costs,
    }
    write_json(args.out / "remote.json", summary)
    return summary


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="argo-xapp bench remote", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="the vLLM server, e.g. http://127.0.0.1:18917")
    p.add_argument("--tokenizer", required=True, help="the served model's folder (tokenizer, chat template)")
    p.add_argument("--questions", type=Path, required=True)
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--deadline-ms", type=int, default=1000)
    p.add_argument("--concurrency", type=counts, default=[1, 2, 4], help="concurrent option choices, per level")
    p.add_argument("--rounds", type=int, default=3, help="bursts per concurrency level")
    p.add_argument("--data-dir", type=Path, default=Path("/tmp/argo-remote-bench"))
    p.add_argument("--out", type=Path, default=Path("results/remote"))
    print(json.dumps(asyncio.run(run(p.parse_args(list(argv)))), indent=2))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
