"""W8A8 quantization: the compressed-tensors checkpoint vLLM's CPU build loads (see also test_llm_engine)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from xapp.errors import ConfigError
from xapp.llm.quantize import quantize


def test_config_declares_int8_channel_weights_and_dynamic_token_activations(tiny_w8a8_dir: Path) -> None:
    q = json.loads((tiny_w8a8_dir / "config.json").read_text())["quantization_config"]
    assert q["quant_method"] == "compressed-tensors"
    assert q["format"] == "int-quantized"
    assert q["quantization_status"] == "compressed"
    assert q["ignore"] == ["lm_head"]
    (group,) = q["config_groups"].values()
    assert group["targets"] == ["Linear"]
    w, a = group["weights"], group["input_activations"]
    assert (w["num_bits"], w["type"], w["strategy"], w["symmetric"], w["dynamic"]) == (
        8,
        "int",
        "channel",
        True,
        False,
    )
    assert (a["num_bits"], a["type"], a["strategy"], a["symmetric"], a["dynamic"]) == (
        8,
        "int",
        "token",
        True,
        True,
    )


def test_weights_are_int8_with_per_channel_scales_that_reconstruct_the_original(
    tiny_model_dir: Path, tiny_w8a8_dir: Path
) -> None:
    original = load_file(str(tiny_model_dir / "model.safetensors"))
    quantized = load_file(str(tiny_w8a8_dir / "model.safetensors"))
    linear = [k for k in original if k.endswith("_proj.weight")]
    assert len(linear) == 2 * 7  # q, k, v, o, gate, up, down in each of 2 layers
    for name in linear:
        w = original[name].float()
        q = quantized[name]
        scale = quantized[name.replace(".weight", ".weight_scale")].float()
        assert q.dtype == torch.int8 and q.shape == w.shape
        assert scale.shape == (w.shape[0], 1)
        assert name.replace(".weight", ".weight_zero_point") not in quantized  # symmetric
        # Min-max per output channel: the largest |w| of each row maps to ±127.5 → |q| reaches 127.
        assert torch.allclose(scale, w.abs().amax(dim=1, keepdim=True) / 127.5, rtol=1e-2)
        assert int(q.abs().max()) == 127
        assert (q.float() * scale - w).abs().le(scale * 0.5 + 1e-3).all()
    # Embeddings, norms and the (tied) output layer stay in bf16.
    assert quantized["model.embed_tokens.weight"].dtype == torch.bfloat16
    assert torch.equal(quantized["model.embed_tokens.weight"], original["model.embed_tokens.weight"])
    assert quantized["model.norm.weight"].dtype == torch.bfloat16


def test_tokenizer_and_chat_template_travel_with_the_checkpoint(
    tiny_model_dir: Path, tiny_w8a8_dir: Path
) -> None:
    for name in ("tokenizer.json", "chat_template.jinja", "generation_config.json"):
        assert (tiny_w8a8_dir / name).read_text() == (tiny_model_dir / name).read_text()


def test_existing_destination_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    with pytest.raises(ConfigError, match="already exists"):
        quantize(tiny_model_dir, tmp_path / "out")


def test_an_already_quantized_source_is_refused(tiny_w8a8_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="already quantized"):
        quantize(tiny_w8a8_dir, tmp_path / "again")


def test_unknown_scheme_and_non_model_folder_are_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="scheme"):
        quantize(tiny_model_dir, tmp_path / "x", scheme="W3A5")
    with pytest.raises(ConfigError, match="no config.json"):
        quantize(tmp_path, tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
