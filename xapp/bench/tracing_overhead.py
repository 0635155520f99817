"""What tracing costs: Answer latency on the template path with tracing exporting vs tracing off.

    argo-xapp bench tracing-overhead --rounds 12 --per-round 60 --csv results/tracing_overhead.csv

One process serves the real gRPC server (telemetry interceptor, real pipeline, embedded Chroma with the
shipped knowledge base, no LLM: every step on the template path) and calls Answer on it sequentially, with
the questions of ``SERVICE_QUESTIONS`` (:mod:`xapp.bench.common`) in turn.
Three tracing configurations alternate in blocks, in a rotating order, inside each round:

  off        OTEL_SDK_DISABLED: the OpenTelemetry API is a no-op (the baseline)
  no-export  the SDK records spans but no exporter is configured (the default without an endpoint)
  otlp       the SDK with the batch processor exporting over OTLP/gRPC to a receiver in another process

Switching is instant (``xapp.bench.tracer_switch.activate``); the otlp provider lives for the whole run, so its
background exports happen while requests are measured, as in production. At the end of each otlp block
the remaining spans are flushed, and that flush is charged to the block (``cost per request`` = block wall
time including the flush ÷ requests). Overhead is reported on the median latency and on the cost per
request, each against ``off``, as the median over rounds of the per-round ratio (paired: drift in the
machine's load between rounds cancels out).

The receiver runs as a separate process (tests/otlp_receiver.py) so that decoding spans does not count
against the xApp; ``--otlp-endpoint`` sends to a collector of your own (e.g. Jaeger on localhost:4317).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from xapp._proto.argo.v1 import argo_pb2 as pb
from xapp._proto.argo.v1 import argo_pb2_grpc as pb_grpc
from xapp.bench.common import SERVICE_QUESTIONS, percentile, write_csv
from xapp.bench.tracer_switch import activate, setup_tracing
from xapp.config import Settings
from xapp.errors import ArgoError
from xapp.server.app import ArgoServer
from xapp.telemetry.interceptor import TelemetryInterceptor
from xapp.telemetry.metrics import default_metrics
from xapp.telemetry.setup import TracingHandle

REPO = Path(__file__).resolve().parents[2]  # tests/otlp_receiver.py runs from the checkout
MODES = ("off", "no-export", "otlp")
TARGET_PCT = 3.0
SPAN_TREE_SPANS = 9  # spans span_tree_cost_us makes per Answer


@dataclass
class Block:
    round: int
    mode: str
    latencies_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    wall_s: float = 0.0  # requests + (otlp) the end-of-block flush
    flush_s: float = 0.0

    @property
    def median_ms(self) -> float:
        return statistics.median(self.latencies_ms)

    @property
    def cost_ms(self) -> float:
        return self.wall_s * 1000.0 / len(self.latencies_ms)


class Receiver:
    """tests/otlp_receiver.py in a child process."""

    def __init__(self) -> None:
        script = REPO / "tests" / "otlp_receiver.py"
        if not script.is_file():
            raise ArgoError(f"no OTLP receiver at {script} (a checkout's tests/): pass --otlp-endpoint")
        self.proc = subprocess.Popen(
            [sys.executable, str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "LISTENING":
            self.proc.kill()
            raise RuntimeError(f"OTLP receiver did not start: {line}")
        self.endpoint = f"http://127.0.0.1:{line[1]}"

    def close(self) -> tuple[int, int]:
        """Stop it; returns (spans, export requests) it received."""
        out, _ = self.proc.communicate("", timeout=30)
        fields = out.split()
        return int(fields[1]), int(fields[3])


async def run_bench(args: argparse.Namespace, handles: dict[str, TracingHandle]) -> list[Block]:
    from xapp.pipeline.runner import build_pipeline

    # A fixed strategy and a deadline far above the work: every request of a question does the same steps,
    # so the only difference between the modes is tracing (an adaptive budget would drop steps under load).
    settings = Settings(
        data_dir=args.data_dir,
        llm=False,
        strategy=args.strategy,
        max_deadline_ms=max(args.deadline_ms, 1000),
    ).validate()
    blocks: list[Block] = []
    async with build_pipeline(settings) as pipeline:
        server = ArgoServer(settings, interceptors=[TelemetryInterceptor(default_metrics())])
        await server.start(0, "127.0.0.1")
        await server.attach(pipeline)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                stub = pb_grpc.ArgoServiceStub(channel)
                counter = 0

                async def ask() -> tuple[float, float, int, int]:
                    nonlocal counter
                    q = SERVICE_QUESTIONS[counter % len(SERVICE_QUESTIONS)]
                    counter += 1
                    request = pb.AnswerRequest(question=q.text, options=q.options, deadline_ms=args.deadline_ms)
                    t0 = time.perf_counter()
                    reply = await stub.Answer(request, timeout=10)
                    return (time.perf_counter() - t0) * 1000.0, reply.elapsed_ms, reply.path, len(reply.steps)

                for mode in MODES:  # warm-up: caches, the latency estimator, each tracing path
                    activate(handles[mode])
                    for _ in range(args.warmup):
                        await ask()
                handles["otlp"].force_flush(30)

                for rnd in range(args.rounds):
                    order = MODES[rnd % 3 :] + MODES[: rnd % 3]
                    for mode in order:
                        activate(handles[mode])
                        block = Block(rnd, mode)
                        t0 = time.perf_counter()
                        for _ in range(args.per_round):
                            latency, server_ms, path, steps = await ask()
                            if path != pb.PATH_TEMPLATE:
                                raise RuntimeError(f"expected the template path, got {pb.Path.Name(path)}")
                            block.latencies_ms.append(latency)
                            block.server_ms.append(server_ms)
                            block.steps.append(steps)
                        if mode == "otlp":
                            t1 = time.perf_counter()
                            if not handles["otlp"].force_flush(30):
                                raise RuntimeError("OTLP flush did not finish")
                            block.flush_s = time.perf_counter() - t1
                        block.wall_s = time.perf_counter() - t0
                        blocks.append(block)
                        print(
                            f"round {rnd:2d} {mode:9s} median {block.median_ms:7.2f} ms  "
                            f"cost/request {block.cost_ms:7.2f} ms",
                            flush=True,
                        )
        finally:
            await server.stop(0)
    return blocks


def span_tree_cost_us(handles: dict[str, TracingHandle], answers: int) -> dict[str, float]:
    """µs per Answer for the span tree alone (server span from a traceparent + 8 component spans with
    their attributes), per mode, export and final flush included: the cost of tracing without the noise of
    the pipeline's own work."""
    from opentelemetry import trace

    from xapp.telemetry import attrs
    from xapp.telemetry.propagation import extract_context

    tracer = trace.get_tracer(attrs.TRACER_NAME)
    metadata = (("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),)
    out: dict[str, float] = {}
    for mode in MODES:
        activate(handles[mode])
        t0 = time.perf_counter()
        for i in range(answers):
            if mode == "otlp" and i % 40 == 39:
                # Export inline, before the queue (2048 spans) overflows and drops: charged to this mode.
                handles[mode].force_flush(30)
            server = tracer.start_span(
                "argo.v1.ArgoService/Answer",
                context=extract_context(metadata),
                kind=trace.SpanKind.SERVER,
                attributes={
                    attrs.RPC_SYSTEM: "grpc",
                    attrs.RPC_SERVICE: "argo.v1.ArgoService",
                    attrs.RPC_METHOD: "Answer",
                },
            )
            with trace.use_span(server, end_on_exit=True):
                for step in range(2):
                    with tracer.start_as_current_span(attrs.SPAN_POLICY) as span:
                        span.set_attributes(
                            {attrs.STRATEGY: "fixed-k", attrs.PROGRESS: step * 0.3, attrs.ACTION: "retrieve"}
                        )
                    with tracer.start_as_current_span(attrs.SPAN_DECOMPOSE) as span:
                        span.set_attributes({attrs.PATH: "template", attrs.SUBQUERIES_CHARS: [24]})
                    with tracer.start_as_current_span(attrs.SPAN_RETRIEVE) as span:
                        span.set_attributes(
                            {attrs.DB_SYSTEM: "chroma", attrs.RETRIEVAL_TOP_K: 4, attrs.RETRIEVAL_HITS: 4}
                        )
                with tracer.start_as_current_span(attrs.SPAN_POLICY) as span:
                    span.set_attributes({attrs.STRATEGY: "fixed-k", attrs.PROGRESS: 0.6, attrs.ACTION: "terminate"})
                with tracer.start_as_current_span(attrs.SPAN_SYNTHESIZE) as span:
                    span.set_attributes({attrs.PATH: "template", attrs.BUDGET_REMAINING_MS: 900.0})
                server.set_attributes(
                    {attrs.PATH: "template", attrs.DEADLINE_MS: 980.0, attrs.STEPS: 2, attrs.RPC_GRPC_STATUS_CODE: 0}
                )
        if mode == "otlp":
            handles[mode].force_flush(30)
        out[mode] = (time.perf_counter() - t0) * 1e6 / answers
    return out


def paired_overhead(blocks: list[Block], mode: str, metric: str) -> tuple[float, float, float]:
    """Median, min and max over rounds of (mode / off − 1) in %, for ``metric`` (median_ms or cost_ms)."""
    by = {(b.round, b.mode): b for b in blocks}
    ratios = []
    for rnd in sorted({b.round for b in blocks}):
        base, other = by[(rnd, "off")], by[(rnd, mode)]
        ratios.append((getattr(other, metric) / getattr(base, metric) - 1.0) * 100.0)
    return statistics.median(ratios), min(ratios), max(ratios)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="argo-xapp bench tracing-overhead", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--per-round", type=int, default=60, help="requests per mode per round")
    parser.add_argument("--warmup", type=int, default=20, help="requests per mode before measuring")
    parser.add_argument(
        "--deadline-ms", type=int, default=60_000, help="far above the work: the budget never drops a step"
    )
    parser.add_argument("--strategy", default="fixed-k")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="knowledge base location (default: a temporary one, ingested first)"
    )
    parser.add_argument("--otlp-endpoint", default="", help="send to this collector instead of a local receiver")
    parser.add_argument("--csv", type=Path, default=Path("results/tracing_overhead.csv"))
    parser.add_argument(
        "--span-tree-answers", type=int, default=3000, help="answers' worth of spans for the span-tree cost (0: skip)"
    )
    args = parser.parse_args(argv)

    tmp = None
    if args.data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="argo-tracing-bench-")
        args.data_dir = Path(tmp.name)
    receiver = None if args.otlp_endpoint else Receiver()
    endpoint = args.otlp_endpoint or (receiver.endpoint if receiver else "")
    # Only this benchmark's settings decide; an OTEL_* variable in the shell must not change a mode.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    handles = {
        "off": setup_tracing(Settings(), environ={**env, "OTEL_SDK_DISABLED": "true"}),
        "no-export": setup_tracing(Settings(), environ=env),
        "otlp": setup_tracing(Settings(otlp_endpoint=endpoint), environ=env),
    }
    try:
        blocks = asyncio.run(run_bench(args, handles))
        tree = span_tree_cost_us(handles, args.span_tree_answers) if args.span_tree_answers else {}
    finally:
        for handle in handles.values():
            handle.shutdown(10)
        received = receiver.close() if receiver else (-1, -1)
        if tmp is not None:
            tmp.cleanup()

    args.csv.parent.mkdir(parents=True, exist_ok=True)
    write_csv(
        args.csv,
        ("round", "mode", "request", "latency_ms", "server_elapsed_ms", "steps", "block_cost_ms", "flush_ms"),
        (
            {
                "round": b.round,
                "mode": b.mode,
                "request": i,
                "latency_ms": latency,
                "server_elapsed_ms": server_ms,
                "steps": steps,
                "block_cost_ms": b.cost_ms,
                "flush_ms": b.flush_s * 1000,
            }
            for b in blocks
            for i, (latency, server_ms, steps) in enumerate(zip(b.latencies_ms, b.server_ms, b.steps, strict=True))
        ),
    )
    summary = args.csv.with_name(args.csv.stem + "_summary.csv")
    rows: list[dict[str, Any]] = []
    print(
        f"\n{'mode':10s} {'n':>5s} {'p50 ms':>8s} {'p95 ms':>8s} {'mean ms':>8s} {'cost ms':>8s} "
        f"{'Δp50 %':>8s} {'Δcost %':>8s}"
    )
    for mode in MODES:
        lat = [x for b in blocks if b.mode == mode for x in b.latencies_ms]
        cost = statistics.mean(b.cost_ms for b in blocks if b.mode == mode)
        d50 = paired_overhead(blocks, mode, "median_ms") if mode != "off" else (0.0, 0.0, 0.0)
        dcost = paired_overhead(blocks, mode, "cost_ms") if mode != "off" else (0.0, 0.0, 0.0)
        row = {
            "mode": mode,
            "requests": len(lat),
            "p50_ms": statistics.median(lat),
            "p95_ms": percentile(lat, 95),
            "mean_ms": statistics.mean(lat),
            "cost_per_request_ms": cost,
            "overhead_p50_pct": d50[0],
            "overhead_p50_pct_min": d50[1],
            "overhead_p50_pct_max": d50[2],
            "overhead_cost_pct": dcost[0],
            "overhead_cost_pct_min": dcost[1],
            "overhead_cost_pct_max": dcost[2],
            "span_tree_us": tree.get(mode, float("nan")),
        }
        rows.append(row)
        print(
            f"{mode:10s} {len(lat):5d} {row['p50_ms']:8.2f} {row['p95_ms']:8.2f} {row['mean_ms']:8.2f} "
            f"{cost:8.2f} {d50[0]:+8.2f} {dcost[0]:+8.2f}"
        )
    write_csv(summary, list(rows[0]), rows)

    otlp = next(r for r in rows if r["mode"] == "otlp")
    if tree:
        added = tree["otlp"] - tree["off"]
        print(
            f"\nspan tree of one Answer ({SPAN_TREE_SPANS} spans): off {tree['off']:.1f} µs, "
            f"no-export {tree['no-export']:.1f} µs, "
            f"otlp {tree['otlp']:.1f} µs → tracing adds {added:.1f} µs = {added / 10 / otlp['p50_ms']:.3f}% "
            f"of the measured median Answer ({otlp['p50_ms']:.2f} ms)"
        )
    total = sum(len(b.latencies_ms) for b in blocks if b.mode == "otlp") + args.warmup
    if received[0] >= 0:
        from_answers = received[0] - (SPAN_TREE_SPANS * args.span_tree_answers if tree else 0)
        print(
            f"\nreceiver got {received[0]} spans in {received[1]} export requests "
            f"({from_answers / max(total, 1):.1f} spans per traced Answer)"
        )
    verdict = "within" if max(otlp["overhead_p50_pct"], otlp["overhead_cost_pct"]) < TARGET_PCT else "ABOVE"
    print(
        f"tracing overhead (otlp vs off): {otlp['overhead_p50_pct']:+.2f}% on the median latency, "
        f"{otlp['overhead_cost_pct']:+.2f}% on the cost per request — {verdict} the {TARGET_PCT:.0f}% target"
    )
    print(f"wrote {args.csv} and {summary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
