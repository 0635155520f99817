"""Engine benchmark: vLLM (as the xApp runs it) against the seed's way, HF transformers ``generate``.

    argo-xapp bench engine --out results/engine

For each model — the offline default (SmolLM2-135M-Instruct) in bf16 and int8 W8A8 (what the engine serves
on CPU) and a random-weight model of Qwen2.5-0.5B's shape in bf16 and W8A8 — it measures, each engine in a
fresh process:

* ``start_s``: engine start-up (vLLM import, model load, KV cache), or ``from_pretrained`` for HF;
* ``prefill_ms``: time to first token of a prompt nothing is cached for (a nonce leads it);
* ``prefill_cached_ms``: the same with the shared system prefix already in the prefix cache (vLLM only),
  ``cached_tokens`` how many prompt tokens came from the cache;
* ``decode_tok_s``: single-stream decode rate, (tokens - 1) / (total - TTFT), median of ``--repeats``;
* ``tok_s_4``: aggregate output tokens/s with 4 requests in flight (HF: the 4 run one after the other,
  as the seed did), and ``stream_tok_s_4`` the per-request decode rate within that.

Both engines use one OpenMP thread per core but one (the engine's default, docs/engine.md).

Writes ``engine.csv`` and ``engine.json`` under ``--out`` and prints vLLM/HF ratios from this one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xapp.bench.common import SERVICE_QUESTIONS, machine_info, write_csv, write_json

SYSTEM = (
    "You are an assistant inside an O-RAN near-RT RIC xApp. Answer questions about the O-RAN architecture, "
    "its interfaces (E2, A1, O1, O2, open fronthaul), the near-RT and non-RT RICs, xApps and rApps, and the "
    "E2 service models. Use the retrieved passages when they are given, be brief and exact, and say so when "
    "the passages do not contain the answer. For multiple-choice questions answer with the option number."
)
# Four open questions of the shared mix, one per request of the concurrent measurement.
QUESTIONS = [q.text for q in SERVICE_QUESTIONS if not q.options][:4]
MODELS = ("default", "default-w8a8", "qwen0.5b-bf16", "qwen0.5b-w8a8")
FIELDS = [
    "model", "variant", "engine", "mode", "start_s", "prompt_tokens", "prefill_ms", "prefill_cached_ms",
    "cached_tokens", "decode_tok_s", "tok_s_4", "stream_tok_s_4", "new_tokens", "load_before", "load_after",
]  # fmt: skip


def messages(question: str, nonce: str = "") -> list[dict[str, str]]:
    system = f"[{nonce}] {SYSTEM}" if nonce else SYSTEM
    return [{"role": "system", "content": system}, {"role": "user", "content": question}]


# ------------------------------------------------------------------------------------------------
# Model preparation (in the parent process)


def prepare(name: str, models_dir: Path) -> tuple[Path, str]:
    from xapp.bench.synthetic import QWEN25_05B, build_random_qwen2
    from xapp.llm.models import resolve_model
    from xapp.llm.quantize import quantize

    if name == "default":
        return Path(resolve_model("", models_dir).path), "bf16"
    if name == "default-w8a8":  # what the engine serves by default on CPU
        return Path(resolve_model("", models_dir, int8_default=True).path), "w8a8"
    bf16 = build_random_qwen2(models_dir / "random-qwen2.5-0.5b", QWEN25_05B, seed=0)
    if name == "qwen0.5b-bf16":
        return bf16, "bf16"
    w8a8 = models_dir / "random-qwen2.5-0.5b-w8a8"
    if not (w8a8 / "config.json").is_file():
        result = quantize(bf16, w8a8)
        print(f"quantized {bf16.name} → W8A8 in {result.seconds:.1f} s", flush=True)
    return w8a8, "w8a8"


# ------------------------------------------------------------------------------------------------
# Workers (each in its own process)


async def vllm_worker(model: Path, data_dir: Path, tokens: int, repeats: int) -> dict[str, Any]:
    from xapp.llm.engine import EngineConfig, VLLMEngine

    started = time.monotonic()
    config = EngineConfig(model=str(model), data_dir=data_dir, kv_cache_gib=1.0, max_model_len=2048)
    async with VLLMEngine.start(config) as engine:
        start_s = time.monotonic() - started

        async def gen(msgs: list[dict[str, str]], n: int) -> Any:
            return await engine.generate(msgs, max_tokens=n, deadline=time.monotonic() + 600, ignore_eos=True)

        await gen(messages(QUESTIONS[0], "warm-up"), 4)
        cold = [await gen(messages(q, uuid.uuid4().hex), 1) for q in QUESTIONS]
        await gen(messages(QUESTIONS[0]), 1)  # puts the shared system prefix in the cache
        before = engine.stats.cached_prompt_tokens
        cached = [await gen(messages(q), 1) for q in QUESTIONS[1:]]
        cached_tokens = (engine.stats.cached_prompt_tokens - before) / len(cached)
        single = [await gen(messages(QUESTIONS[i % 4]), tokens) for i in range(repeats)]
        t0 = time.monotonic()
        four = await asyncio.gather(*(gen(messages(q), tokens) for q in QUESTIONS))
        wall = time.monotonic() - t0
        assert engine.num_unfinished_requests() == 0
    return dict(
        start_s=start_s,
        prompt_tokens=statistics.median(g.prompt_tokens for g in cold),
        prefill_ms=1000 * statistics.median(g.ttft_s for g in cold),
        prefill_cached_ms=1000 * statistics.median(g.ttft_s for g in cached),
        cached_tokens=cached_tokens,
        decode_tok_s=statistics.median(_decode_rate(g.completion_tokens, g.ttft_s, g.total_s) for g in single),
        tok_s_4=sum(g.completion_tokens for g in four) / wall,
        stream_tok_s_4=statistics.median(_decode_rate(g.completion_tokens, g.ttft_s, g.total_s) for g in four),
        new_tokens=tokens,
    )


def hf_worker(model: Path, tokens: int, repeats: int) -> dict[str, Any]:
    """The seed's way: transformers ``generate``, greedy, one request at a time."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # The same thread policy as the engine (one OpenMP thread per core but one): with one thread per core,
    # idle threads spin on the cores others need, and on a shared host decoding collapses.
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) - 1))
    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(model)
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16).eval()
    start_s = time.monotonic() - started

    def prompt_ids(msgs: list[dict[str, str]]) -> Any:
        text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, return_tensors="pt", add_special_tokens=False)

    def run(msgs: list[dict[str, str]], n: int) -> tuple[int, float, float]:
        ids = prompt_ids(msgs)
        t0 = time.monotonic()
        with torch.inference_mode():
            first = lm.generate(**ids, max_new_tokens=1, min_new_tokens=1, do_sample=False)
        ttft = time.monotonic() - t0
        if n == 1:
            return first.shape[1] - ids["input_ids"].shape[1], ttft, ttft
        t0 = time.monotonic()
        with torch.inference_mode():
            out = lm.generate(**ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        total = time.monotonic() - t0
        # generate() has no streaming TTFT; take the separately measured prefill as the first token.
        return out.shape[1] - ids["input_ids"].shape[1], ttft, total

    run(messages(QUESTIONS[0], "warm-up"), 4)
    cold_prompts = [messages(q, uuid.uuid4().hex) for q in QUESTIONS]
    prompt_tokens = [len(prompt_ids(m)["input_ids"][0]) for m in cold_prompts]
    cold = [run(m, 1) for m in cold_prompts]
    single = [run(messages(QUESTIONS[i % 4]), tokens) for i in range(repeats)]
    t0 = time.monotonic()
    four = [run(messages(q), tokens) for q in QUESTIONS]
    wall = time.monotonic() - t0
    return dict(
        start_s=start_s,
        prompt_tokens=statistics.median(prompt_tokens),
        prefill_ms=1000 * statistics.median(t for _, t, _ in cold),
        prefill_cached_ms=None,
        decode_tok_s=statistics.median(_decode_rate(n, t, total) for n, t, total in single),
        tok_s_4=sum(n for n, _, _ in four) / wall,
        stream_tok_s_4=statistics.median(_decode_rate(n, t, total) for n, t, total in four),
        new_tokens=tokens,
    )


def _decode_rate(n: int, ttft: float, total: float) -> float:
    return (n - 1) / (total - ttft) if n > 1 and total > ttft else float("nan")


# ------------------------------------------------------------------------------------------------
# Driver


def run_worker(job: dict[str, Any], env: dict[str, str], timeout: float) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    proc = subprocess.run(
        [sys.executable, "-m", "xapp.bench.engine", "--worker", json.dumps(job)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"worker failed ({proc.returncode}): {job}")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    result.update(load_before=load_before, load_after=os.getloadavg()[0])
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="argo-xapp bench engine", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("results/engine"))
    parser.add_argument("--data-dir", type=Path, default=None, help="models and caches (default: the xApp's)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {MODELS}")
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per decode request")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-hf", action="store_true", help="skip the transformers baseline")
    parser.add_argument(
        "--mp",
        choices=("default", "both"),
        default="default",
        help="'both': run vLLM with the engine core in-process and with vLLM's multiprocess executor",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="per worker process, seconds")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        job = json.loads(args.worker)
        if job["engine"] == "vllm":
            result = asyncio.run(vllm_worker(Path(job["model"]), Path(job["data_dir"]), job["tokens"], job["repeats"]))
        else:
            result = hf_worker(Path(job["model"]), job["tokens"], job["repeats"])
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    from xapp.config import Settings

    data_dir = args.data_dir or Settings().data_dir
    models_dir = data_dir / "models"
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(names) - set(MODELS)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; choose from {MODELS}")
    modes = ["in-process", "multiprocess"] if args.mp == "both" else ["default"]
    rows: list[dict[str, Any]] = []
    for name in names:
        path, variant = prepare(name, models_dir)
        for mode in modes:
            env = dict(os.environ)
            if mode != "default":
                env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if mode == "multiprocess" else "0"
            job = dict(
                engine="vllm",
                model=str(path),
                data_dir=str(data_dir),
                tokens=args.tokens,
                repeats=args.repeats,
            )
            rows.append(
                dict(
                    model=name,
                    variant=variant,
                    engine="vllm",
                    mode=mode,
                    **run_worker(job, env, args.timeout),
                )
            )
            _print_row(rows[-1])
        if not args.no_hf and variant == "bf16":
            job = dict(engine="hf", model=str(path), tokens=args.tokens, repeats=args.repeats)
            rows.append(dict(model=name, variant=variant, engine="hf", mode="sequential",
                             **run_worker(job, dict(os.environ), args.timeout)))  # fmt: skip
            _print_row(rows[-1])

    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "engine.csv", FIELDS, rows)
    meta = dict(
        command=" ".join(["argo-xapp bench engine", *(sys.argv[1:] if argv is None else argv)]),
        machine=machine_info(),
        rows=rows,
    )
    write_json(args.out / "engine.json", meta)
    print(f"\nwrote {args.out / 'engine.csv'}")
    _print_ratios(rows)
    return 0


def _print_row(row: dict[str, Any]) -> None:
    print(" ".join(f"{k}={_fmt(row.get(k))}" for k in FIELDS if row.get(k) is not None), flush=True)


def _base(model: str) -> str:
    return model.removesuffix("-w8a8").removesuffix("-bf16")


def _print_ratios(rows: list[dict[str, Any]]) -> None:
    for hf in (r for r in rows if r["engine"] == "hf"):
        for v in (r for r in rows if r["engine"] == "vllm" and _base(r["model"]) == _base(hf["model"])):
            print(f"{v['model']} vLLM[{v['mode']}] / {hf['model']} HF: {_speedup(v, hf)}")
    bf16 = {(_base(r["model"]), r["mode"]): r for r in rows if r["variant"] == "bf16" and r["engine"] == "vllm"}
    for w8 in (r for r in rows if r["variant"] == "w8a8"):
        b = bf16.get((_base(w8["model"]), w8["mode"]))
        if b:
            print(f"{_base(w8['model'])} W8A8/bf16 [{w8['mode']}]: {_speedup(w8, b)}")


def _speedup(new: dict[str, Any], old: dict[str, Any]) -> str:
    decode = new["decode_tok_s"] / old["decode_tok_s"]
    four = new["tok_s_4"] / old["tok_s_4"]
    prefill = old["prefill_ms"] / new["prefill_ms"]
    return f"decode ×{decode:.2f}, 4 requests ×{four:.2f}, prefill ×{prefill:.2f} faster"


def _fmt(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) else value


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
