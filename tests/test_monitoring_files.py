"""The shipped alert rules (deploy/prometheus/alerts.yml) and Grafana dashboard
(deploy/grafana/mana-ai.json) name only metrics the daemon exports, and Prometheus accepts them.

The metric names are checked against a live `Metrics()` registry (observability/metrics.py, the
process metrics included), in pure Python, always. With `promtool` on PATH (Debian: `apt-get
install prometheus`) the rules also go through `promtool check rules` and their unit tests
(deploy/prometheus/alerts_test.yml) through `promtool test rules`; without it those two skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from observability.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "mana-ai.json"

# series Prometheus makes itself for every scrape target
PROMETHEUS_SERIES = frozenset({"up"})

PROMQL_WORDS = frozenset({
    # aggregations and their modifiers
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values",
    "group", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or",
    "unless", "atan2",
    # functions
    "abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "delta",
    "deriv", "exp", "floor", "histogram_quantile", "holt_winters", "idelta", "increase", "irate",
    "label_replace", "label_join", "ln", "log2", "log10", "predict_linear", "rate", "resets", "round",
    "scalar", "sort", "sort_desc", "sqrt", "time", "timestamp", "vector", "avg_over_time",
    "min_over_time", "max_over_time", "sum_over_time", "count_over_time", "last_over_time",
    "quantile_over_time", "stddev_over_time", "present_over_time", "label_values",
})


def exported_metrics() -> frozenset[str]:
    """Every series name `GET /metrics` can carry, from the daemon's own registry."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return frozenset(names)


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (label names, functions, keywords and
    Grafana's `$variables` left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana variables
    text = re.sub(r"\blabel_values\(([^,)]*),\s*\w+\)", r"\1", text)  # Grafana: label_values(series, label)
    text = re.sub(r"\boffset\s+\d+[smhdwy]", "", text)
    names = set(re.findall(r"(?<![\w.])([A-Za-z_:][\w:]*)", text))
    return {name for name in names if name not in PROMQL_WORDS and not re.fullmatch(r"\d+[smhdwy]|e\d+", name)}


def alert_rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            exprs.extend(target["expr"] for target in panel.get("targets", []) if "expr" in target)
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    for variable in dashboard["templating"]["list"]:
        if variable.get("type") == "query":
            exprs.append(variable["definition"])
    return exprs


def test_the_expression_reader_finds_names_and_only_names() -> None:
    assert metric_names('sum by (job, reason) (increase(mana_ai_rows_rejected_total{job=~"$job"}[1h])) > 0') \
        == {"mana_ai_rows_rejected_total"}
    assert metric_names("max by (job) (a_b{status=\"dead\"}) > max by (job) (a_b{status=\"dead\"} offset 1h)") \
        == {"a_b"}
    assert metric_names("histogram_quantile(0.95, sum by (le) (rate(x_bucket[$__rate_interval]))) * 60") \
        == {"x_bucket"}
    assert metric_names("label_values(mana_ai_x, job)") == {"mana_ai_x"}
    assert metric_names('time() - mana_ai_nope > 900 and up{job="mana-ai"} == 0') == {"mana_ai_nope", "up"}


def test_alert_rules_name_exported_metrics() -> None:
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} >= {
        "ManaAiLlmDown", "ManaAiLlmCircuitOpen", "ManaAiDeadSlotsGrowing", "ManaAiCyclesStalled",
        "ManaAiLeaseRenewalsFailing", "ManaAiRowsRejected"}
    known = exported_metrics() | PROMETHEUS_SERIES
    unknown = {rule["alert"]: sorted(metric_names(rule["expr"]) - known) for rule in rules}
    assert {alert: names for alert, names in unknown.items() if names} == {}
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"]["runbook"].startswith("docs/runbook.md#"), rule["alert"]


def test_dashboard_names_exported_metrics() -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    known = exported_metrics()
    unknown = {expr: sorted(metric_names(expr) - known) for expr in exprs}
    assert {expr: names for expr, names in unknown.items() if names} == {}


def test_runbook_anchors_exist() -> None:
    """Each alert's `runbook` annotation points at a heading of docs/runbook.md."""
    headings = re.findall(r"^#+\s+(.+)$", (ROOT / "docs" / "runbook.md").read_text(encoding="utf-8"), re.MULTILINE)
    anchors = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}
    wanted = {rule["annotations"]["runbook"].partition("#")[2] for rule in alert_rules()}
    assert wanted - anchors == set()


PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not on PATH (Debian: apt-get install prometheus)")


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_the_rules_pass_their_unit_tests() -> None:
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, "test", "rules", ALERT_TESTS.name], cwd=ALERT_TESTS.parent,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_promtool_parses_the_dashboards_queries(tmp_path: Path) -> None:
    """Each panel's query, with Grafana's variables filled in, as a recording rule: promtool parses
    the PromQL (label_values(…) of the variables is Grafana's own, not PromQL)."""
    assert PROMTOOL is not None
    exprs = [e for e in dashboard_exprs() if not e.startswith("label_values(")]
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": e.replace("$__rate_interval", "5m").replace("$job", ".*")}
        for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    done = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in done.stdout
