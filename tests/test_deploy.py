"""Deployment artefacts stay in step with the code: O-RAN SC descriptor, controls schema, Helm values.

`.ci/deploy-checks` runs Helm and kubernetes-validate on the chart; these tests need neither and run with the
normal suite, so a new setting, a changed default or a renamed metric fails here first.
"""

from __future__ import annotations

import copy
import json
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from xapp.config import QUALITY_FUNCTIONS, STRATEGIES, MDPParams, Settings, load_settings
from xapp.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
DESCRIPTOR = ROOT / "descriptors" / "config-file.json"
CONTROLS_SCHEMA = ROOT / "descriptors" / "schema.json"
CHART = ROOT / "helm" / "argo-xapp"
# The onboarder's schema (o-ran-sc/ric-plt-appmgr, Apache-2.0) is kept beside the repository, not in it.
ONBOARDER_SCHEMA = ROOT.parent / "shared" / "data" / "oran-sc-xapp-schema" / "embedded-schema.json"

# Where the shipped descriptor deliberately differs from the code's defaults.
DEPLOYMENT_CHOICES = {"log_format": "json"}  # a pod has no terminal: JSON lines for the log collector


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def descriptor() -> dict[str, Any]:
    return load_json(DESCRIPTOR)


@pytest.fixture(scope="module")
def controls_schema() -> dict[str, Any]:
    schema = load_json(CONTROLS_SCHEMA)
    jsonschema.Draft7Validator.check_schema(schema)
    return schema


def controls_errors(schema: dict[str, Any], controls: dict[str, Any]) -> list[str]:
    return [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(controls)]


def settings_error(tmp_path: Path, controls: dict[str, Any]) -> str | None:
    path = tmp_path / "config-file.json"
    path.write_text(json.dumps({"controls": controls}))
    try:
        load_settings(environ={}, descriptor=path)
    except ConfigError as exc:
        return str(exc)
    return None


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's way with -f: maps merge key by key, everything else is replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# --------------------------------------------------------------------------------------------------
# the descriptor against the onboarder


def test_descriptor_passes_the_onboarder_schema(descriptor: dict[str, Any],
                                                controls_schema: dict[str, Any]) -> None:
    assert ONBOARDER_SCHEMA.is_file(), f"missing {ONBOARDER_SCHEMA} (shared data beside the repository)"
    embedded = load_json(ONBOARDER_SCHEMA)
    # xapp_onboarder puts the schema file given to `dms_cli onboard` in place of the controls section.
    combined = copy.deepcopy(embedded)
    combined["properties"]["controls"] = controls_schema
    errors = [f"{list(e.absolute_path)}: {e.message}"
              for e in jsonschema.Draft7Validator(combined).iter_errors(descriptor)]
    assert errors == []
    # and the onboarder's check has teeth: a broken probe or image is refused
    broken = copy.deepcopy(descriptor)
    del broken["livenessProbe"]["periodSeconds"]
    broken["containers"][0]["image"]["registry"] = "no registry"
    assert len(list(jsonschema.Draft7Validator(combined).iter_errors(broken))) == 2


def test_descriptor_identity_ports_and_probes(descriptor: dict[str, Any]) -> None:
    assert descriptor["xapp_name"] == "argo-xapp"
    assert descriptor["version"] == "0.1.0"
    container = descriptor["containers"][0]["name"]
    ports = {p["name"]: p for p in descriptor["messaging"]["ports"]}
    d = Settings()
    assert {n: p["port"] for n, p in ports.items()} == {"grpc": d.grpc_port, "http": d.http_port}
    assert all(p["container"] == container for p in ports.values())
    # gRPC only: no RMR data/route ports, no message types or A1 policies
    assert not any({"txMessages", "rxMessages", "policies"} & p.keys() for p in ports.values())
    assert descriptor["livenessProbe"]["httpGet"] == {"path": "/ric/v1/health/alive", "port": 8080}
    assert descriptor["readinessProbe"]["httpGet"] == {"path": "/ric/v1/health/ready", "port": 8080}


def test_descriptor_probe_paths_are_served() -> None:
    http = pytest.importorskip("xapp.server.http")
    assert (http.ALIVE_PATH, http.READY_PATH) == ("/ric/v1/health/alive", "/ric/v1/health/ready")


def test_descriptor_metrics_are_the_ones_exposed(descriptor: dict[str, Any]) -> None:
    telemetry = pytest.importorskip("xapp.telemetry.metrics")
    from prometheus_client import generate_latest

    exposition = generate_latest(telemetry.Metrics().registry).decode()
    exposed = {}
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            exposed[name] = kind
    for metric in descriptor["metrics"]:
        assert metric["name"] in exposed, f"{metric['name']} is not exposed at /ric/v1/metrics"
        assert exposed[metric["name"]] == metric["type"], metric["name"]


# --------------------------------------------------------------------------------------------------
# controls ↔ Settings


def test_controls_schema_names_every_setting_and_nothing_else(controls_schema: dict[str, Any]) -> None:
    props = controls_schema["properties"]
    assert set(props) == {f.name for f in fields(Settings)}
    assert set(props["mdp"]["properties"]) == {f.name for f in fields(MDPParams)}
    assert controls_schema["additionalProperties"] is False
    assert props["mdp"]["additionalProperties"] is False


def test_controls_schema_defaults_and_enums_match_the_code(controls_schema: dict[str, Any]) -> None:
    props = controls_schema["properties"]
    defaults = Settings()
    for f in fields(Settings):
        if f.name in ("data_dir", "mdp"):  # data_dir depends on the machine
            continue
        assert props[f.name]["default"] == getattr(defaults, f.name), f"default of {f.name}"
    for f in fields(MDPParams):
        assert props["mdp"]["properties"][f.name]["default"] == getattr(defaults.mdp, f.name), f"mdp.{f.name}"
    assert tuple(props["strategy"]["enum"]) == STRATEGIES
    assert tuple(props["mdp"]["properties"]["quality"]["enum"]) == QUALITY_FUNCTIONS
    # JSON types follow the Python ones
    kinds = {bool: "boolean", int: "integer", float: "number", str: "string"}
    for f in fields(Settings):
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        if type(default) in kinds:
            assert props[f.name]["type"] == kinds[type(default)], f.name


@pytest.mark.parametrize(
    "controls",
    [
        {"deadline_ms": 0}, {"deadline_ms": 1}, {"max_deadline_ms": 0}, {"max_deadline_ms": 1000},
        {"strategy": "greedy"}, *({"strategy": s} for s in STRATEGIES),
        {"chroma_mode": "remote"}, {"chroma_mode": "http"},
        {"top_k": 0}, {"top_k": 1}, {"max_steps": 0}, {"max_steps": 1},
        {"max_concurrency": 0}, {"max_concurrency": 1},
        {"log_format": "xml"}, {"log_format": "console"},
        {"llm_url": "vllm:8000"}, {"llm_url": "http://vllm:8000"}, {"llm_url": ""},
        {"mdp": {"u_max": 0}}, {"mdp": {"u_max": 2.0}},
        {"mdp": {"p_success": 0}}, {"mdp": {"p_success": 1.01}}, {"mdp": {"p_success": 1}},
        {"mdp": {"gamma": 0}}, {"mdp": {"gamma": 1}}, {"mdp": {"gamma": 1.5}},
        {"mdp": {"cost_retrieve": -0.01}}, {"mdp": {"cost_reason": 0}}, {"mdp": {"mu": -1}},
        {"mdp": {"quality": "cubic"}}, *({"mdp": {"quality": q}} for q in QUALITY_FUNCTIONS),
        {"mdp": {"grid": 2}}, {"mdp": {"grid": 3}},
        {"mdp": {"delta_retrieve": 0}}, {"mdp": {"delta_reason": 0.5}},
        {"unknown": 1}, {"mdp": {"unknown": 1}},
    ],
    ids=json.dumps,
)
def test_controls_schema_agrees_with_settings_validation(tmp_path: Path, controls_schema: dict[str, Any],
                                                         controls: dict[str, Any]) -> None:
    schema_says = controls_errors(controls_schema, controls)
    settings_say = settings_error(tmp_path, controls)
    assert bool(schema_says) == bool(settings_say), f"schema: {schema_says}; settings: {settings_say}"


def test_descriptor_controls_are_the_defaults_spelled_out(descriptor: dict[str, Any],
                                                          controls_schema: dict[str, Any]) -> None:
    controls = descriptor["controls"]
    assert controls_errors(controls_schema, controls) == []
    defaults = Settings().to_dict()
    del defaults["data_dir"]  # the chart sets ARGO_DATA_DIR to its volume
    expected = {**defaults, **DEPLOYMENT_CHOICES}
    assert set(controls) == set(expected), "the descriptor should list every setting an operator may tune"
    for key, value in expected.items():
        assert controls[key] == value, f"descriptor controls.{key}={controls[key]!r}, code default {value!r}"


# --------------------------------------------------------------------------------------------------
# the Helm chart's values


@pytest.fixture(scope="module")
def values_schema() -> dict[str, Any]:
    schema = load_json(CHART / "values.schema.json")
    jsonschema.Draft7Validator.check_schema(schema)
    return schema


def test_chart_files_are_the_descriptors() -> None:
    for name in ("config-file.json", "schema.json"):
        assert (CHART / "files" / name).read_bytes() == (ROOT / "descriptors" / name).read_bytes(), name


def test_values_schema_controls_are_the_controls_schema(values_schema: dict[str, Any],
                                                        controls_schema: dict[str, Any]) -> None:
    in_values = values_schema["properties"]["controls"]
    for key in ("type", "additionalProperties", "properties"):
        assert in_values[key] == controls_schema[key], key


def test_default_and_gpu_values_are_valid(values_schema: dict[str, Any], controls_schema: dict[str, Any],
                                          descriptor: dict[str, Any], tmp_path: Path) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    gpu = deep_merge(values, yaml.safe_load((CHART / "values-gpu.yaml").read_text()))
    validator = jsonschema.Draft7Validator(values_schema)
    for name, doc in (("values.yaml", values), ("values-gpu.yaml", gpu)):
        assert [e.message for e in validator.iter_errors(doc)] == [], name

    assert values["namespace"] == "ricxapp"
    assert values["ports"] == {"grpc": Settings().grpc_port, "http": Settings().http_port}
    assert values["securityContext"] == {"runAsNonRoot": True, "readOnlyRootFilesystem": True,
                                         "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert values["otel"]["endpoint"].endswith(":4317")

    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["resources"]["requests"]["nvidia.com/gpu"] == 1
    # The descriptor the GPU release mounts: what the ConfigMap template builds, loaded as Settings.
    controls = deep_merge(descriptor["controls"], gpu["controls"])
    assert controls_errors(controls_schema, controls) == []
    path = tmp_path / "gpu-config-file.json"
    path.write_text(json.dumps({**descriptor, "controls": controls}))
    settings = load_settings(environ={}, descriptor=path)
    assert (settings.model, settings.quantization) == ("Qwen/Qwen2.5-3B-Instruct-AWQ", "awq_marlin")


def test_values_schema_refuses_what_it_should(values_schema: dict[str, Any]) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    validator = jsonschema.Draft7Validator(values_schema)
    bad = [
        {"replicaCount": 2},  # embedded Chroma: a single writer
        {"controls": {"strategy": "greedy"}},
        {"controls": {"mdp": {"gamma": 2}}},
        {"securityContext": {"runAsNonRoot": False}},
        {"contols": {}},
        {"otel": {"endpoint": "jaeger:4317"}},
    ]
    for change in bad:
        assert list(validator.iter_errors(deep_merge(values, change))), change
    scaled = deep_merge(values, {"replicaCount": 3, "chroma": {"server": {"enabled": True}}})
    assert list(validator.iter_errors(scaled)) == []
