"""The measurement commands: question files in both ORAN-Bench formats, latency and accuracy runs on the
template path (real Chroma knowledge base, real pipeline), the HF-transformers baseline on a tiny real model,
and — marked slow — the LLM strategies on the real vLLM engine."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest

from xapp.bench import accuracy, answers, capacity, latency
from xapp.bench.common import (
    BenchQuestion,
    describe,
    difficulty_from_name,
    interleave_by_difficulty,
    load_questions,
    percentile,
)
from xapp.errors import ArgoError

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "oranbench-dev"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

EASY = {
    "question": "What is a key objective of Open Testing and Integration Centres (OTICs) in the O-RAN ecosystem?",
    "options": [
        "1. To develop proprietary testing methodologies for O-RAN equipment.",
        "2. To ensure the interoperability of RAN equipment from different vendors.",
        "3. To promote the use of closed-source software in O-RAN deployments.",
        "4. To restrict access to O-RAN specifications to authorized vendors.",
    ],
    "answer": "2",
    "difficulty": "easy",
}
MEDIUM = {
    "question": "Which interface carries policies from the non-RT RIC to the near-RT RIC?",
    "options": ["1. E2", "2. O1", "3. A1", "4. F1"],
    "answer": "3",
    "difficulty": "intermediate",
}
# The original ORAN-Bench-13K layout: JSON Lines of [question, options, "k"], difficulty only in the name.
HARD_ARRAY = [
    "Which near-RT RIC interface terminates in E2 nodes such as the O-DU and O-CU?",
    ["1. O2", "2. E2", "3. A1", "4. Open Fronthaul M-plane"],
    "2",
]


def _csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 20_000  # a real figure, not an empty canvas


@pytest.fixture(scope="module")
def questions_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("oranbench")
    (d / "mixed.jsonl").write_text(json.dumps(EASY) + "\n\n" + json.dumps(MEDIUM) + "\n")
    (d / "fin_H.json").write_text(json.dumps(HARD_ARRAY) + "\n")
    (d / "README.md").write_text("not a question file\n")
    return d


# ---- question files and statistics (no pipeline) ------------------------------------------------------------


def test_reads_both_oranbench_formats(questions_dir: Path) -> None:
    loaded = load_questions(questions_dir)
    assert loaded.skipped == []
    by_text = {q.text: q for q in loaded.rows}
    assert len(by_text) == 3
    hard = by_text[HARD_ARRAY[0]]
    assert (hard.answer, hard.difficulty, len(hard.options)) == (2, "difficult", 4)
    assert hard.source == "fin_H.json:1"
    easy = by_text[EASY["question"]]
    assert (easy.answer, easy.difficulty) == (2, "easy")
    assert by_text[MEDIUM["question"]].difficulty == "intermediate"


def test_json_array_document_text_file_and_bad_rows(tmp_path: Path) -> None:
    doc = tmp_path / "easy.json"
    doc.write_text(json.dumps([HARD_ARRAY, {**MEDIUM, "difficulty": "hard"}]))
    rows = load_questions(doc).rows
    assert [r.difficulty for r in rows] == ["easy", "difficult"]  # file name, then the row's own field
    txt = tmp_path / "q.txt"
    txt.write_text("# comment\nWhat is E2?\n\nWhat is A1?\n")
    assert [q.text for q in load_questions(txt).rows] == ["What is E2?", "What is A1?"]
    empty = tmp_path / "intermediate.jsonl"
    empty.write_text(json.dumps({**MEDIUM, "question": " "}) + "\n" + json.dumps(MEDIUM) + "\n")
    loaded = load_questions(empty)
    assert len(loaded.rows) == 1 and loaded.skipped == ["intermediate.jsonl:1: empty question"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**MEDIUM, "answer": "7"}) + "\n")
    with pytest.raises(ArgoError, match=r"bad.jsonl:1: answer 7 is outside options 1..4"):
        load_questions(bad)
    bad.write_text("{not json\n")
    with pytest.raises(ArgoError, match=r"bad.jsonl:1: not valid JSON"):
        load_questions(bad)
    with pytest.raises(ArgoError, match="no such file"):
        load_questions(tmp_path / "missing.jsonl")


@pytest.mark.skipif(not DEV.is_dir(), reason="../shared/data/oranbench-dev is not on this machine")
def test_dev_split_loads_with_difficulties() -> None:
    loaded = load_questions(DEV)
    counts = {d: sum(r.difficulty == d for r in loaded.rows) for d in ("easy", "intermediate", "difficult")}
    assert counts["easy"] == 60 and counts["difficult"] == 90
    assert counts["intermediate"] + len(loaded.skipped) == 150
    assert all(r.answer in (1, 2, 3, 4) and len(r.options) == 4 for r in loaded.rows)


def test_difficulty_names_interleave_and_statistics() -> None:
    assert difficulty_from_name(Path("fin_E.json")) == "easy"
    assert difficulty_from_name(Path("fin_M.json")) == "intermediate"
    assert difficulty_from_name(Path("hard.jsonl")) == "difficult"
    assert difficulty_from_name(Path("questions.jsonl")) == ""
    rows = [BenchQuestion(f"{d}{i}", difficulty=d) for d in ("difficult", "easy") for i in range(3)]
    assert [r.text for r in interleave_by_difficulty(rows, 3)] == ["easy0", "difficult0", "easy1"]
    assert accuracy.majority([3, 2, 2, 3, 1]) == 2  # tie → the smaller index
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    stats = describe([10.0, 20.0, 30.0])
    assert (stats["mean"], stats["median"], stats["min"], stats["max"]) == (20.0, 20.0, 10.0, 30.0)
    assert stats["std"] == pytest.approx(10.0)
    assert stats["p95"] == pytest.approx(29.0)


def test_bad_arguments_fail_with_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ArgoError, match="--queries must be >= 1"):
        latency.main(["--queries", "0", "--out", str(tmp_path)])
    with pytest.raises(ArgoError, match="--deadline-ms must be > 0"):
        latency.main(["--deadline-ms", "0", "--out", str(tmp_path), "--data-dir", str(tmp_path)])
    with pytest.raises(ArgoError, match="no such file"):
        accuracy.main(["--questions", str(tmp_path / "none"), "--out", str(tmp_path)])
    with pytest.raises(SystemExit):  # argparse: --queries and --questions exclude each other
        latency.main(["--queries", "2", "--questions", "x.txt", "--out", str(tmp_path)])


def test_cli_routes_bench_options_to_the_bench_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``argo-xapp bench latency|accuracy`` hands every option to the bench's own parser."""
    from xapp.cli import main

    missing = str(tmp_path / "none")
    assert main(["bench", "accuracy", "--questions", missing, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no such file or folder" in err and "unrecognized arguments" not in err
    assert main(["bench", "latency", "--queries", "0", "--out", str(tmp_path / "o")]) == 2
    assert "--queries must be >= 1" in capsys.readouterr().err


def test_every_bench_is_a_subcommand_whose_help_works(capsys: pytest.CaptureFixture[str]) -> None:
    """``argo-xapp bench NAME -h`` reaches each bench's own parser (the former bench/*.py scripts too)."""
    import argparse

    from xapp.cli import BENCHES, _parser, main

    subparsers = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    bench = next(a for a in subparsers.choices["bench"]._actions if isinstance(a, argparse._SubParsersAction))
    assert set(bench.choices) == set(BENCHES)
    assert {"engine", "load", "remote", "tracing-overhead"} <= set(BENCHES)
    for name in BENCHES:
        with pytest.raises(SystemExit) as exit_:
            main(["bench", name, "-h"])
        assert exit_.value.code == 0, name
        assert capsys.readouterr().out.startswith(f"usage: argo-xapp bench {name} "), name


def test_without_matplotlib_a_bench_skips_only_its_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import subprocess
    import sys

    from xapp.bench import plots

    # matplotlib is the bench extra's: the module imports without it.
    probe = "import sys; sys.modules['matplotlib'] = None\nfrom xapp.bench import plots\nprint(plots.available())"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr

    summary = [{"strategy": "template", "difficulty": "all", "accuracy": 0.5, "mean_ms": 10.0}]
    original = plots.plt
    plots.plt = None  # type: ignore[assignment]
    try:
        assert plots.plot_accuracy(summary, tmp_path / "accuracy.png", title="t") is False
        assert plots.plot_latency([], [], tmp_path / "latency.png", deadline_ms=1000, title="t") is False
    finally:
        plots.plt = original
    assert not list(tmp_path.iterdir())
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and all("skipped" in line and "argo-xapp[bench]" in line for line in lines)


# ---- real runs on the template path -------------------------------------------------------------------------


def test_latency_template_run_writes_csvs_and_png(builtin_kb_settings: Any, tmp_path: Path) -> None:
    out = tmp_path / "latency"
    data = str(builtin_kb_settings.data_dir)
    argv = ["--queries", "3", "--warmup", "1", "--strategy", "template", "--data-dir", data, "--out", str(out)]
    assert latency.main(argv) == 0

    columns, rows = _csv(out / "latency_measurements.csv")
    assert columns == list(latency.MEASUREMENT_COLUMNS)
    assert [r["phase"] for r in rows] == ["warmup", "measured", "measured", "measured"]
    measured = [r for r in rows if r["phase"] == "measured"]
    assert [r["question"] for r in measured] == list(latency.SEED_QUESTIONS)
    assert rows[0]["question"] not in latency.DEFAULT_QUESTIONS  # warm-up questions are never measured
    for r in measured:
        parts = [float(r[f"{c}_ms"]) for c in latency.COMPONENTS]
        assert all(p >= 0 for p in parts)
        # The components and the overhead between them add up to the pipeline's own elapsed time.
        assert sum(parts) == pytest.approx(float(r["total_ms"]), abs=0.01)
        assert float(r["wall_ms"]) >= float(r["total_ms"])
        assert r["path"] == "template" and r["system"] == "argo" and float(r["deadline_ms"]) == 1000.0
        assert r["met_deadline"] in ("True", "False")
        assert float(r["reasoner_ms"]) == 0.0  # templates never reason

    columns, summary = _csv(out / "latency_summary.csv")
    assert columns == list(latency.SUMMARY_COLUMNS)
    assert [s["series"] for s in summary] == ["total", "wall", *latency.COMPONENTS]
    total = summary[0]
    assert int(total["n"]) == 3 and int(total["warmup_runs"]) == 1
    assert float(total["min_ms"]) <= float(total["median_ms"]) <= float(total["p95_ms"]) <= float(total["max_ms"])
    assert 0.0 <= float(total["pass_rate"]) <= 1.0
    shares = sum(float(s["share_of_total"]) for s in summary[2:])
    assert shares == pytest.approx(1.0, abs=0.01)
    _assert_png(out / "latency_analysis.png")
    run = json.loads((out / "latency_run.json").read_text())
    assert run["strategy"] == "template" and run["machine_before"]["cpus_usable"] >= 1


def test_accuracy_template_run_writes_csvs_and_png(
    builtin_kb_settings: Any, questions_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "accuracy"
    argv = [
        "--questions", str(questions_dir), "--strategy", "template", "--deadline-ms", "3000",
        "--data-dir", str(builtin_kb_settings.data_dir), "--out", str(out), "--no-progress",
    ]  # fmt: skip
    assert accuracy.main(argv) == 0
    columns, results = _csv(out / "accuracy_results.csv")
    assert columns == list(accuracy.RESULT_COLUMNS)
    assert len(results) == 3
    for r in results:
        assert r["strategy"] == "template" and r["path"] == "template" and r["llm_answer"] == "False"
        assert r["choice"] in ("1", "2", "3", "4")
        assert r["correct"] == str(r["choice"] == r["answer"])
    assert {r["difficulty"] for r in results} == {"easy", "intermediate", "difficult"}

    columns, summary = _csv(out / "accuracy_summary.csv")
    assert columns == list(accuracy.SUMMARY_COLUMNS)
    assert [s["difficulty"] for s in summary] == ["easy", "intermediate", "difficult", "all"]
    overall = summary[-1]
    assert int(overall["n"]) == 3
    assert float(overall["accuracy"]) == pytest.approx(sum(r["correct"] == "True" for r in results) / 3, abs=1e-3)
    # Gold answers 2, 3, 2: always answering 2 scores 2/3.
    assert overall["majority_answer"] == "2"
    assert float(overall["majority_baseline"]) == pytest.approx(2 / 3, abs=1e-3)
    assert float(overall["llm_path_share"]) == 0.0 and float(overall["template_path_share"]) == 1.0
    assert float(overall["mean_retrieves"]) >= 0.0 and float(overall["mean_reasons"]) == 0.0
    assert not math.isnan(float(overall["mean_ms"]))
    _assert_png(out / "accuracy.png")


def test_open_answers_are_scored_by_key_facts_and_cited_sources() -> None:
    from xapp.bench.common import EvalQuestion
    from xapp.domain import Answer, PathKind

    q = EvalQuestion("x", "port", "Which port?", ("ric-dep/README.md",), ("36422", "SCTP"))
    reply = Answer(
        answer="E2 termination listens on **36422**/sctp [ric-dep/README.md; other.md].",
        choice=None,
        path=PathKind.LLM,
        fallback_reason=None,
        steps=[],
        elapsed_ms=1.0,
        strategy="mdp",
        deadline_ms=1000.0,
        sources=["docs/ric-dep/README.md"],
    )
    assert answers.cited_sources(reply.answer) == ["ric-dep/README.md", "other.md"]
    scored = answers.score(q, reply)
    assert scored["facts_found"] == 2 and scored["has_facts"] and scored["cites_source"]
    assert scored["source_retrieved"]
    missing = answers.score(q, dataclasses.replace(reply, answer="It uses port 38000.", sources=[]))
    assert missing["facts_found"] == 0 and not missing["has_facts"] and not missing["cites_source"]


def test_answers_template_run_writes_csvs(builtin_kb_settings: Any, tmp_path: Path) -> None:
    out = tmp_path / "answers"
    argv = [
        "--strategy", "template", "--limit", "3", "--deadline-ms", "3000",
        "--data-dir", str(builtin_kb_settings.data_dir), "--out", str(out), "--no-progress",
    ]  # fmt: skip
    assert answers.main(argv) == 0
    columns, results = _csv(out / "answers_results.csv")
    assert columns == list(answers.RESULT_COLUMNS) and len(results) == 3
    for r in results:
        assert r["path"] == "template" and r["answer"].strip() and r["met_deadline"] == "True"
        facts = r["key_facts"].split(" | ")
        found = [f for f in facts if answers.normalise(f) in answers.normalise(r["answer"])]
        assert int(r["facts_found"]) == len(found) and r["has_facts"] == str(len(found) == len(facts))
        assert r["repeated_queries"] == "0"
    columns, summary = _csv(out / "answers_summary.csv")
    assert columns == list(answers.SUMMARY_COLUMNS) and summary[0]["strategy"] == "template"
    assert float(summary[0]["has_facts"]) == pytest.approx(sum(r["has_facts"] == "True" for r in results) / 3, abs=1e-3)


def test_latency_compare_baseline_with_transformers(
    builtin_kb_settings: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """``--compare-baseline`` on the same questions with HF ``generate``; the tiny random model never stops
    early, so every generation uses its whole token budget."""
    out = tmp_path / "compare"
    argv = [
        "--queries", "2", "--warmup", "0", "--strategy", "template", "--compare-baseline",
        "--model", str(tiny_model_dir), "--data-dir", str(builtin_kb_settings.data_dir), "--out", str(out),
    ]  # fmt: skip
    assert latency.main(argv) == 0
    _, rows = _csv(out / "latency_measurements.csv")
    base = [r for r in rows if r["system"] == "hf-baseline"]
    assert [r["question"] for r in base] == list(latency.SEED_QUESTIONS[:2])
    settings = builtin_kb_settings
    budget = settings.max_tokens_decompose + settings.max_tokens_reason + settings.max_tokens_synthesize
    for r in base:
        assert int(r["completion_tokens"]) == budget
        assert all(float(r[f"{c}_ms"]) > 0 for c in ("decomposer", "retriever", "reasoner", "synthesizer"))
        parts = sum(float(r[f"{c}_ms"]) for c in latency.COMPONENTS)
        assert parts == pytest.approx(float(r["total_ms"]), abs=0.01)
    _, summary = _csv(out / "latency_summary.csv")
    base_total = next(s for s in summary if s["system"] == "hf-baseline" and s["series"] == "total")
    argo_total = next(s for s in summary if s["system"] == "argo" and s["series"] == "total")
    assert float(base_total["ratio_vs_argo"]) == pytest.approx(
        float(base_total["mean_ms"]) / float(argo_total["mean_ms"]), rel=1e-3
    )
    run = json.loads((out / "latency_run.json").read_text())
    assert run["baseline"]["model_path"] == str(tiny_model_dir.resolve())
    _assert_png(out / "latency_analysis.png")


# ---- the LLM strategies on the real vLLM engine ---------------------------------------------------------------


@pytest.mark.slow
def test_latency_and_accuracy_with_vllm(
    llm_engine: Any, run: Any, builtin_kb_settings: Any, questions_dir: Path, tmp_path: Path
) -> None:
    settings = builtin_kb_settings.replace(llm=True)
    questions = latency.default_questions(2)
    report = run(
        latency.run_latency(
            settings, questions, tmp_path / "lat", strategy="always-reason", deadline_ms=20_000, warmup=1,
            llm=llm_engine,
        )
    )  # fmt: skip
    assert report.run["model"] == llm_engine.model_name
    for m in report.measured:
        assert m.completion_tokens > 0 and m.components["reasoner"] > 0
        assert m.path in ("llm", "mixed")
    _assert_png(tmp_path / "lat" / "latency_analysis.png")

    rows = load_questions(questions_dir).rows[:2]
    acc = run(
        accuracy.run_accuracy(
            settings, rows, tmp_path / "acc", strategies=["fixed-k", "template"], deadline_ms=20_000,
            progress=False, llm=llm_engine,
        )
    )  # fmt: skip
    fixed, template = acc.row("fixed-k"), acc.row("template")
    assert fixed["mean_retrieves"] == settings.fixed_k and fixed["template_path_share"] == 0.0, acc.results
    for r in acc.results:
        if r["strategy"] == "fixed-k":
            # One prefill chooses the option: an LLM answer, with the chosen option's probability.
            assert r["llm_answer"] and 0.0 < r["llm_probability"] <= 1.0
            probabilities = [float(x) for x in r["option_probabilities"].split()]
            assert len(probabilities) >= 2 and max(probabilities) == pytest.approx(r["llm_probability"], abs=1e-4)
        else:
            assert r["option_probabilities"] == ""  # the template chose: no probabilities
    assert template["llm_answer_share"] == 0.0 and template["template_path_share"] == 1.0
    _, summary = _csv(tmp_path / "acc" / "accuracy_summary.csv")
    assert {s["strategy"] for s in summary} == {"fixed-k", "template"}
    assert llm_engine.num_unfinished_requests() == 0


@pytest.mark.slow
def test_capacity_measures_choices_per_second_alone_and_batched(
    llm_engine: Any, run: Any, builtin_kb_settings: Any, questions_dir: Path, tmp_path: Path
) -> None:
    rows = [r for r in load_questions(questions_dir).rows if r.options][:4]
    results = run(capacity.run_capacity(builtin_kb_settings, rows, tmp_path / "cap", batches=[1, 2], llm=llm_engine))
    assert [r["batch"] for r in results] == [1, 2]
    for r in results:
        assert r["choices"] == len(rows) >= 2 and r["choices_per_s"] > 0 and r["uncached_tokens_mean"] > 0
        assert 0 < r["group_ms_mean"] <= r["group_ms_max"]
        assert r["seconds"] >= r["group_ms_max"] / 1000.0  # the groups make up the run
    header, rows_out = _csv(tmp_path / "cap" / "capacity.csv")
    assert header == list(capacity.COLUMNS) and len(rows_out) == 2
    assert json.loads((tmp_path / "cap" / "capacity_run.json").read_text())["model"] == llm_engine.model_name
    assert llm_engine.num_unfinished_requests() == 0
    with pytest.raises(ArgoError, match="no multiple-choice"):
        run(capacity.run_capacity(builtin_kb_settings, [], tmp_path / "cap", batches=[1], llm=llm_engine))
