"""The shipped Grafana dashboard and Prometheus alert rules: valid, and reading only metrics argo-xapp has.

That every queried metric is also *served* by a real server after one request is checked in
tests/test_server_process.py (it runs one).
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest
from monitoring_support import (
    check_dashboard,
    check_rendered,
    check_rules,
    dashboard_queries,
    declared_metrics,
    load,
    metric_names,
    queried_metrics,
)

ROOT = Path(__file__).resolve().parents[1]
HELM = ROOT / ".ci" / ".tools" / "helm-npm-2.2.2" / "helm" / "helm"


def test_dashboard_and_rules_are_valid_and_read_declared_metrics() -> None:
    dashboard, rules = load()
    assert check_dashboard(dashboard) == []
    assert check_rules(rules) == []
    queried = queried_metrics(dashboard, rules)
    assert queried - declared_metrics() == set()
    # What an operator needs at a glance is on the dashboard, and each alert the issue asks for exists.
    for needed in (
        "argo_xapp_deadline_misses_total",
        "argo_xapp_fallbacks_total",
        "argo_xapp_rpc_latency_seconds_bucket",
        "argo_xapp_ready",
        "argo_xapp_llm_engine_running_requests",
        "argo_xapp_llm_engine_waiting_requests",
        "argo_xapp_llm_engine_kv_cache_usage_ratio",
        "argo_xapp_llm_time_to_first_token_seconds_bucket",
        "argo_xapp_llm_tokens_total",
    ):
        assert needed in queried, needed
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert {"ArgoXappDeadlineMisses", "ArgoXappFallbackRateHigh", "ArgoXappAnswerP99OverDeadline",
            "ArgoXappNotReady"} <= alerts  # fmt: skip


def test_the_checks_catch_broken_queries_and_unknown_metrics() -> None:
    dashboard, rules = load()
    assert metric_names('sum(rate(a_total{x=~"1"}[5m])) / on() max(b)') == {"a_total", "b"}
    with pytest.raises(ValueError):
        metric_names("sum(rate(argo_xapp_answers_total[5m])")
    broken = copy.deepcopy(dashboard)
    broken["panels"][0]["targets"][0]["expr"] = "sum(rate(argo_xapp_answers_total[5m])"
    broken["panels"][1]["gridPos"]["x"] = 22
    broken["panels"][2]["targets"][0]["expr"] = "argo_xapp_answers_total{pod=~'$nopod'}"
    errors = check_dashboard(broken)
    assert any("is not PromQL" in e for e in errors)
    assert any("24-column grid" in e for e in errors)
    assert any("undefined variables ['nopod']" in e for e in errors)
    bad_rules = copy.deepcopy(rules)
    bad_rules["groups"][0]["rules"][0]["labels"]["severity"] = "page-me"
    bad_rules["groups"][0]["rules"][1]["for"] = "ten minutes"
    assert len(check_rules(bad_rules)) == 2
    renamed = copy.deepcopy(dashboard)
    renamed["panels"][0]["targets"][0]["expr"] = "sum(argo_xapp_readyness)"
    assert "argo_xapp_readyness" in queried_metrics(renamed, {}) - declared_metrics()
    assert len(list(dashboard_queries(dashboard))) >= 20


@pytest.mark.skipif(not HELM.exists(), reason="no Helm binary: run `bash .ci/deploy-checks` once")
def test_chart_renders_dashboard_rule_and_service_monitor(tmp_path: Path) -> None:
    chart = ROOT / "helm" / "argo-xapp"
    args = ["--set", "metrics.prometheusRule.enabled=true", "--set", "metrics.serviceMonitor.enabled=true"]
    rendered = tmp_path / "monitoring.yaml"
    rendered.write_text(
        subprocess.run([str(HELM), "template", "argo-xapp", str(chart), *args], check=True, capture_output=True,
                       text=True).stdout  # fmt: skip
    )
    assert check_rendered([rendered]) == []
    default = tmp_path / "default.yaml"
    default.write_text(
        subprocess.run([str(HELM), "template", "argo-xapp", str(chart)], check=True, capture_output=True,
                       text=True).stdout  # fmt: skip
    )
    # By default only the dashboard ConfigMap: the CRDs of the Prometheus Operator may not be installed.
    assert check_rendered([default]) == [
        "no rules in the rendered manifests",
        "no servicemonitor in the rendered manifests",
    ]
