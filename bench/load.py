"""Load test of argo.v1.ArgoService/Answer: N concurrent callers for a fixed time, per N.

    python bench/load.py --target localhost:50051 --concurrency 1,4,8,16 --duration 30 \
        --deadline-ms 1000 --csv results/load.csv

Each caller loops: pick the next question, call Answer with ``deadline_ms`` and a gRPC deadline of
deadline + ``--grpc-slack-ms`` (so a late reply is observed and counted rather than cut off by the client),
record the client-side latency, the status code and the reply's path. Per concurrency level it reports
throughput, p50/p95/p99/max latency, replies later than deadline + 25 ms (target 0), errors by status
code and the share of OK replies produced by the LLM (path LLM), by both (MIXED) and by templates.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from xapp._proto.argo.v1 import argo_pb2 as pb
from xapp.client import ArgoClient

LATE_SLACK_MS = 25.0

# A fixed, varied mix: definitions, comparisons, multi-hop, multiple choice.
QUESTIONS: list[tuple[str, list[str]]] = [
    ("What does the E2 interface connect in O-RAN?", []),
    ("Which RIC hosts xApps?", ["The non-RT RIC", "The near-RT RIC", "The SMO", "The O-DU"]),
    ("What is the control-loop latency range of the near-RT RIC?", []),
    ("What is the difference between an xApp and an rApp?", []),
    ("Which interface carries policies from the non-RT RIC to the near-RT RIC?", ["A1", "E2", "O1", "F1"]),
    ("What does the O1 interface manage?", []),
    ("What is an E2 service model (E2SM)?", []),
    ("What is the role of the SMO in O-RAN and which interfaces does it use?", []),
    ("Which split does the O-RAN Open Fronthaul use?", ["Split 2", "Split 7-2x", "Split 8", "Split 6"]),
    ("What is the O2 interface used for?", []),
    ("How does the near-RT RIC subscribe to RAN events through E2?", []),
    ("What is E2SM-KPM and what does it report?", []),
]


@dataclass
class Level:
    concurrency: int
    duration_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)  # OK replies only
    codes: Counter[str] = field(default_factory=Counter)
    paths: Counter[str] = field(default_factory=Counter)
    fallbacks: Counter[str] = field(default_factory=Counter)
    late: int = 0  # any reply (OK or not) later than deadline + 25 ms
    queued_ms: list[float] = field(default_factory=list)  # admission wait of OK replies (timings_ms["admission"])
    late_examples: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(self.codes.values())

    @property
    def ok(self) -> int:
        return self.codes.get("OK", 0)

    def pct(self, q: float) -> float:
        return _quantile(self.latencies_ms, q)

    def row(self) -> dict[str, object]:
        ok = max(self.ok, 1)
        return {
            "concurrency": self.concurrency,
            "duration_s": round(self.duration_s, 2),
            "requests": self.requests,
            "ok": self.ok,
            "throughput_rps": round(self.ok / self.duration_s, 2) if self.duration_s else 0.0,
            "p50_ms": round(self.pct(0.50), 1),
            "p95_ms": round(self.pct(0.95), 1),
            "p99_ms": round(self.pct(0.99), 1),
            "max_ms": round(max(self.latencies_ms), 1) if self.latencies_ms else float("nan"),
            "late": self.late,
            "queued_p95_ms": round(_quantile(self.queued_ms, 0.95), 1),
            "errors": json.dumps({k: v for k, v in sorted(self.codes.items()) if k != "OK"}),
            "llm_share": round(self.paths.get("PATH_LLM", 0) / ok, 3),
            "mixed_share": round(self.paths.get("PATH_MIXED", 0) / ok, 3),
            "template_share": round(self.paths.get("PATH_TEMPLATE", 0) / ok, 3),
            "fallbacks": json.dumps(dict(self.fallbacks.most_common(5))),
        }


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1]


def _reason_key(reason: str) -> str:
    """Group fallback reasons by their head ("decompose: deadline", not the full message)."""
    return reason.split(";")[0].split("(")[0].strip()[:60]


async def _caller(client: ArgoClient, level: Level, stop_at: float, offset: int, args: argparse.Namespace) -> None:
    i = offset
    while time.monotonic() < stop_at:
        question, options = QUESTIONS[i % len(QUESTIONS)]
        i += 1
        t0 = time.monotonic()
        try:
            reply = await client.answer(
                question,
                options,
                strategy=args.strategy,
                deadline_ms=args.deadline_ms,
                timeout=(args.deadline_ms + args.grpc_slack_ms) / 1000.0,
            )
            code = "OK"
        except grpc.aio.AioRpcError as exc:
            reply = None
            code = exc.code().name
        elapsed_ms = (time.monotonic() - t0) * 1000.0
        level.codes[code] += 1
        if elapsed_ms > args.deadline_ms + LATE_SLACK_MS:
            level.late += 1
            if reply is not None and len(level.late_examples) < 5:
                top = sorted(reply.timings_ms.items(), key=lambda kv: -kv[1])[:4]
                level.late_examples.append(
                    f"client {elapsed_ms:.0f} ms, server {reply.elapsed_ms:.0f} ms, "
                    + ", ".join(f"{k} {v:.0f}" for k, v in top)
                )
        if reply is not None:
            level.latencies_ms.append(elapsed_ms)
            level.queued_ms.append(reply.timings_ms.get("admission", 0.0))
            level.paths[pb.Path.Name(reply.path)] += 1
            if reply.fallback_reason:
                level.fallbacks[_reason_key(reply.fallback_reason)] += 1
        elif code == "RESOURCE_EXHAUSTED":
            await asyncio.sleep(0.01)  # a refused caller backs off briefly instead of spinning


async def run_level(client: ArgoClient, concurrency: int, args: argparse.Namespace) -> Level:
    level = Level(concurrency)
    start = time.monotonic()
    stop_at = start + args.duration
    await asyncio.gather(*(_caller(client, level, stop_at, k * 3, args) for k in range(concurrency)))
    level.duration_s = time.monotonic() - start
    return level


async def main_async(args: argparse.Namespace) -> list[Level]:
    # One channel per caller would measure connection set-up; a shared HTTP/2 channel multiplexes the calls.
    async with ArgoClient(args.target) as client:
        await client.wait_serving(timeout=args.wait_s)
        if args.warmup > 0:
            await run_level(client, 1, argparse.Namespace(**{**vars(args), "duration": args.warmup}))
        levels = []
        for n in args.concurrency:
            level = await run_level(client, n, args)
            levels.append(level)
            print(_format(level.row()), flush=True)
            for example in level.late_examples:
                print(f"    late: {example}", flush=True)
        return levels


def _format(row: dict[str, object]) -> str:
    return (
        f"c={row['concurrency']:>2}  req={row['requests']:>5}  ok={row['ok']:>5}  "
        f"{row['throughput_rps']:>6} rps  p50={row['p50_ms']:>7} p95={row['p95_ms']:>7} "
        f"p99={row['p99_ms']:>7} max={row['max_ms']:>7} ms  late={row['late']}  errors={row['errors']}  "
        f"llm={row['llm_share']} mixed={row['mixed_share']} template={row['template_share']}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default="localhost:50051", help="HOST:PORT of the argo-xapp gRPC server")
    p.add_argument("--concurrency", default="1,4,8,16", help="comma-separated numbers of concurrent callers")
    p.add_argument("--duration", type=float, default=30.0, help="seconds per concurrency level")
    p.add_argument("--deadline-ms", type=int, default=1000, help="deadline_ms of each request")
    p.add_argument("--grpc-slack-ms", type=int, default=500, help="gRPC deadline = deadline + this")
    p.add_argument("--strategy", default="", help="strategy of each request (empty: the server default)")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds of one caller before measuring")
    p.add_argument("--wait-s", type=float, default=300.0, help="how long to wait for the server to be SERVING")
    p.add_argument("--csv", type=Path, default=None, help="write one row per concurrency level here")
    args = p.parse_args(argv)
    args.concurrency = [int(x) for x in str(args.concurrency).split(",") if x.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    levels = asyncio.run(main_async(args))
    if args.csv is not None:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        rows = [lv.row() for lv in levels]
        with args.csv.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
