"""The Helm chart brings a document library in: an init container ingests it before the xApp starts, from a
volume or from an image, into the embedded store or the chart's Chroma server; the rendered manifests are
valid Kubernetes objects, and the init container's own command, run twice, is idempotent.

Needs the Helm binary that ``bash .ci/deploy-checks`` fetches (skipped, saying so, when it is not there).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kb_support import copy_builtin

from xapp.cli import main
from xapp.config import Settings

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "argo-xapp"
HELM = ROOT / ".ci" / ".tools" / "helm-npm-2.2.2" / "helm" / "helm"
KV = Path(sys.executable).with_name("kubernetes-validate")
PVC = json.dumps({"persistentVolumeClaim": {"claimName": "oran-specs", "readOnly": True}})

pytestmark = pytest.mark.skipif(not HELM.exists(), reason="no Helm binary: run `bash .ci/deploy-checks` once")


def _render(tmp_path: Path, *args: str) -> tuple[Path, list[dict[str, Any]]]:
    out = subprocess.run(
        [str(HELM), "template", "argo-xapp", str(CHART), *args], check=True, capture_output=True, text=True
    ).stdout
    path = tmp_path / f"rendered-{abs(hash(args))}.yaml"
    path.write_text(out)
    return path, [o for o in yaml.safe_load_all(out) if o]


def _xapp_pod(objs: list[dict[str, Any]]) -> dict[str, Any]:
    dep = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "argo-xapp")
    return dict(dep["spec"]["template"]["spec"])


def test_library_from_a_volume_into_the_embedded_store(tmp_path: Path) -> None:
    path, objs = _render(
        tmp_path,
        "--set", "library.enabled=true",
        "--set-json", f"library.volume={PVC}",
        "--set", "library.subPath=specs/v2026",
        "--set", "library.exclude[0]=drafts/*",
    )  # fmt: skip
    pod = _xapp_pod(objs)
    (init,) = pod["initContainers"]
    assert init["name"] == "library-ingest" and init["command"] == ["argo-xapp"]
    assert init["args"] == [
        "ingest", "/library/oran-specs", "--no-progress", "--batch-size", "64", "--exclude", "drafts/*",
    ]  # fmt: skip
    assert init["securityContext"]["readOnlyRootFilesystem"] is True and init["securityContext"]["runAsNonRoot"]
    mounts = {m["name"]: m for m in init["volumeMounts"]}
    xapp_mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["data"]["mountPath"] == xapp_mounts["data"]  # the store the xApp then opens
    assert mounts["library"] == {
        "name": "library", "mountPath": "/library/oran-specs", "readOnly": True, "subPath": "specs/v2026",
    }  # fmt: skip
    env = {e["name"]: e.get("value") for e in init["env"]}
    assert env["ARGO_DATA_DIR"] == "/data" and "ARGO_CHROMA_MODE" not in env
    assert env["CONFIG_FILE"] == "/opt/ric/config/config-file.json"  # same collection as the xApp
    xapp_library = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "library")
    assert xapp_library["readOnly"] is True and xapp_library["mountPath"] == "/library/oran-specs"
    volume = next(v for v in pod["volumes"] if v["name"] == "library")
    assert volume["persistentVolumeClaim"] == {"claimName": "oran-specs", "readOnly": True}
    subprocess.run([str(KV), "--strict", "--quiet", "-k", "1.33.0", str(path)], check=True)


def test_library_from_an_image_into_the_chroma_server(tmp_path: Path) -> None:
    path, objs = _render(
        tmp_path,
        "--set", "library.enabled=true",
        "--set", "library.source=image",
        "--set", "library.image.repository=registry.lab/oran-specs",
        "--set", "library.image.tag=2026-03",
        "--set", "chroma.server.enabled=true",
        "--set", "replicaCount=2",
        "--set", "persistence.data.enabled=false",
    )  # fmt: skip
    pod = _xapp_pod(objs)
    copy, ingest = pod["initContainers"]
    assert copy["name"] == "library-copy" and copy["image"] == "registry.lab/oran-specs:2026-03"
    assert copy["command"] == ["cp", "-R", "/library/.", "/library/oran-specs"]
    assert {m["name"]: m["mountPath"] for m in copy["volumeMounts"]}["library"] == "/library/oran-specs"
    env = {e["name"]: e.get("value") for e in ingest["env"]}
    assert env["ARGO_CHROMA_MODE"] == "http" and env["ARGO_CHROMA_HOST"] == "argo-xapp-chroma.ricxapp.svc"
    assert next(v for v in pod["volumes"] if v["name"] == "library") == {"name": "library", "emptyDir": {}}
    assert any(o["kind"] == "Deployment" and o["metadata"]["name"] == "argo-xapp-chroma" for o in objs)
    subprocess.run([str(KV), "--strict", "--quiet", "-k", "1.33.0", str(path)], check=True)


@pytest.mark.parametrize(
    "bad",
    [
        ["--set", "library.enabled=true"],  # a volume library without a volume
        ["--set", "library.enabled=true", "--set", "library.source=image"],  # an image library without image
        ["--set", "library.name=argo-kb"],  # the built-in knowledge base's name
        ["--set", "library.source=git"],
    ],
)
def test_values_schema_refuses_bad_library_values(bad: list[str]) -> None:
    done = subprocess.run([str(HELM), "template", "argo-xapp", str(CHART), *bad], capture_output=True, text=True)
    assert done.returncode != 0 and "don't meet the specifications of the schema" in done.stderr, done.stderr


def test_the_init_containers_command_is_idempotent_on_restart(
    tmp_path: Path, builtin_kb_settings: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rendered init container's arguments, run as the pod would on two starts: the second changes
    nothing (the documents are only hashed)."""
    _, objs = _render(tmp_path, "--set", "library.enabled=true", "--set-json", f"library.volume={PVC}")
    args = _xapp_pod(objs)["initContainers"][0]["args"]
    lib = tmp_path / "library" / "oran-specs"
    lib.mkdir(parents=True)
    (lib / "e2ap.md").write_text("# E2AP\n\nThe lab's E2 setup procedure carries the RAN function list of the node.\n")
    (lib / "LICENSE").write_text("Apache 2.0 licence text, nothing about O-RAN.\n")
    (lib / "LICENSE.txt").write_text("Apache 2.0 licence text, nothing about O-RAN.\n")
    settings = copy_builtin(builtin_kb_settings, tmp_path / "data")
    monkeypatch.setenv("ARGO_DATA_DIR", str(settings.data_dir))
    argv = [str(lib) if a == "/library/oran-specs" else a for a in args]
    for expected in ("1 new or changed, 0 unchanged", "0 new or changed, 1 unchanged"):
        capsys.readouterr()
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert expected in out and "1 excluded" in out, out
