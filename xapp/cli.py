"""``argo-xapp``: ask, policy, ingest, serve, quantize and bench.

Errors the user can fix print one line on stderr and exit 2; nothing prints a traceback for bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xapp import __version__, kb_cli
from xapp.config import STRATEGIES, Settings, load_settings
from xapp.domain import Action
from xapp.errors import ArgoError

# Commands that show a progress bar of their own (ingestion); the others keep stderr for log lines.
PROGRESS_COMMANDS = ("ingest", "quantize", "bench")


def _configure_logging(command: str) -> None:
    """Logs go to stderr (stdout carries the answer); a server logs INFO as JSON, one-shot commands only
    warnings, in the console format. Before vLLM or Chroma are imported, so that their loggers (and those of
    the processes vLLM starts) go through the same handler, and their noise is silenced at its source."""
    from xapp.telemetry.logging import configure_logging

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    level = os.environ.get("ARGO_LOG_LEVEL") or ("INFO" if command == "serve" else "WARNING")
    log_format = os.environ.get("ARGO_LOG_FORMAT") or ("json" if command == "serve" else "console")
    configure_logging(level=level, log_format=log_format, progress=command in PROGRESS_COMMANDS)


# argo-xapp bench NAME → the module whose main(argv) runs it
BENCHES = {
    "latency": "xapp.bench.latency",
    "accuracy": "xapp.bench.accuracy",
    "retrieval": "xapp.bench.retrieval",
}

MODEL_HELP = (
    "offline model short name (qwen2.5-coder-1.5b, the default, or qwen2.5-coder-0.5b), "
    "a model folder, a .gguf file or a hub id"
)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, help="all state lives here (default: $ARGO_DATA_DIR or per-user dir)")
    p.add_argument("--model", help=MODEL_HELP)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="argo-xapp", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"argo-xapp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    ask = sub.add_parser("ask", help="answer one O-RAN question")
    ask.add_argument("question")
    ask.add_argument("--option", action="append", default=[], help="a multiple-choice option (repeatable)")
    ask.add_argument("--strategy", choices=STRATEGIES)
    ask.add_argument("--deadline-ms", type=int, help="answer within this many ms (default: settings)")
    ask.add_argument("--json", action="store_true", help="print one JSON object")
    ask.add_argument("--server", metavar="HOST:PORT", help="ask a running argo-xapp server over gRPC")
    _add_common(ask)

    policy = sub.add_parser("policy", help="solve the MDP and print θ_cont and θ*")
    policy.add_argument("--json", action="store_true")
    policy.add_argument("--quality", choices=("linear", "sqrt", "saturating", "sigmoid"))
    for name in (
        "delta-retrieve",
        "p-success",
        "delta-reason",
        "cost-retrieve",
        "cost-reason",
        "mu",
        "gamma",
    ):
        policy.add_argument(f"--{name}", type=float)
    _add_common(policy)

    ingest = sub.add_parser("ingest", help="add or update .md/.rst/.txt/.html/.pdf/.docx files (replaces changed ones)")
    ingest.add_argument("path", type=Path)
    ingest.add_argument("--batch-size", type=int, default=128)
    ingest.add_argument("--no-progress", action="store_true")
    ingest.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="skip these (repeatable)")
    ingest.add_argument("--no-default-excludes", action="store_true", help="also take LICENSE*, SOURCE_COMMIT*, ...")
    _add_common(ingest)
    kb_cli.add_parser(sub)

    serve = sub.add_parser("serve", help="run the gRPC xApp (and the O-RAN SC HTTP endpoints)")
    serve.add_argument("--grpc-port", type=int)
    serve.add_argument("--http-port", type=int)
    serve.add_argument("--host", default="[::]")
    serve.add_argument("--strategy", choices=STRATEGIES)
    serve.add_argument("--no-llm", action="store_true", help="serve the template path only (no engine)")
    _add_common(serve)

    quantize = sub.add_parser("quantize", help="make an int8 W8A8 (compressed-tensors) copy of a checkpoint")
    quantize.add_argument("src", type=Path)
    quantize.add_argument("dst", type=Path)
    quantize.add_argument("--force", action="store_true", help="replace DST if it exists")

    bench = sub.add_parser("bench", help="latency, accuracy and retrieval measurements")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    for name in BENCHES:
        # Every option, -h included, belongs to the bench's own parser.
        b = bench_sub.add_parser(name, prefix_chars="+", add_help=False)
        b.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    flags: dict[str, Any] = {
        "data_dir": getattr(args, "data_dir", None),
        "model": getattr(args, "model", None),
    }
    flags.update(extra)
    return load_settings({k: v for k, v in flags.items() if v is not None})


# ---- ask --------------------------------------------------------------------------------------------------


def _print_answer(answer: dict[str, Any]) -> None:
    out = sys.stdout
    deadline = answer.get("deadline_ms")
    print(
        f"Answer ({answer['path']} path, {answer['elapsed_ms']:.0f} ms of {deadline:.0f} ms, "
        f"strategy {answer['strategy']}):",
        file=out,
    )
    print(f"  {answer['answer']}", file=out)
    if answer.get("choice"):
        probabilities = answer.get("option_probabilities") or []
        shown = "  ".join(f"{i}: {p:.2f}" for i, p in enumerate(probabilities, start=1))
        print(f"Choice: {answer['choice']}" + (f"  (probabilities {shown})" if shown else ""), file=out)
    if answer.get("trimmed"):
        print(f"Trimmed: {answer['trimmed']}", file=out)
    if answer.get("fallback_reason"):
        print(f"Fallback: {answer['fallback_reason']}", file=out)
    for i, step in enumerate(answer.get("steps", []), start=1):
        what = f'"{step["query"]}"' if step.get("query") else ""
        print(
            f"  {i}. {step['action']:<8} {step['path']:<8} U {step['progress_before']:.2f}→"
            f"{step['progress_after']:.2f} {step['latency_ms']:7.1f} ms  {what[:100]}",
            file=out,
        )
    if answer.get("sources"):
        print("Sources: " + ", ".join(answer["sources"]), file=out)


async def _ask_local(
    settings: Settings,
    question_text: str,
    options: Sequence[str],
    strategy: str | None,
    deadline_ms: int | None,
) -> dict[str, Any]:
    from xapp.pipeline.budget import request_deadline
    from xapp.pipeline.runner import build_pipeline
    from xapp.server.validation import question as validate_question

    question = validate_question(question_text, list(options), settings)
    name = strategy or settings.strategy
    if name == "template":
        settings = settings.replace(llm=False)  # no engine to start for a path that never uses it
    async with build_pipeline(settings) as pipeline:
        # The clock starts here: knowledge-base ingestion and model loading happen before it.
        deadline = request_deadline(settings, deadline_ms or 0)  # as the server computes it
        answer = await pipeline.answer(question, strategy=name, deadline=deadline)
        return answer.to_dict()


def _cmd_ask(args: argparse.Namespace) -> int:
    if args.deadline_ms is not None and args.deadline_ms <= 0:
        raise ArgoError(f"--deadline-ms must be > 0, got {args.deadline_ms}")
    if not args.question.strip():
        raise ArgoError("the question must not be empty")
    if args.server:
        import grpc

        from xapp.client import ask as remote_ask

        try:
            result = remote_ask(
                args.server,
                args.question,
                args.option,
                strategy=args.strategy or "",
                deadline_ms=args.deadline_ms or 0,
            )
        except grpc.RpcError as exc:
            raise ArgoError(f"server {args.server}: {exc.code().name}: {exc.details()}") from None
    else:
        # A CLI deadline may exceed the server cap: the user asked for it explicitly.
        extra: dict[str, Any] = {}
        if args.deadline_ms:
            extra["max_deadline_ms"] = max(args.deadline_ms, 1)
        result = asyncio.run(
            _ask_local(_settings(args, **extra), args.question, args.option, args.strategy, args.deadline_ms)
        )
    if args.json:
        print(json.dumps(result, indent=None))
    else:
        _print_answer(result)
    return 0


# ---- other commands -------------------------------------------------------------------------------------


def _cmd_policy(args: argparse.Namespace) -> int:
    from xapp.policy.mdp import solve_cached

    mdp: dict[str, Any] = {}
    for name in (
        "quality",
        "delta_retrieve",
        "p_success",
        "delta_reason",
        "cost_retrieve",
        "cost_reason",
        "mu",
        "gamma",
    ):
        value = getattr(args, name)
        if value is not None:
            mdp[name] = value
    settings = _settings(args, mdp=mdp or None)
    solution = solve_cached(settings.mdp)
    if args.json:
        print(json.dumps(solution.to_dict()))
        return 0
    p = settings.mdp
    print(
        f"MDP: δ_r={p.delta_retrieve} p_s={p.p_success} δ_p={p.delta_reason} c_r={p.cost_retrieve} "
        f"c_p={p.cost_reason} μ={p.mu} γ={p.gamma} σ={p.quality} U∈[0,{p.u_max}] ({p.grid} points)"
    )
    print(f"θ_cont = {solution.theta_cont:.3f}  (below: Retrieve; above: Reason)")
    print(f"θ*     = {solution.theta_star:.3f}  (from here: Terminate)")
    share = {a.value: solution.action_share(a) for a in (Action.RETRIEVE, Action.REASON, Action.TERMINATE)}
    print("share of states: " + ", ".join(f"{k} {v:.0%}" for k, v in share.items()))
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    from xapp.store.knowledge_base import KnowledgeBase

    if not args.path.exists():
        raise ArgoError(f"no such file or folder: {args.path}")
    if args.path.is_file() and not os.access(args.path, os.R_OK):
        raise ArgoError(f"cannot read {args.path}: permission denied")
    if args.batch_size < 1:
        raise ArgoError("--batch-size must be >= 1")
    kb = KnowledgeBase.open(_settings(args))
    kb.ensure_builtin(show_progress=not args.no_progress)
    try:
        report = kb.ingest(
            args.path,
            batch_size=args.batch_size,
            show_progress=not args.no_progress,
            exclude=args.exclude,
            default_excludes=not args.no_default_excludes,
        )
    except ValueError as exc:
        raise ArgoError(str(exc)) from None
    print(f"{report.summary()}; collection {kb.collection_name!r} holds {kb.count()} chunks")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from xapp.server.app import serve

    flags: dict[str, Any] = {
        "data_dir": args.data_dir,
        "model": args.model,
        "grpc_port": args.grpc_port,
        "http_port": args.http_port,
        "strategy": args.strategy,
        "llm": False if args.no_llm else None,
    }
    flags = {k: v for k, v in flags.items() if v is not None}
    settings = load_settings(flags)
    return serve(settings, grpc_port=settings.grpc_port, http_port=settings.http_port, host=args.host, flags=flags)


def _cmd_quantize(args: argparse.Namespace) -> int:
    from xapp.llm.quantize import quantize

    result = quantize(args.src, args.dst, overwrite=args.force)
    print(
        f"wrote {result.scheme} checkpoint to {args.dst}: {result.quantized_layers} layers quantized, "
        f"{result.bytes_before / 2**20:.1f} → {result.bytes_after / 2**20:.1f} MiB in {result.seconds:.1f} s"
    )
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import importlib

    bench = importlib.import_module(BENCHES[args.bench_command])
    return int(bench.main(args.args))


COMMANDS = {
    "ask": _cmd_ask,
    "policy": _cmd_policy,
    "ingest": _cmd_ingest,
    "serve": _cmd_serve,
    "quantize": _cmd_quantize,
    "bench": _cmd_bench,
    "kb": kb_cli.run,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _configure_logging(args.command)
    try:
        return COMMANDS[args.command](args)
    except ArgoError as exc:
        print(f"argo-xapp: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
