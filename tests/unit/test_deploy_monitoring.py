"""Offline checks of the monitoring files: the alert rules, the Grafana dashboard, its provisioning
and the compose `monitoring` profile that loads them.

Every PromQL expression is parsed with a real PromQL parser (`promql-parser`, the Rust crate's
bindings), and the metric names it selects are compared with what the worker exports: here with a
`WorkerMetrics` registry rendered in-process, in tests/integration/test_metrics_names.py with the
/metrics page of a running worker. Label names in matchers and `by (...)` clauses are checked
against the labels of the exported samples, so `{code="..."}` on a metric without a `code` label
fails instead of silently matching nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from consumer.generation.engine import CacheStats
from consumer.ops.metrics import WorkerMetrics
from schemas import ErrorCode, Status
from tests.unit.test_deploy_kubernetes import docs_section

ROOT = Path(__file__).resolve().parents[2]
ALERTS_FILE = ROOT / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS_FILE = ROOT / "deploy" / "prometheus.yml"
DASHBOARD_FILE = ROOT / "deploy" / "grafana" / "dashboards" / "sdxl-worker.json"
GRAFANA_PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCRAPE_JOB = "sdxl-worker"
RUNBOOK = "docs/operations.md"  # the operator's runbook: each alert's `runbook` points into it

# Metrics that alerts may use although the worker does not export them, and who does.
EXTERNAL_METRICS = {
    "up": "Prometheus, per scrape target",
    "kube_pod_status_ready": "kube-state-metrics",
    "kube_pod_container_status_restarts_total": "kube-state-metrics",
    "kube_pod_container_status_last_terminated_exitcode": "kube-state-metrics",
}
# Labels a sample gets from its scrape target (Prometheus, the Operator, kube-state-metrics).
TARGET_LABELS = {"job", "instance", "namespace", "pod", "container", "node", "service", "endpoint"}
# Metrics the dashboard must show (the brief of the dashboard).
DASHBOARD_METRICS = {
    "image_generations_total",
    "request_latency_seconds_bucket",
    "image_generation_seconds_bucket",
    "consumer_lag",
    "batch_size_images_bucket",
    "requests_in_flight",
    "model_cache_hits_total",
    "model_cache_misses_total",
    "model_cache_evictions_total",
    "model_load_seconds",
    "dead_letters_total",
    "storage_retries_total",
}
GRAFANA_MACRO = re.compile(
    r"\$(__(rate_interval|interval|range)\b|\{__(rate_interval|interval|range)\})"
)


# --- PromQL --------------------------------------------------------------------------------------


@dataclass
class Selector:
    metric: str
    labels: list[tuple[str, str, str]]  # (label, operator, value)


@dataclass
class Query:
    """What one expression reads: its selectors, and the labels of its `by (...)` clauses with
    the metrics below each."""

    selectors: list[Selector] = field(default_factory=list)
    groupings: list[tuple[str, set[str]]] = field(default_factory=list)
    aggregated: bool = False

    @property
    def metrics(self) -> set[str]:
        return {s.metric for s in self.selectors}


def _children(node: Any) -> list[Any]:
    if isinstance(node, promql_parser.BinaryExpr):
        return [node.lhs, node.rhs]
    if isinstance(node, promql_parser.AggregateExpr):
        return [node.expr] + ([node.param] if node.param is not None else [])
    if isinstance(node, promql_parser.Call):
        return list(node.args)
    if isinstance(node, promql_parser.MatrixSelector):
        return [node.vector_selector]
    if isinstance(node, promql_parser.SubqueryExpr | promql_parser.ParenExpr):
        return [node.expr]
    if isinstance(node, promql_parser.UnaryExpr):
        return [node.expr]
    return []


def _walk(node: Any) -> Iterator[Any]:
    yield node
    for child in _children(node):
        yield from _walk(child)


_OPERATORS = {
    "MatchOp.Equal": "=",
    "MatchOp.NotEqual": "!=",
    "MatchOp.Re": "=~",
    "MatchOp.NotRe": "!~",
}


def _selector(node: Any) -> Selector:
    matchers = [(m.name, _OPERATORS[str(m.op)], m.value) for m in node.matchers.matchers]
    name = node.name or next(value for label, _, value in matchers if label == "__name__")
    return Selector(name, [m for m in matchers if m[0] != "__name__"])


def parse_query(expr: str) -> Query:
    """Parse PromQL (ValueError on a syntax error); Grafana's interval macros become 5m."""
    tree = promql_parser.parse(GRAFANA_MACRO.sub("5m", expr))
    query = Query()
    for node in _walk(tree):
        if isinstance(node, promql_parser.VectorSelector):
            query.selectors.append(_selector(node))
        elif isinstance(node, promql_parser.AggregateExpr):
            query.aggregated = True
            if node.modifier is not None and node.modifier.type == promql_parser.AggModifierType.By:
                below = {
                    n.name for n in _walk(node.expr) if isinstance(n, promql_parser.VectorSelector)
                }
                query.groupings += [(label, below) for label in node.modifier.labels]
    return query


# --- what the worker exports ---------------------------------------------------------------------


def exported_metrics(exposition: str) -> dict[str, set[str] | None]:
    """Metric name -> label names of its samples (None: the family has no sample yet, so its
    labels are unknown), from a Prometheus text page. prometheus_client adds `_total` to
    counters and `_bucket`/`_sum`/`_count` to histograms; both `_created` too."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("_sum", "_count", "_created"),
    }
    names: dict[str, set[str] | None] = {}
    for family in text_string_to_metric_families(exposition):
        for suffix in suffixes.get(family.type, ("",)):
            names.setdefault(family.name + suffix, None)
        for sample in family.samples:
            known = names.get(sample.name) or set()
            names[sample.name] = known | set(sample.labels)
    return names


def static_exposition() -> str:
    """A fresh worker's registry, rendered as /metrics renders it (no worker, no broker)."""
    metrics = WorkerMetrics()
    metrics.watch_cache(lambda: CacheStats(load_seconds={"tiny-sdxl": 0.1}))
    return generate_latest(metrics.registry).decode()


KNOWN_VALUES = {
    "status": ("result has status", set(Status)),
    "code": ("result has error code", set(ErrorCode)),
}


def label_problems(selector: Any, labels: set[str] | None) -> list[str]:
    found = []
    for label, operator, value in selector.labels:
        if labels is not None and label not in labels | TARGET_LABELS:
            found.append(f"{selector.metric} has no label {label!r}")
        what, known = KNOWN_VALUES.get(label, ("", None))
        if known is not None and operator in ("=", "!=") and value not in known:
            found.append(f"no {what} {value!r}")
    return found


def problems(expr: str, exported: dict[str, set[str] | None]) -> list[str]:
    """Why `expr` would read nothing: unknown metrics, labels the metric does not have, status
    values no result has. Empty when it is fine."""
    query = parse_query(expr)
    found = []
    for selector in query.selectors:
        if selector.metric in EXTERNAL_METRICS:
            continue
        if selector.metric not in exported:
            found.append(f"metric {selector.metric!r} is not exported")
            continue
        found += label_problems(selector, exported[selector.metric])
    for label, below in query.groupings:
        if label in TARGET_LABELS:
            continue
        known = [exported.get(m) for m in below if m not in EXTERNAL_METRICS]
        # only where every metric below has samples (labels of a metric without any are unknown)
        sampled = [labels for labels in known if labels is not None]
        if known and len(sampled) == len(known) and not any(label in s for s in sampled):
            found.append(f"by ({label}): none of {sorted(below)} has that label")
    return found


# --- the files -----------------------------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS_FILE.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD_FILE.read_text())
    assert isinstance(data, dict)
    return data


def dashboard_panels() -> list[dict[str, Any]]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def dashboard_queries() -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in dashboard_panels()
        for target in panel["targets"]
    ]


def all_queries() -> list[tuple[str, str]]:
    """(where, expression) of every PromQL expression in the alerts and the dashboard."""
    alerts = [(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]
    return alerts + [(f"panel {title!r}", expr) for title, expr in dashboard_queries()]


# --- the name checks themselves can fail ---------------------------------------------------------

KNOWN = exported_metrics(
    """# TYPE image_generations_total counter
image_generations_total{status="completed",model="m"} 1.0
# TYPE request_latency_seconds histogram
request_latency_seconds_bucket{le="1.0"} 1.0
request_latency_seconds_count 1.0
request_latency_seconds_sum 0.5
# TYPE publish_refused_total counter
"""
)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("sum(rate(image_generation_total[5m]))", "metric 'image_generation_total'"),
        (
            "histogram_quantile(0.95, sum by (le) (rate(request_latency_second_bucket[5m])))",
            "metric 'request_latency_second_bucket'",
        ),
        ('image_generations_total{code="out_of_memory"}', "has no label 'code'"),
        ('image_generations_total{status="failure"}', "no result has status 'failure'"),
        ("sum by (stauts) (rate(image_generations_total[5m]))", "by (stauts)"),
        ("rate(request_latency_seconds[5m])", "metric 'request_latency_seconds'"),
    ],
)
def test_a_misspelt_name_or_label_is_caught(expr: str, expected: str) -> None:
    found = problems(expr, KNOWN)
    assert any(expected in problem for problem in found), found


def test_correct_expressions_pass_and_unsampled_labels_are_not_guessed() -> None:
    good = [
        'sum by (status, model) (rate(image_generations_total{status!="rejected"}[5m]))',
        "histogram_quantile(0.5, sum by (le) (rate(request_latency_seconds_bucket[$__interval])))",
        'sum by (topic) (increase(publish_refused_total{topic="x"}[15m]))',  # no samples yet
        'up{job="sdxl-worker"} == 0',
        "max_over_time(sum(image_generations_total)[10m:1m]) - -1",
    ]
    for expr in good:
        assert problems(expr, KNOWN) == [], expr


def test_a_syntax_error_fails() -> None:
    with pytest.raises(ValueError):
        parse_query("sum(rate(image_generations_total[5m])")


# --- alerts --------------------------------------------------------------------------------------


def test_every_alert_has_a_name_summary_severity_and_runbook() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "duplicate alert names"
    assert len(rules) >= 12
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"SdxlWorker[A-Z][A-Za-z]+", name), name
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, name
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"].strip(), name
        assert rule["annotations"]["runbook"] == f"{RUNBOOK}#runbook-{name.lower()}", name
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        # a label the template shows must survive the expression: named in it, or never
        # aggregated away (a target label of a plain selector)
        query = parse_query(rule["expr"])
        for label in re.findall(r"\$labels\.(\w+)", json.dumps(rule["annotations"])):
            kept = label in TARGET_LABELS and not query.aggregated
            assert kept or label in rule["expr"], f"{name}: $labels.{label} is not in its result"


def test_every_runbook_link_lands_in_the_runbook() -> None:
    section = docs_section(RUNBOOK, "Operating a pool")
    for rule in alert_rules():
        name = rule["alert"]
        assert f'<a id="runbook-{name.lower()}"></a>' in section, f"no runbook anchor for {name}"
        line = next(line for line in section.splitlines() if f"runbook-{name.lower()}" in line)
        assert f"`{name}`" in line, f"the runbook line of {name} does not name it"


def test_the_brief_s_alerts_are_all_there() -> None:
    used = set().union(*(parse_query(rule["expr"]).metrics for rule in alert_rules()))
    for metric in (
        "consumer_lag",
        "image_generations_total",
        "dead_letters_total",
        "storage_retries_total",
        "publish_retries_total",
        "publish_refused_total",
        "internal_errors_total",
        "up",
    ):
        assert metric in used, metric
    statuses = {
        value
        for rule in alert_rules()
        for selector in parse_query(rule["expr"]).selectors
        for label, _, value in selector.labels
        if label == "status"
    }
    assert {"failed", "timeout", "completed"} <= statuses


def test_external_metrics_are_only_the_listed_ones() -> None:
    exported = exported_metrics(static_exposition())
    for where, expr in all_queries():
        for metric in parse_query(expr).metrics - exported.keys():
            assert metric in EXTERNAL_METRICS, f"{where}: {metric} is neither exported nor listed"


def test_up_selects_the_scrape_job_of_prometheus_yml() -> None:
    config = yaml.safe_load(PROMETHEUS_FILE.read_text())
    assert SCRAPE_JOB in [job["job_name"] for job in config["scrape_configs"]]
    for where, expr in all_queries():
        for selector in parse_query(expr).selectors:
            if selector.metric == "up":
                assert ("job", "=", SCRAPE_JOB) in selector.labels, where


def test_every_query_reads_what_a_fresh_worker_registry_exports() -> None:
    """Offline twin of tests/integration/test_metrics_names.py (which scrapes a real worker)."""
    exported = exported_metrics(static_exposition())
    failures = {where: problems(expr, exported) for where, expr in all_queries()}
    assert not {where: found for where, found in failures.items() if found}


# --- dashboard and provisioning ------------------------------------------------------------------


def test_dashboard_structure() -> None:
    data = dashboard()
    assert data["uid"] == "sdxl-worker" and data["title"]
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in data["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in dashboard_panels():
        title = panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["w"] > 0 and grid["h"] > 0, title
        assert panel["type"] in ("timeseries", "stat"), title
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        assert panel["targets"], title
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), title
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], title
            parse_query(target["expr"])


def test_dashboard_shows_every_required_metric() -> None:
    shown = set().union(*(parse_query(expr).metrics for _, expr in dashboard_queries()))
    missing = DASHBOARD_METRICS - shown
    assert not missing, missing
    latency = [expr for _, expr in dashboard_queries() if "request_latency_seconds" in expr]
    assert any("0.5," in e for e in latency) and any("0.95," in e for e in latency)


def test_grafana_is_provisioned_in_the_monitoring_profile() -> None:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    grafana = compose["services"]["grafana"]
    assert grafana["profiles"] == ["monitoring"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"]}
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    dashboards_dir = mounts["./deploy/grafana/dashboards"]

    datasources = yaml.safe_load((GRAFANA_PROVISIONING / "datasources/prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"]
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["current"]["value"] == source["uid"]

    providers = yaml.safe_load((GRAFANA_PROVISIONING / "dashboards/sdxl-worker.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == dashboards_dir
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_dir}/{DASHBOARD_FILE.name}"


def test_prometheus_loads_the_alert_rules() -> None:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    prometheus = compose["services"]["prometheus"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in prometheus["volumes"]}
    config_path = Path(mounts["./deploy/prometheus.yml"])
    config = yaml.safe_load(PROMETHEUS_FILE.read_text())
    # Prometheus resolves rule_files against the directory of its configuration file.
    rule_paths = {str(config_path.parent / name) for name in config["rule_files"]}
    assert mounts["./deploy/prometheus/alerts.yml"] in rule_paths


def test_the_lag_alert_starts_where_one_worker_is_full() -> None:
    """SdxlWorkerLagGrowing ignores backlogs below one worker's share (KEDA's lagThreshold)."""
    from tests.unit.test_deploy_kubernetes import find, render

    scaled = find(render("overlays/gpu"), "ScaledObject")
    threshold = scaled["spec"]["triggers"][0]["metadata"]["lagThreshold"]
    rule = next(r for r in alert_rules() if r["alert"] == "SdxlWorkerLagGrowing")
    assert f"(consumer_lag)) > {threshold}\n" in rule["expr"]
