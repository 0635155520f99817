"""argo-xapp on the command line: answers as JSON inside the deadline, one-line errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xapp.config import Settings


def _cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ARGO_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "xapp", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_ask_template_json_answers_with_choice_inside_deadline(builtin_kb_settings: Settings) -> None:
    proc = _cli("ask", "Which interface connects the non-RT RIC to the near-RT RIC?",
                "--option", "1. E2", "--option", "2. A1", "--option", "3. O1", "--option", "4. F1",
                "--strategy", "template", "--deadline-ms", "1000", "--json", data_dir=builtin_kb_settings.data_dir)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["path"] == "template"
    # On a loaded machine the budget may cut a retrieval or the option embedding to stay on time, and says so.
    reason = doc["fallback_reason"] or ""
    assert all("no time" in r or "out of time" in r for r in reason.split("; ") if r), reason
    assert doc["choice"] in (1, 2, 3, 4) and doc["answer"]
    assert doc["elapsed_ms"] <= 1000
    assert doc["steps"] and {"action", "query", "sources", "progress_before", "progress_after",
                             "latency_ms", "path"} <= set(doc["steps"][0])


def test_ask_human_readable(builtin_kb_settings: Settings) -> None:
    proc = _cli("ask", "What is the E2 interface?", "--strategy", "template", data_dir=builtin_kb_settings.data_dir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Answer (template path") and "Sources:" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ask", "   ", "--strategy", "template"], "question must not be empty"),
        (["ask", "What is E2?", "--deadline-ms", "0"], "--deadline-ms must be > 0"),
        (["ask", "What is E2?", "--deadline-ms", "-5"], "--deadline-ms must be > 0"),
        (["ask", "What is E2?", "--strategy", "greedy"], "invalid choice: 'greedy'"),
        (["ingest", "/no/such/folder"], "no such file or folder"),
        (["ask", "What is E2?", "--strategy", "template", "--option", ""], "options[0]: must not be blank"),
    ],
)
def test_bad_input_is_one_clear_line_and_nonzero(tmp_path: Path, args: list[str], message: str) -> None:
    proc = _cli(*args, data_dir=tmp_path)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unreadable_and_unsupported_files(tmp_path: Path) -> None:
    binary = tmp_path / "image.png"
    binary.write_bytes(b"\x89PNG")
    proc = _cli("ingest", str(binary), data_dir=tmp_path / "data")
    assert proc.returncode == 2 and "unsupported file type" in proc.stderr and "Traceback" not in proc.stderr
    if os.geteuid() != 0:  # root reads everything: the permission check cannot be exercised as root
        secret = tmp_path / "secret.md"
        secret.write_text("# x\nhidden")
        secret.chmod(0)
        proc = _cli("ingest", str(secret), data_dir=tmp_path / "data")
        assert proc.returncode == 2 and "permission denied" in proc.stderr


def test_bad_setting_in_environment_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "ARGO_DATA_DIR": str(tmp_path), "ARGO_TOP_K": "many"}
    proc = subprocess.run([sys.executable, "-m", "xapp", "policy"], capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert "setting top_k: cannot use 'many'" in proc.stderr and "Traceback" not in proc.stderr


def test_every_argument_has_help_with_its_default_and_strategies_are_explained() -> None:
    import argparse

    from xapp.cli import STRATEGY_HELP, _parser

    parser = _parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    kb = next(a for a in subparsers.choices["kb"]._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    nested = [(f"kb {n}", p) for n, p in kb.choices.items()]
    for name, sub in [*subparsers.choices.items(), *nested]:
        if name == "bench" or sub.add_help is False:
            continue
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            text = action.help or ""
            if not text or (action.option_strings and "default" not in text):
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}: {text!r}")
        if name in ("ask", "serve"):
            epilog = sub.format_help()
            assert all(f"  {s}" in epilog and line in epilog for s, line in STRATEGY_HELP.items()), name
        if not name.startswith("kb "):
            assert "example" in (sub.epilog or ""), f"{name} --help shows no example"
    assert missing == []
    ask = subparsers.choices["ask"]
    assert "--model" in ask.format_help()
    for name in ("policy", "ingest", "quantize"):
        assert "--model" not in subparsers.choices[name].format_help(), f"--model does nothing in {name}"


def test_model_with_server_is_refused(tmp_path: Path) -> None:
    proc = _cli("ask", "What is E2?", "--server", "127.0.0.1:1", "--model", "x", data_dir=tmp_path)
    assert proc.returncode == 2 and "--model does not apply with --server" in proc.stderr


def test_closed_pipe_ends_quietly(builtin_kb_settings: Settings) -> None:
    # `argo-xapp ask … | head -1`: the reader closes the pipe after one line.
    env = {**os.environ, "ARGO_DATA_DIR": str(builtin_kb_settings.data_dir)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "xapp", "ask", "What is the E2 interface?", "--strategy", "template"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(120) in (0, 141), err
    assert first.startswith("Answer (template path")
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_quiet_stderr_and_the_deadline_cap_is_said(builtin_kb_settings: Settings) -> None:
    proc = _cli("ask", "What is the E2 interface?", "--strategy", "template", "--deadline-ms", "120000", "--json",
                data_dir=builtin_kb_settings.data_dir)  # fmt: skip
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr  # a warm data directory: nothing on stderr
    (line,) = proc.stdout.splitlines()  # one JSON object
    doc = json.loads(line)
    assert doc["requested_deadline_ms"] == 120000
    assert doc["deadline_note"] == "deadline 120000 ms capped to max_deadline_ms 1000 ms"
    assert doc["deadline_ms"] <= 1000 and doc["elapsed_ms"] <= 1000
    text = _cli("ask", "What is the E2 interface?", "--strategy", "template", "--deadline-ms", "120000",
                data_dir=builtin_kb_settings.data_dir)  # fmt: skip
    assert "Deadline: deadline 120000 ms capped to max_deadline_ms 1000 ms" in text.stdout and text.stderr == ""
