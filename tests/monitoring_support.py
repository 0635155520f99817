"""Checks of the shipped Grafana dashboard and Prometheus rules (tests/test_monitoring.py, .ci/deploy-checks).

Every PromQL expression is parsed by ``promql-parser`` (the Rust PromQL parser of GreptimeDB, on PyPI) and
the metrics it reads are collected from the syntax tree, to be checked against what argo-xapp declares
(:class:`xapp.telemetry.metrics.Metrics`) or serves (a real ``/ric/v1/metrics``).

    python tests/monitoring_support.py RENDERED.yaml...   # the objects of `helm template` with metrics.* on
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import promql_parser
import yaml

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "helm" / "argo-xapp" / "files" / "grafana-dashboard.json"
RULES = ROOT / "helm" / "argo-xapp" / "files" / "prometheus-rules.yaml"

# Grafana variables → values that keep an expression valid PromQL (what Grafana substitutes at query time).
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
PANEL_TYPES = {"stat", "gauge", "timeseries", "table", "bargauge", "text", "row", "heatmap"}
SEVERITIES = {"critical", "warning", "info"}
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def expression(expr: str, variables: Iterable[str] = ()) -> str:
    """A dashboard expression with its Grafana variables replaced (``$namespace`` → ``.*``)."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", ".*").replace("$" + name, ".*")
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (raises ValueError when it is not valid PromQL)."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        kind = type(node).__name__
        if kind == "VectorSelector":
            if node.name:
                names.add(node.name)
            for m in getattr(node.matchers, "matchers", []) or []:
                if m.name == "__name__":
                    names.add(m.value)
            return
        if kind == "MatrixSelector":
            walk(node.vector_selector)
            return
        for attr in ("args", "expr", "lhs", "rhs", "param"):
            child = getattr(node, attr, None)
            if child is None:
                continue
            for item in child if isinstance(child, list) else [child]:
                walk(item)

    walk(promql_parser.parse(expr))
    return names


def dashboard_queries(doc: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, expression with variables replaced) for every target of every panel."""
    variables = [v["name"] for v in doc.get("templating", {}).get("list", [])]
    for panel in doc.get("panels", []):
        for target in panel.get("targets", []):
            yield panel.get("title", "?"), expression(target.get("expr", ""), variables)


def rule_queries(doc: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            yield rule.get("alert") or rule.get("record") or "?", rule.get("expr", "")


def check_dashboard(doc: dict[str, Any]) -> list[str]:
    """What is wrong with a Grafana dashboard (an empty list: nothing)."""
    errors = [f"dashboard: missing {key}" for key in ("uid", "title", "panels", "schemaVersion") if key not in doc]
    variables = {v.get("name") for v in doc.get("templating", {}).get("list", [])}
    if "datasource" not in variables:
        errors.append("dashboard: no datasource variable (panels use ${datasource})")
    ids: set[int] = set()
    for panel in doc.get("panels", []):
        title = panel.get("title", "?")
        if panel.get("type") not in PANEL_TYPES:
            errors.append(f"{title}: unknown panel type {panel.get('type')!r}")
        if not isinstance(panel.get("id"), int) or panel["id"] in ids:
            errors.append(f"{title}: id {panel.get('id')!r} missing or repeated")
        ids.add(panel.get("id", -1))
        grid = panel.get("gridPos", {})
        if not all(isinstance(grid.get(k), int) for k in ("x", "y", "w", "h")) or grid.get("x", 0) + grid.get(
            "w", 0
        ) > 24:
            errors.append(f"{title}: gridPos {grid} is not inside the 24-column grid")
        targets = panel.get("targets", [])
        if panel.get("type") != "text" and not targets:
            errors.append(f"{title}: no targets")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs) or None in refs:
            errors.append(f"{title}: refIds {refs} missing or repeated")
        for t in targets:
            uid = (t.get("datasource") or panel.get("datasource") or {}).get("uid", "")
            if uid != "${datasource}":
                errors.append(f"{title}: datasource {uid!r} is not the dashboard's ${{datasource}}")
            used = set(re.findall(r"\$\{?(\w+)", t.get("expr", ""))) - {k.lstrip("$") for k in GRAFANA_VARIABLES}
            if used - variables:
                errors.append(f"{title}: undefined variables {sorted(used - variables)}")
    for title, expr in dashboard_queries(doc):
        try:
            metric_names(expr)
        except ValueError as exc:
            errors.append(f"{title}: {expr!r} is not PromQL: {exc}")
    return errors


def check_rules(doc: dict[str, Any]) -> list[str]:
    """What is wrong with a Prometheus rules document (``groups:``; a PrometheusRule's ``spec``)."""
    errors: list[str] = []
    groups = doc.get("groups")
    if not groups:
        return ["rules: no groups"]
    for group in groups:
        if not group.get("name") or not group.get("rules"):
            errors.append(f"rules: group {group.get('name')!r} without a name or rules")
        for rule in group.get("rules", []):
            name = rule.get("alert", "?")
            if not re.fullmatch(r"[A-Z][A-Za-z0-9]+", name):
                errors.append(f"{name}: not an alert name")
            if "for" in rule and not DURATION.match(str(rule["for"])):
                errors.append(f"{name}: for {rule['for']!r} is not a duration")
            if rule.get("labels", {}).get("severity") not in SEVERITIES:
                errors.append(f"{name}: severity must be one of {sorted(SEVERITIES)}")
            if not rule.get("annotations", {}).get("summary"):
                errors.append(f"{name}: no summary annotation")
            try:
                metric_names(rule.get("expr", ""))
            except ValueError as exc:
                errors.append(f"{name}: expr is not PromQL: {exc}")
    return errors


def queried_metrics(dashboard: dict[str, Any], rules: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for _, expr in [*dashboard_queries(dashboard), *rule_queries(rules)]:
        names |= metric_names(expr)
    return names


def declared_metrics() -> set[str]:
    """Every sample name argo-xapp's registry can serve (counters' ``_total``, histograms' ``_bucket`` …)."""
    from xapp.telemetry.metrics import Metrics

    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "info": ("_info",),
        "gauge": ("",),
        "summary": ("_count", "_sum", ""),
    }
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


def served_metrics(text: str) -> set[str]:
    """The sample names in a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def load() -> tuple[dict[str, Any], dict[str, Any]]:
    return json.loads(DASHBOARD.read_text()), yaml.safe_load(RULES.read_text())


def check_rendered(paths: Iterable[Path]) -> list[str]:
    """The dashboard ConfigMap, PrometheusRule and ServiceMonitor of rendered manifests."""
    errors: list[str] = []
    seen: set[str] = set()
    declared = declared_metrics()
    for path in paths:
        for obj in yaml.safe_load_all(path.read_text()):
            if not obj:
                continue
            kind, name = obj.get("kind"), obj.get("metadata", {}).get("name", "")
            if kind == "ConfigMap" and name.endswith("-dashboard"):
                seen.add("dashboard")
                for key, text in obj["data"].items():
                    doc = json.loads(text)
                    errors += [f"{path.name} {name}/{key}: {e}" for e in check_dashboard(doc)]
                    errors += [
                        f"{path.name} {name}: {m} is not an argo-xapp metric"
                        for m in sorted(queried_metrics(doc, {}) - declared)
                    ]
            elif kind == "PrometheusRule":
                seen.add("rules")
                errors += [f"{path.name} {name}: {e}" for e in check_rules(obj["spec"])]
                errors += [
                    f"{path.name} {name}: {m} is not an argo-xapp metric"
                    for m in sorted(queried_metrics({}, obj["spec"]) - declared)
                ]
            elif kind == "ServiceMonitor":
                seen.add("servicemonitor")
                endpoints = obj["spec"].get("endpoints", [])
                if [(e.get("port"), e.get("path")) for e in endpoints] != [("http", "/ric/v1/metrics")]:
                    errors.append(f"{path.name} {name}: endpoints {endpoints} are not http /ric/v1/metrics")
                if obj["spec"]["selector"]["matchLabels"].get("app.kubernetes.io/component") != "xapp":
                    errors.append(f"{path.name} {name}: the selector would also pick the Chroma or vLLM Service")
    errors += [f"no {what} in the rendered manifests" for what in ("dashboard", "rules", "servicemonitor")
               if what not in seen]
    return errors


if __name__ == "__main__":
    problems = check_rendered(Path(p) for p in sys.argv[1:])
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        sys.exit(1)
    dashboard, rules = load()
    print(
        f"dashboard ({len(list(dashboard_queries(dashboard)))} queries), {len(list(rule_queries(rules)))} alert "
        f"rules and the ServiceMonitor valid; {len(queried_metrics(dashboard, rules))} metrics queried, all declared"
    )
