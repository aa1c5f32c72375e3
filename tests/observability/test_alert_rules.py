"""The alert rules (valid, documented, each one shown firing and not firing by promtool) and
the dashboard (every query on metrics that exist)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "helm/omnistock/files/prometheus/omnistock.rules.yaml"
RULE_TESTS = Path(__file__).with_name("omnistock.rules.test.yaml")
RUNBOOKS = ROOT / "docs/runbooks"
DASHBOARD = ROOT / "helm/omnistock/files/grafana/omnistock-overview.json"
RUNBOOK_BASE = "https://github.com/omnistock/omnistock/blob/main/docs/runbooks/"

#: Metrics the rules use that other components export (the replenishment service, the
#: topic operator, the audit job) or that Prometheus itself records.
EXTERNAL = {
    "up",
    "omnistock_replenishment_skus_below_reorder_point",
    "omnistock_replenishment_open_requests",
    "omnistock_replenishment_oldest_open_request_age_seconds",
    "omnistock_operator_reconciliation_failures_total",
}


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: run scripts/setup (Debian package prometheus)"
    return path


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests_pass() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        check=False,
        cwd=RULE_TESTS.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("rule", alerts(), ids=lambda rule: rule["alert"])
def test_every_alert_is_actionable(rule: dict[str, Any]) -> None:
    name = rule["alert"]
    assert re.fullmatch(r"\d+[smh]", rule.get("for", "")), f"{name} has no `for`"
    assert rule["labels"]["severity"] in ("critical", "warning")
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert annotations["description"].strip()
    assert annotations["runbook_url"] == f"{RUNBOOK_BASE}{name}.md"
    runbook = RUNBOOKS / f"{name}.md"
    assert runbook.is_file(), f"{runbook} is missing"
    text = runbook.read_text()
    for section in ("## Meaning", "## Impact", "## Diagnosis", "## Mitigation"):
        assert section in text, f"{runbook.name} lacks {section}"


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    outcomes: dict[str, set[bool]] = defaultdict(set)
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            outcomes[check["alertname"]].add(bool(check["exp_alerts"]))
    for rule in alerts():
        assert outcomes[rule["alert"]] == {True, False}, (
            f"{rule['alert']}: promtool tests cover {outcomes[rule['alert']] or 'nothing'}"
        )


def exported_metrics() -> set[str]:
    """Every sample name the services and the audit can export."""
    from prometheus_client import REGISTRY, CollectorRegistry

    # Imported for their side effect: registering every family in the default registry.
    import omnistock.events.metrics
    import omnistock.pos_gateway.metrics  # noqa: F401
    from omnistock.inventory import metrics as inventory_metrics

    exported: set[str] = set()
    audit = CollectorRegistry()
    inventory_metrics.audit_metrics(audit)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    for registry in (REGISTRY, audit):
        for family in registry.collect():
            exported.add(family.name)
            exported.update(family.name + s for s in suffixes.get(family.type, ()))
    return exported


def metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', "", expr)
    return set(re.findall(r"\b(omnistock_[a-z0-9_]+|up)\b", without_strings))


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def test_rules_only_use_metrics_that_exist() -> None:
    """A renamed metric must not silently blind an alert."""
    used = set().union(*(metric_names(rule["expr"]) for rule in alerts()))
    missing = sorted(used - EXTERNAL - exported_metrics())
    assert not missing, f"rules use metrics nobody exports: {missing}"


def test_the_dashboard_only_uses_metrics_that_exist() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "omnistock-overview"
    for panel in dashboard["panels"]:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
    used = set().union(*(metric_names(expr) for expr in dashboard_queries()))
    missing = sorted(used - EXTERNAL - exported_metrics())
    assert not missing, f"dashboard panels query metrics nobody exports: {missing}"
