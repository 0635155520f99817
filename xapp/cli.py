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
    "answers": "xapp.bench.answers",
    "engine": "xapp.bench.engine",
    "load": "xapp.bench.load",
    "remote": "xapp.bench.remote",
    "tracing-overhead": "xapp.bench.tracing_overhead",
    "speculation": "xapp.bench.speculation",
    "capacity": "xapp.bench.capacity",
}

MODEL_HELP = (
    "offline model short name (qwen2.5-coder-1.5b or qwen2.5-coder-0.5b), a model folder, a .gguf file or a "
    "hub id (default: $ARGO_MODEL, else the descriptor's, else qwen2.5-coder-1.5b)"
)
DATA_DIR_HELP = (
    "all state lives here: models, knowledge base, caches (default: $ARGO_DATA_DIR, else ~/.local/share/argo-xapp)"
)
# One line per strategy (argo-xapp ask --help, serve --help).
STRATEGY_HELP = {
    "mdp": "the MDP policy: retrieve below θ_cont, reason up to θ*, then answer (ARGO; the default)",
    "fixed-k": "retrieve exactly fixed_k times, then answer (classic RAG)",
    "always-reason": "reason every step until progress reaches θ* (never retrieve)",
    "always-retrieve": "retrieve until progress reaches θ*, never reason",
    "random": "a random action each step (seeded: reproducible), a baseline",
    "template": "no LLM at all: retrieval and template answers only (fastest)",
}
assert set(STRATEGY_HELP) == set(STRATEGIES)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's examples as written; wraps the rest."""


def _strategies_text() -> str:
    width = max(map(len, STRATEGY_HELP))
    return "strategies:\n" + "\n".join(f"  {name:<{width}}  {text}" for name, text in STRATEGY_HELP.items())


def _sub(sub: Any, name: str, help: str, *, epilog: str = "", description: str | None = None) -> Any:
    return sub.add_parser(
        name, help=help, description=description or help[0].upper() + help[1:] + ".", epilog=epilog,
        formatter_class=_Formatter,
    )  # fmt: skip


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, metavar="DIR", help=DATA_DIR_HELP)


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help=MODEL_HELP)


def _add_connection(p: argparse.ArgumentParser) -> None:
    """How ``ask --server`` reaches a server with TLS, mutual TLS or token auth (xapp.client.Connection)."""
    g = p.add_argument_group("with --server: TLS and token (docs/deploy.md#security)")
    g.add_argument("--tls", action="store_true", help="TLS, trusting the system's CAs (default: plain text)")
    g.add_argument("--ca-file", metavar="PEM", help="TLS, trusting this CA (default: none)")
    g.add_argument("--cert-file", metavar="PEM", help="client certificate for mutual TLS (default: none)")
    g.add_argument("--key-file", metavar="PEM", help="the client certificate's key (default: none)")
    g.add_argument(
        "--token-file", metavar="FILE",
        help="send the token in FILE as 'authorization: Bearer' (default: $ARGO_CLIENT_TOKEN, else no token)",
    )  # fmt: skip


def _connection(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "tls": args.tls, "ca_file": args.ca_file, "cert_file": args.cert_file, "key_file": args.key_file,
        "token_file": args.token_file, "token": None if args.token_file else os.environ.get("ARGO_CLIENT_TOKEN"),
    }  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    d = Settings
    parser = argparse.ArgumentParser(
        prog="argo-xapp",
        description=__doc__.splitlines()[0],
        formatter_class=_Formatter,
        epilog="examples:\n"
        '  argo-xapp ask "Which interface connects the near-RT RIC to E2 nodes?"\n'
        "  argo-xapp ingest ../shared/data/oran-sc-docs\n"
        "  argo-xapp serve --grpc-port 50051 --http-port 8080\n"
        "Run argo-xapp COMMAND --help for a command's options. Settings: xapp/config.py, ARGO_<NAME> variables.",
    )
    parser.add_argument("--version", action="version", version=f"argo-xapp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ask = _sub(
        sub,
        "ask",
        "answer one O-RAN question (here, or on a running server with --server)",
        epilog=_strategies_text()
        + "\n\nexamples:\n"
        '  argo-xapp ask "What does the E2 interface connect?"\n'
        '  argo-xapp ask "Which RIC hosts rApps?" --option "near-RT RIC" --option "non-RT RIC" --json\n'
        '  argo-xapp ask "What is A1?" --strategy template --deadline-ms 300\n'
        '  argo-xapp ask "What is O1?" --server localhost:50051\n'
        "\nThe deadline is capped at max_deadline_ms (here: the settings', over gRPC: the server's); the reply\n"
        "says when it was. Locally the clock starts once the model and the knowledge base are loaded.",
    )
    ask.add_argument("question", help="the question (at most max_question_chars characters)")
    ask.add_argument(
        "--option", action="append", default=[], metavar="TEXT",
        help="a multiple-choice option; repeat for each (default: none, an open answer)",
    )  # fmt: skip
    ask.add_argument(
        "--strategy", choices=STRATEGIES, metavar="NAME",
        help=f"how the loop chooses its steps, one of {', '.join(STRATEGIES)} (see below; default: $ARGO_STRATEGY, "
        f"else the server's or {d.strategy})",
    )  # fmt: skip
    ask.add_argument(
        "--deadline-ms", type=int, metavar="MS",
        help=f"answer within this many ms, > 0 (default: deadline_ms, {d.deadline_ms}; capped at max_deadline_ms, "
        f"{d.max_deadline_ms})",
    )  # fmt: skip
    ask.add_argument("--json", action="store_true", help="print one JSON object instead of text (default: text)")
    ask.add_argument(
        "--server", metavar="HOST:PORT",
        help="ask a running argo-xapp over gRPC instead of loading the model here (default: answer locally)",
    )  # fmt: skip
    _add_data_dir(ask)
    ask.add_argument("--model", help=MODEL_HELP + "; not with --server (the server's model answers)")
    _add_connection(ask)

    policy = _sub(
        sub,
        "policy",
        "solve the MDP and print θ_cont and θ* for the configured parameters",
        epilog="examples:\n  argo-xapp policy\n  argo-xapp policy --gamma 0.9 --cost-reason 0.05 --json",
    )
    policy.add_argument("--json", action="store_true", help="print the solution as JSON (default: text)")
    mdp = d().mdp
    policy.add_argument(
        "--quality", choices=("linear", "sqrt", "saturating", "sigmoid"),
        help=f"the quality function σ(U) (default: {mdp.quality})",
    )  # fmt: skip
    for name, what in (
        ("delta-retrieve", "progress a successful retrieval adds, δ_r"),
        ("p-success", "probability that a retrieval adds information, p_s"),
        ("delta-reason", "progress a reasoning step adds, δ_p"),
        ("cost-retrieve", "cost of a retrieval, c_r"),
        ("cost-reason", "cost of a reasoning step, c_p"),
        ("mu", "weight of the costs against the answer's quality, μ"),
        ("gamma", "discount factor, γ"),
    ):
        default = getattr(mdp, name.replace("-", "_"))
        policy.add_argument(f"--{name}", type=float, metavar="X", help=f"{what} (default: {default})")
    _add_data_dir(policy)

    ingest = _sub(
        sub,
        "ingest",
        "add or update .md/.rst/.txt/.html/.pdf/.docx files (replaces changed ones)",
        epilog="examples:\n"
        "  argo-xapp ingest ../shared/data/oran-sc-docs\n"
        "  argo-xapp ingest specs/ --exclude 'drafts/*' --exclude '*.txt'\n"
        "A running xApp sees the change within a second (see argo-xapp kb --help).",
    )
    ingest.add_argument("path", type=Path, help="a file, or a folder walked recursively")
    ingest.add_argument(
        "--batch-size", type=int, default=128, metavar="N", help="chunks embedded at once (default: 128)"
    )
    ingest.add_argument("--no-progress", action="store_true", help="no progress bar (default: a bar on stderr)")
    ingest.add_argument(
        "--exclude", action="append", default=[], metavar="GLOB",
        help="skip paths matching GLOB; repeat for more (default: none besides the default excludes)",
    )  # fmt: skip
    ingest.add_argument(
        "--no-default-excludes", action="store_true",
        help="also take LICENSE*, SOURCE_COMMIT*, ... (default: skipped)",
    )  # fmt: skip
    _add_data_dir(ingest)
    kb_cli.add_parser(sub)

    serve = _sub(
        sub,
        "serve",
        "run the gRPC xApp (and the O-RAN SC HTTP endpoints: health, metrics)",
        epilog=_strategies_text()
        + "\n\nexamples:\n"
        "  argo-xapp serve\n"
        "  argo-xapp serve --grpc-port 50052 --http-port 8081 --strategy fixed-k\n"
        "  argo-xapp serve --no-llm           # templates only: starts in seconds, no model\n"
        "  argo-xapp serve --llm-url http://vllm:8000   # the LLM on a vLLM server, no engine here\n"
        "Logs: JSON lines on stderr (ARGO_LOG_FORMAT=console for reading, ARGO_LOG_LEVEL=DEBUG for more).",
    )
    serve.add_argument(
        "--grpc-port", type=int, metavar="PORT", help=f"argo.v1.ArgoService port (default: {d.grpc_port})"
    )
    serve.add_argument(
        "--http-port", type=int, metavar="PORT",
        help="/ric/v1/health/alive, /ric/v1/health/ready, /ric/v1/metrics; 0 picks a free one "
        f"(default: {d.http_port})",
    )  # fmt: skip
    serve.add_argument(
        "--host", help=f"address both ports listen on, e.g. 127.0.0.1 (default: $ARGO_HOST, else {d.host}, every "
        "interface); TLS and tokens: ARGO_TLS_*, ARGO_AUTH_TOKEN_FILE (docs/deploy.md#security)",
    )  # fmt: skip
    serve.add_argument(
        "--strategy", choices=STRATEGIES, metavar="NAME",
        help=f"the strategy for requests that name none (default: {d.strategy}; see below)",
    )  # fmt: skip
    llm_where = serve.add_mutually_exclusive_group()
    llm_where.add_argument(
        "--no-llm", action="store_true", help="serve the template path only, no engine (default: the LLM)"
    )
    llm_where.add_argument(
        "--llm-url", metavar="URL",
        help="use a vLLM OpenAI-compatible server (e.g. http://vllm:8000) instead of an in-process engine "
        "(default: $ARGO_LLM_URL, else in process; docs/scaling.md)",
    )  # fmt: skip
    _add_data_dir(serve)
    _add_model(serve)

    quantize = _sub(
        sub,
        "quantize",
        "make an int8 W8A8 (compressed-tensors) copy of a checkpoint",
        epilog="example:\n  argo-xapp quantize /models/Qwen2.5-3B-Instruct /models/Qwen2.5-3B-Instruct-W8A8",
    )
    quantize.add_argument("src", type=Path, help="a Hugging Face checkpoint folder (bf16 or fp16)")
    quantize.add_argument("dst", type=Path, help="where the W8A8 copy is written")
    quantize.add_argument("--force", action="store_true", help="replace DST if it exists (default: refuse)")

    bench = _sub(
        sub,
        "bench",
        "latency, accuracy, retrieval, open-answer, engine, load, remote-LLM and tracing-overhead measurements",
        epilog="examples:\n  argo-xapp bench latency -h\n"
        "  argo-xapp bench accuracy --questions ../shared/data/oranbench-dev --strategy mdp\n"
        "  argo-xapp bench load --target localhost:50051 --concurrency 1,4 --duration 20",
    )
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    for name, what in (
        ("latency", "latency per strategy and deadline (CSV, PNG)"),
        ("accuracy", "accuracy on multiple-choice questions (CSV)"),
        ("retrieval", "recall@k of the knowledge base (CSV)"),
        ("answers", "open answers on the evaluation set: key facts and citations (CSV)"),
        ("engine", "vLLM against HF transformers generate: start-up, prefill, decode (CSV, JSON)"),
        ("load", "concurrent callers of a running server's Answer RPC (CSV)"),
        ("remote", "the LLM over HTTP (a vLLM server, llm_url) and an engine-less replica's cost (CSV, JSON)"),
        ("tracing-overhead", "Answer latency with tracing off, recording, exporting over OTLP (CSV)"),
        ("speculation", "n-gram speculative decoding vs none, side by side: decode speed, choice latency (CSV)"),
        ("capacity", "closed-book option choices per second, one at a time and k together (CSV)"),
    ):
        # Every option, -h included, belongs to the bench's own parser.
        b = bench_sub.add_parser(name, prefix_chars="+", add_help=False, help=what + "; its options: BENCH -h")
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
    for line in answer["answer"].splitlines() or [""]:
        print(f"  {line}", file=out)
    if answer.get("deadline_note"):
        print(f"Deadline: {answer['deadline_note']}", file=out)
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
    from xapp.server.validation import deadline_fields
    from xapp.server.validation import question as validate_question

    question = validate_question(question_text, list(options), settings)
    name = strategy or settings.strategy
    if name == "template":
        settings = settings.replace(llm=False)  # no engine to start for a path that never uses it
    async with build_pipeline(settings) as pipeline:
        # The clock starts here: knowledge-base ingestion and model loading happen before it.
        deadline = request_deadline(settings, deadline_ms or 0)  # as the server computes it
        answer = await pipeline.answer(question, strategy=name, deadline=deadline)
        return {**answer.to_dict(), **deadline_fields(settings, deadline_ms or 0)}


def _cmd_ask(args: argparse.Namespace) -> int:
    if args.deadline_ms is not None and args.deadline_ms <= 0:
        raise ArgoError(f"--deadline-ms must be > 0, got {args.deadline_ms}")
    if not args.question.strip():
        raise ArgoError("the question must not be empty")
    if args.server and args.model:
        raise ArgoError("--model does not apply with --server: the server answers with its own model")
    if not args.server and any((args.tls, args.ca_file, args.cert_file, args.key_file, args.token_file)):
        raise ArgoError("--tls, --ca-file, --cert-file, --key-file and --token-file apply only with --server")
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
                **_connection(args),
            )
        except grpc.RpcError as exc:
            raise ArgoError(f"server {args.server}: {exc.code().name}: {exc.details()}") from None
        except ValueError as exc:  # a TLS or token file that cannot be read
            raise ArgoError(str(exc)) from None
    else:
        # The same rules as a server: capped at max_deadline_ms (ARGO_MAX_DEADLINE_MS raises the cap).
        result = asyncio.run(_ask_local(_settings(args), args.question, args.option, args.strategy, args.deadline_ms))
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
        "llm_url": args.llm_url,
        "host": args.host,
    }
    flags = {k: v for k, v in flags.items() if v is not None}
    settings = load_settings(flags)
    return serve(settings, grpc_port=settings.grpc_port, http_port=settings.http_port, host=settings.host, flags=flags)


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
    except BrokenPipeError:
        # The reader went away (`argo-xapp ask … | head -3`): stop quietly, and keep the interpreter's final
        # flush of stdout from raising again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a command killed by a closed pipe


if __name__ == "__main__":
    raise SystemExit(main())
