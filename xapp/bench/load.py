"""Load test of argo.v1.ArgoService/Answer: N concurrent callers per level, mixed multiple-choice and open
questions, for ``--calls`` calls or ``--duration`` seconds per level.

    argo-xapp bench load --target localhost:50051 --concurrency 8,32 --calls 1000 --deadline-ms 1000 \
        --mc ../shared/data/oranbench-dev --pid "$(pgrep -f 'argo-xapp serve')" --csv results/load.csv

Questions alternate (``--mc-share``, default one in two) between multiple choice (``--mc``: an ORAN-Bench
file or folder, default the built-in service mix's) and open questions (``--open``: the evaluation set's
questions asked without their options, :data:`xapp.bench.common.EVAL_QUESTIONS`). Each caller loops: the next
question, Answer with ``deadline_ms`` and a gRPC deadline of deadline + ``--grpc-slack-ms`` (so a late reply is
observed and counted rather than cut off by the client). Per level it reports replies, errors by status code,
**late** replies (later than deadline + 25 ms at the client; target 0), the share of multiple-choice replies
whose option the LLM chose (the reply carries the option probabilities only then), p50/p95/p99/max latency,
throughput, and, with ``--pid`` (a server on this machine), the RSS of the server and its child processes
(the vLLM engine core) at the start and the end of the level.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from xapp._proto.argo.v1 import argo_pb2 as pb
from xapp.bench.common import (
    EVAL_QUESTIONS,
    SERVICE_QUESTIONS,
    BenchQuestion,
    counts,
    load_eval,
    load_questions,
    percentile,
)
from xapp.client import ArgoClient
from xapp.errors import ArgoError

LATE_SLACK_MS = 25.0


@dataclass
class Level:
    concurrency: int
    deadline_ms: float = 1000.0
    duration_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)  # OK replies only
    codes: Counter[str] = field(default_factory=Counter)
    paths: Counter[str] = field(default_factory=Counter)
    fallbacks: Counter[str] = field(default_factory=Counter)
    late: int = 0  # any reply (OK or not) later than deadline + 25 ms
    mc_replies: int = 0  # OK replies to multiple-choice questions
    mc_llm: int = 0  # … whose option the LLM chose
    mc_scored: int = 0  # … to questions whose answer is known (ORAN-Bench rows)
    mc_correct: int = 0  # … of them, right
    mc_llm_scored: int = 0  # … chosen by the LLM
    mc_llm_correct: int = 0  # … chosen by the LLM and right
    queued_ms: list[float] = field(default_factory=list)  # admission wait of OK replies (timings_ms["admission"])
    late_examples: list[str] = field(default_factory=list)
    fallback_details: dict[str, list[str]] = field(default_factory=dict)  # the first few details per fallback
    rss_start_mb: float | None = None  # server process tree (with the engine core), when --pid is given
    rss_end_mb: float | None = None

    @property
    def requests(self) -> int:
        return sum(self.codes.values())

    @property
    def ok(self) -> int:
        return self.codes.get("OK", 0)

    def pct(self, q: float) -> float:
        return percentile(self.latencies_ms, q)

    def record(self, question: BenchQuestion, code: str, elapsed_ms: float, reply: pb.AnswerReply | None) -> None:
        self.codes[code] += 1
        if elapsed_ms > self.deadline_ms + LATE_SLACK_MS:
            self.late += 1
            if reply is not None and len(self.late_examples) < 5:
                top = sorted(reply.timings_ms.items(), key=lambda kv: -kv[1])[:4]
                self.late_examples.append(
                    f"client {elapsed_ms:.0f} ms, server {reply.elapsed_ms:.0f} ms, "
                    + ", ".join(f"{k} {v:.0f}" for k, v in top)
                )
        if reply is None:
            return
        self.latencies_ms.append(elapsed_ms)
        self.queued_ms.append(reply.timings_ms.get("admission", 0.0))
        self.paths[pb.Path.Name(reply.path)] += 1
        if question.options:
            self.mc_replies += 1
            self.mc_llm += bool(reply.option_probabilities)
            if question.answer is not None:
                right = reply.choice == question.answer
                self.mc_scored += 1
                self.mc_correct += right
                if reply.option_probabilities:
                    self.mc_llm_scored += 1
                    self.mc_llm_correct += right
        for f in reply.fallbacks:
            key = f"{f.component}: {f.cause}"
            self.fallbacks[key] += 1
            details = self.fallback_details.setdefault(key, [])
            if len(details) < 3:
                details.append(f.detail)

    def row(self) -> dict[str, object]:
        ok = max(self.ok, 1)
        return {
            "concurrency": self.concurrency,
            "deadline_ms": self.deadline_ms,
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
            "mc_replies": self.mc_replies,
            "mc_llm_share": round(self.mc_llm / self.mc_replies, 3) if self.mc_replies else float("nan"),
            # Accuracy under load, overall and on each path: what the callers got, beside who chose.
            "mc_accuracy": round(self.mc_correct / self.mc_scored, 3) if self.mc_scored else float("nan"),
            "mc_llm_accuracy": (
                round(self.mc_llm_correct / self.mc_llm_scored, 3) if self.mc_llm_scored else float("nan")
            ),
            "mc_template_accuracy": (
                round((self.mc_correct - self.mc_llm_correct) / (self.mc_scored - self.mc_llm_scored), 3)
                if self.mc_scored > self.mc_llm_scored
                else float("nan")
            ),
            "llm_share": round(self.paths.get("PATH_LLM", 0) / ok, 3),
            "mixed_share": round(self.paths.get("PATH_MIXED", 0) / ok, 3),
            "template_share": round(self.paths.get("PATH_TEMPLATE", 0) / ok, 3),
            "rss_start_mb": self.rss_start_mb if self.rss_start_mb is not None else "",
            "rss_end_mb": self.rss_end_mb if self.rss_end_mb is not None else "",
            "fallbacks": json.dumps(dict(self.fallbacks.most_common(5))),
        }


def process_tree_rss_mb(pid: int) -> float | None:
    """RSS of ``pid`` and its descendants (the vLLM engine core is a child of ``argo-xapp serve``), in MiB;
    None when the process is gone."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid …": comm may hold spaces, so split after its closing parenthesis.
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    root = _rss_kib(pid)
    if root is None:
        return None
    return round((root + sum(_rss_kib(c) or 0 for c in tree - {pid})) / 1024.0, 1)


def _rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return 0  # a zombie has no VmRSS line


def question_mix(mc: Sequence[BenchQuestion], open_: Sequence[BenchQuestion], mc_share: float) -> list[BenchQuestion]:
    """One cycle of the mix: a multiple-choice question wherever the running share falls below ``mc_share``,
    else an open one; each list is walked in order and wraps."""
    if not mc or mc_share <= 0:
        return list(open_)
    if not open_ or mc_share >= 1:
        return list(mc)
    n = max(len(mc), len(open_)) * 2
    mcs, opens = itertools.cycle(mc), itertools.cycle(open_)
    return [next(mcs) if int((i + 1) * mc_share) > int(i * mc_share) else next(opens) for i in range(n)]


def load_mix(args: argparse.Namespace) -> list[BenchQuestion]:
    if args.mc is not None:
        mc = [q for q in load_questions(args.mc).rows if q.options]
        if not mc:
            raise ArgoError(f"{args.mc} holds no multiple-choice questions")
    else:
        mc = [q for q in SERVICE_QUESTIONS if q.options]
    if args.open is not None:
        open_ = [BenchQuestion(q.text) for q in load_questions(args.open).rows]
    else:
        open_ = [BenchQuestion(q.question, source=q.id) for q in load_eval(EVAL_QUESTIONS)]
    return question_mix(mc, open_, args.mc_share)


async def _caller(
    client: ArgoClient,
    level: Level,
    questions: Sequence[BenchQuestion],
    tickets: itertools.count[int],
    stop: tuple[float, int | None],
    args: argparse.Namespace,
) -> None:
    stop_at, calls = stop
    while time.monotonic() < stop_at:
        i = next(tickets)
        if calls is not None and i >= calls:
            return
        q = questions[i % len(questions)]
        t0 = time.monotonic()
        try:
            reply: pb.AnswerReply | None = await client.answer(
                q.text,
                list(q.options),
                strategy=args.strategy,
                deadline_ms=args.deadline_ms,
                omit_passages=True,
                timeout=(args.deadline_ms + args.grpc_slack_ms) / 1000.0,
            )
            code = "OK"
        except grpc.aio.AioRpcError as exc:
            reply, code = None, exc.code().name
        level.record(q, code, (time.monotonic() - t0) * 1000.0, reply)
        if code == "RESOURCE_EXHAUSTED":
            await asyncio.sleep(0.01)  # a refused caller backs off briefly instead of spinning


async def run_level(
    client: ArgoClient, concurrency: int, questions: Sequence[BenchQuestion], args: argparse.Namespace,
    *, duration: float | None = None, calls: int | None = None, offset: int = 0,
) -> Level:
    level = Level(concurrency, float(args.deadline_ms))
    if args.pid:
        level.rss_start_mb = process_tree_rss_mb(args.pid)
    start = time.monotonic()
    stop_at = start + duration if duration is not None else float("inf")
    tickets = itertools.count(offset)
    limit = offset + calls if calls is not None else None
    await asyncio.gather(
        *(_caller(client, level, questions, tickets, (stop_at, limit), args) for _ in range(concurrency))
    )
    level.duration_s = time.monotonic() - start
    if args.pid:
        level.rss_end_mb = process_tree_rss_mb(args.pid)
    return level


async def main_async(args: argparse.Namespace) -> list[Level]:
    questions = load_mix(args)
    # One channel per caller would measure connection set-up; a shared HTTP/2 channel multiplexes the calls.
    async with ArgoClient(args.target) as client:
        await client.wait_serving(timeout=args.wait_s)
        offset = 0
        if args.warmup > 0:
            await run_level(client, 1, questions, args, duration=args.warmup)
        levels = []
        for n in args.concurrency:
            level = await run_level(
                client, n, questions, args, duration=args.duration, calls=args.calls, offset=offset
            )
            offset += level.requests  # the next level asks the questions that follow
            levels.append(level)
            print(_format(level.row()), flush=True)
            for example in level.late_examples:
                print(f"    late: {example}", flush=True)
            for key, _ in level.fallbacks.most_common(3):
                print(f"    fallback {key}: " + " | ".join(level.fallback_details[key]), flush=True)
        return levels


def _format(row: dict[str, object]) -> str:
    rss = f"  rss={row['rss_start_mb']}->{row['rss_end_mb']} MiB" if row["rss_start_mb"] != "" else ""
    return (
        f"c={row['concurrency']:>2}  req={row['requests']:>5}  ok={row['ok']:>5}  "
        f"{row['throughput_rps']:>6} rps  p50={row['p50_ms']:>7} p95={row['p95_ms']:>7} "
        f"p99={row['p99_ms']:>7} max={row['max_ms']:>7} ms  late={row['late']}  errors={row['errors']}  "
        f"mc_llm={row['mc_llm_share']} of {row['mc_replies']}  mc_acc={row['mc_accuracy']} "
        f"(llm {row['mc_llm_accuracy']}, template {row['mc_template_accuracy']})  "
        f"llm={row['llm_share']} mixed={row['mixed_share']} template={row['template_share']}{rss}"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="argo-xapp bench load", description=__doc__.splitlines()[0])
    p.add_argument("--target", default="localhost:50051", help="HOST:PORT of the argo-xapp gRPC server")
    p.add_argument("--concurrency", type=counts, default=[1, 4, 8, 16], help="numbers of concurrent callers, e.g. 8,32")
    p.add_argument("--calls", type=int, default=None, help="calls per level (then --duration only caps the time)")
    p.add_argument("--duration", type=float, default=None, help="seconds per level (default 30 without --calls)")
    p.add_argument("--deadline-ms", type=int, default=1000, help="deadline_ms of each request")
    p.add_argument("--grpc-slack-ms", type=int, default=500, help="gRPC deadline = deadline + this")
    p.add_argument("--strategy", default="", help="strategy of each request (empty: the server default)")
    p.add_argument("--mc", type=Path, default=None,
                   help="multiple-choice questions: an ORAN-Bench file or folder (default: the built-in mix's)")
    p.add_argument("--open", type=Path, default=None,
                   help="open questions, one file (default: the evaluation set's questions without options)")
    p.add_argument("--mc-share", type=float, default=0.5, help="share of multiple-choice questions, 0-1")
    p.add_argument("--pid", type=int, default=0, help="the server's pid, when local: report its RSS per level")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds of one caller before measuring")
    p.add_argument("--wait-s", type=float, default=300.0, help="how long to wait for the server to be SERVING")
    p.add_argument("--csv", type=Path, default=None, help="write one row per concurrency level here")
    args = p.parse_args(argv)
    if args.calls is not None and args.calls < 1:
        p.error(f"--calls must be >= 1, got {args.calls}")
    if args.duration is None and args.calls is None:
        args.duration = 30.0
    if args.duration is not None and args.duration <= 0:
        p.error(f"--duration must be > 0, got {args.duration}")
    if not 0.0 <= args.mc_share <= 1.0:
        p.error(f"--mc-share must be between 0 and 1, got {args.mc_share}")
    if args.pid and process_tree_rss_mb(args.pid) is None:
        p.error(f"--pid {args.pid}: no such process on this machine")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        levels = asyncio.run(main_async(args))
    except ArgoError as exc:
        print(f"argo-xapp bench load: {exc}", file=sys.stderr)
        return 2
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
