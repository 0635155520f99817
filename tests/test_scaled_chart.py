"""The chart's scaled mode (values-scaled.yaml): one vLLM server, one Chroma server, xApp replicas without an
engine behind the Service, an HPA and a PodDisruptionBudget. The values files against values.schema.json,
and the manifests Helm renders from them (those tests need the Helm binary `bash .ci/deploy-checks` fetches).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "argo-xapp"
HELM = ROOT / ".ci" / ".tools" / "helm-npm-2.2.2" / "helm" / "helm"
KV = Path(sys.executable).with_name("kubernetes-validate")
MODEL_PVC = json.dumps({"persistentVolumeClaim": {"claimName": "llm-models", "readOnly": True}})
needs_helm = pytest.mark.skipif(not HELM.exists(), reason="no Helm binary: run `bash .ci/deploy-checks` once")


def values(*files: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("values.yaml", *files):
        out = merge(out, yaml.safe_load((CHART / name).read_text()))
    return out


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def errors(doc: dict[str, Any]) -> list[str]:
    schema = json.loads((CHART / "values.schema.json").read_text())
    return [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(doc)]


def test_scaled_values_are_valid_and_the_schema_keeps_replicas_off_the_embedded_store() -> None:
    assert errors(values("values-scaled.yaml")) == []
    assert errors(values("values-gpu.yaml", "values-scaled.yaml")) == []
    default = values()
    assert errors(merge(default, {"autoscaling": {"enabled": True}})), "an HPA on embedded Chroma"
    assert errors(merge(default, {"replicaCount": 3})), "replicas on embedded Chroma"
    assert errors(merge(default, {"llm": {"url": "vllm:8000"}})), "an llm.url without a scheme"
    assert errors(merge(default, {"llm": {"server": {"port": 0}}}))
    assert errors(merge(default, {"autoscaling": {"enabled": True}, "chroma": {"server": {"enabled": True}}})) == []


def render(*args: str) -> list[dict[str, Any]]:
    out = subprocess.run([str(HELM), "template", "argo-xapp", str(CHART), *args], check=True,
                         capture_output=True, text=True).stdout
    return [o for o in yaml.safe_load_all(out) if o]


def by_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


@needs_helm
def test_scaled_mode_renders_a_shared_vllm_server_and_engine_less_xapp_replicas(tmp_path: Path) -> None:
    objs = render("-f", str(CHART / "values-scaled.yaml"), "--set-json", f"llm.server.model.volume={MODEL_PVC}",
                  "--set", "llm.server.model.path=Qwen2.5-Coder-1.5B-Instruct-W8A8")
    path = tmp_path / "scaled.yaml"
    path.write_text(yaml.safe_dump_all(objs))
    subprocess.run([str(KV), "--strict", "--quiet", "-k", "1.33.0", str(path)], check=True)

    deps = by_kind(objs, "Deployment")
    assert set(deps) == {"argo-xapp", "argo-xapp-llm", "argo-xapp-chroma"}
    server = deps["argo-xapp-llm"]["spec"]["template"]["spec"]
    (vllm,) = server["containers"]
    assert vllm["command"] == ["python", "-m", "vllm.entrypoints.openai.api_server"]
    args = vllm["args"]
    assert args[args.index("--model") + 1] == "/models/llm/Qwen2.5-Coder-1.5B-Instruct-W8A8"
    assert args[args.index("--served-model-name") + 1] == "argo-llm"
    assert "--enable-prefix-caching" in args
    assert args[args.index("--block-size") + 1] == "32"  # CPU: the shared system prompt fills whole KV blocks
    assert vllm["readinessProbe"]["httpGet"]["path"] == "/v1/models"
    assert vllm["livenessProbe"]["httpGet"]["path"] == "/health"
    svc = by_kind(objs, "Service")["argo-xapp-llm"]
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "llm"
    assert svc["spec"]["ports"][0]["port"] == 8000

    xapp_dep = deps["argo-xapp"]
    assert "replicas" not in xapp_dep["spec"], "the HPA owns the replica count"
    pod = xapp_dep["spec"]["template"]["spec"]
    (xapp,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in xapp["env"]}
    assert env["ARGO_LLM_URL"] == "http://argo-xapp-llm.ricxapp.svc:8000"
    assert env["ARGO_LLM_TOKENIZER"] == "/models/llm/Qwen2.5-Coder-1.5B-Instruct-W8A8"
    assert env["ARGO_CHROMA_MODE"] == "http"
    model_mount = next(m for m in xapp["volumeMounts"] if m["name"] == "llm-model")
    assert model_mount == {"name": "llm-model", "mountPath": "/models/llm", "readOnly": True}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["data"] and "emptyDir" in volumes["models"], "no ReadWriteOnce claim per replica"
    assert not by_kind(objs, "PersistentVolumeClaim").keys() - {"argo-xapp-chroma"}

    (hpa,) = by_kind(objs, "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "argo-xapp"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    (pdb,) = by_kind(objs, "PodDisruptionBudget").values()
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "xapp"


@needs_helm
def test_scaled_gpu_mode_puts_the_gpu_on_the_vllm_server_only() -> None:
    objs = render("-f", str(CHART / "values-gpu.yaml"), "-f", str(CHART / "values-scaled.yaml"))
    deps = by_kind(objs, "Deployment")
    vllm = deps["argo-xapp-llm"]["spec"]["template"]["spec"]["containers"][0]
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == 1
    args = vllm["args"]
    assert args[args.index("--model") + 1] == "Qwen/Qwen2.5-3B-Instruct-AWQ"
    assert args[args.index("--quantization") + 1] == "awq_marlin"
    assert "--block-size" not in args and "--enforce-eager" not in args  # the CPU flags are replaced
    xapp = deps["argo-xapp"]["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in xapp["resources"].get("limits", {})
    assert "nvidia.com/gpu" not in xapp["resources"].get("requests", {})
    env = {e["name"]: e.get("value") for e in xapp["env"]}
    assert env["ARGO_LLM_TOKENIZER"] == "Qwen/Qwen2.5-3B-Instruct-AWQ"  # no volume: the hub id


@needs_helm
def test_an_existing_llm_server_needs_no_server_of_the_chart() -> None:
    objs = render("--set", "llm.url=http://vllm.gpu-pool.svc:8000", "--set", "llm.tokenizer=/opt/tokenizer")
    deps = by_kind(objs, "Deployment")
    assert set(deps) == {"argo-xapp"}
    env = {e["name"]: e.get("value") for e in deps["argo-xapp"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert (env["ARGO_LLM_URL"], env["ARGO_LLM_TOKENIZER"]) == ("http://vllm.gpu-pool.svc:8000", "/opt/tokenizer")
    # The default release: the engine in the xApp, no llm_url, no HPA, no PDB.
    default = render()
    env = {e["name"] for e in by_kind(default, "Deployment")["argo-xapp"]["spec"]["template"]["spec"]
           ["containers"][0]["env"]}
    assert "ARGO_LLM_URL" not in env
    assert not by_kind(default, "HorizontalPodAutoscaler") and not by_kind(default, "PodDisruptionBudget")
