"""Load test of argo.v1.ArgoService/Answer: N concurrent callers for a fixed time, per N.

    argo-xapp bench load --target localhost:50051 --concurrency 1,4,8,16 --duration 30 \
        --deadline-ms 1000 --csv results/load.csv

Each caller loops: pick the next question (``SERVICE_QUESTIONS`` in :mod:`xapp.bench.common`), call Answer
with ``deadline_ms`` and a gRPC deadline of deadline + ``--grpc-slack-ms`` (so a late reply is observed and
counted rather than cut off by the client), record the client-side latency, the status code and the reply's
path. Per concurrency level it reports throughput, p50/p95/p99/max latency, replies later than deadline + 25 ms
(target 0), errors by status code and the share of OK replies produced by the LLM (path LLM), by both (MIXED)
and by templates.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from xapp._proto.argo.v1 import argo_pb2 as pb
from xapp.bench.common import SERVICE_QUESTIONS, percentile
from xapp.client import ArgoClient

LATE_SLACK_MS = 25.0


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
        return percentile(self.latencies_ms, q)

    def row(self) -> dict[str, object]:
        ok = max(self.ok, 1)
        return {
            "concurrency": self.concurrency,
            "duration_s": round(self.duration_s, 2),
            "requests": self.requests,
            "ok": self.ok,
            "throughput_rps": round(self.ok / self.duration_s, 2) if self.duration_s else 0.0,
            "p50_ms": round(self.pct(50), 1),
            "p95_ms": round(self.pct(95), 1),
            "p99_ms": round(self.pct(99), 1),
            "max_ms": round(max(self.latencies_ms), 1) if self.latencies_ms else float("nan"),
            "late": self.late,
            "queued_p95_ms": round(percentile(self.queued_ms, 95), 1),
            "errors": json.dumps({k: v for k, v in sorted(self.codes.items()) if k != "OK"}),
            "llm_share": round(self.paths.get("PATH_LLM", 0) / ok, 3),
            "mixed_share": round(self.paths.get("PATH_MIXED", 0) / ok, 3),
            "template_share": round(self.paths.get("PATH_TEMPLATE", 0) / ok, 3),
            "fallbacks": json.dumps(dict(self.fallbacks.most_common(5))),
        }


def _reason_key(reason: str) -> str:
    """Group fallback reasons by their head ("decompose: deadline", not the full message)."""
    return reason.split(";")[0].split("(")[0].strip()[:60]


async def _caller(client: ArgoClient, level: Level, stop_at: float, offset: int, args: argparse.Namespace) -> None:
    i = offset
    while time.monotonic() < stop_at:
        q = SERVICE_QUESTIONS[i % len(SERVICE_QUESTIONS)]
        i += 1
        t0 = time.monotonic()
        try:
            reply = await client.answer(
                q.text,
                list(q.options),
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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="argo-xapp bench load", description=__doc__.splitlines()[0])
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


def main(argv: Sequence[str] | None = None) -> int:
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
    sys.exit(main(sys.argv[1:]))
