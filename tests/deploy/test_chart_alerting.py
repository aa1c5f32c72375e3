"""helm/omnistock feeds its own alert rules: every ServiceMonitor yields the job names the
rules select whatever the release is called, and the inventory audit runs on a schedule
and pushes the metric the invariant alert reads."""

from __future__ import annotations

import re
from importlib.metadata import entry_points
from typing import Any

import typer
import yaml
from deploy_support import (
    CHART,
    DEFAULT_VALUES,
    chart_services,
    helm_template,
    of_kind,
    render,
)
from prometheus_client import CollectorRegistry

from omnistock.devstack.prometheus import scrape_job
from omnistock.inventory.metrics import audit_metrics

RULES = yaml.safe_load((CHART / "files" / "prometheus" / "omnistock.rules.yaml").read_text())
ALERTS = {rule["alert"]: rule for group in RULES["groups"] for rule in group["rules"]}
PRODUCTION_VALUES = CHART / "ci" / "production-values.yaml"
#: A release name the job names must not depend on (the chart's name is not in it).
RELEASE = "shop-prod"


def _job(monitor: dict[str, Any], service: dict[str, Any]) -> str:
    """The job label the Prometheus operator gives the targets of ``monitor`` found through
    ``service``: the value of the Service's ``jobLabel`` label, else the Service's name."""
    labels = service["metadata"]["labels"]
    job_label = monitor["spec"].get("jobLabel")
    if job_label and job_label in labels:
        return str(labels[job_label])
    return str(service["metadata"]["name"])


def test_every_service_monitor_yields_the_job_the_alert_rules_select() -> None:
    rendered = render(values=[DEFAULT_VALUES], release=RELEASE)
    [rule] = of_kind(rendered, "PrometheusRule")
    services = of_kind(rendered, "Service")
    monitors = of_kind(rendered, "ServiceMonitor")
    [selector] = re.findall(r'up\{job=~"([^"]+)"\}', ALERTS["OmnistockServiceDown"]["expr"])

    assert rule["spec"] == RULES  # the rules checked here are the ones the chart ships
    jobs = {}
    for monitor in monitors:
        wanted = monitor["spec"]["selector"]["matchLabels"].items()
        [service] = [s for s in services if wanted <= s["metadata"]["labels"].items()]
        jobs[service["metadata"]["labels"]["app.kubernetes.io/name"]] = _job(monitor, service)
    # The same names as the dev stack's Prometheus jobs...
    assert jobs == {c: scrape_job(c) for c in [*chart_services(), "topic-operator"]}
    # ...which the rules select (PromQL regex matchers are anchored at both ends).
    for job in jobs.values():
        assert re.fullmatch(selector, job), job
    # Named after the Service (<release>-omnistock-<component>), the rules would miss them.
    for service in services:
        assert not re.fullmatch(selector, service["metadata"]["name"])


def test_the_inventory_audit_runs_on_a_schedule_and_pushes_what_the_alert_reads(
    objects: dict[str, list[dict[str, Any]]],
) -> None:
    rendered = objects["production-values"]
    audit = yaml.safe_load(PRODUCTION_VALUES.read_text())["audit"]
    [cronjob] = of_kind(rendered, "CronJob")
    job = cronjob["spec"]["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    [container] = pod["containers"]
    [inventory] = [
        d for d in of_kind(rendered, "Deployment") if d["metadata"]["name"] == "omnistock-inventory"
    ]
    [service] = inventory["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}

    assert cronjob["spec"]["schedule"] == audit["schedule"]
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert pod["restartPolicy"] == "Never"
    assert container["image"] == service["image"]
    assert container["envFrom"] == [{"configMapRef": {"name": "omnistock-inventory"}}]
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == {
        "name": "KAFKA_BOOTSTRAP_SERVERS",
        "value": "b-1.kafka.prod.internal:9096,b-2.kafka.prod.internal:9096,"
        "b-3.kafka.prod.internal:9096",
    }
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "omnistock-database-urls",
        "key": "inventory",
    }

    # The command is the inventory image's console script and its audit command, with
    # options that command really has.
    program, *args = container["command"]
    [script] = entry_points(group="console_scripts", name=program)
    assert script.value == "omnistock.inventory.cli:app"
    cli = typer.main.get_command(script.load())
    assert isinstance(cli, typer.core.TyperGroup)
    command = cli.get_command(cli.make_context(program, list(args)), args[0])
    assert command is not None
    assert command.name == "audit"
    options = command.make_context("audit", args[1:]).params
    assert options["pushgateway"] == audit["pushgateway"]["url"]
    assert options["database"] is True
    assert options["progress"] is False

    # What it pushes is what the invariant alerts read, by the labels they group by.
    registry = CollectorRegistry()
    violations, _, finished = audit_metrics(registry)
    violations.labels("I1").set(0)
    finished.set_to_current_time()
    pushed = {
        sample.name: set(sample.labels)
        for family in registry.collect()
        for sample in family.samples
    }
    violated = ALERTS["OmnistockInvariantViolated"]["expr"]
    [metric] = re.findall(r"omnistock_[a-z_]+", violated)
    assert "by (invariant)" in violated
    assert pushed[metric] == {"invariant"}
    # ...and when it last finished, so an audit that stopped finishing is noticed.
    [metric] = re.findall(r"omnistock_[a-z_]+", ALERTS["OmnistockInvariantAuditStale"]["expr"])
    assert metric in pushed


def test_no_audit_without_a_pushgateway_to_take_its_results(
    objects: dict[str, list[dict[str, Any]]],
) -> None:
    for name in ("default-values", "dev-values", "in-cluster-values"):
        assert not of_kind(objects[name], "CronJob"), name
    done = helm_template(values=[PRODUCTION_VALUES], sets=["audit.enabled=false"], api_versions=())
    assert done.returncode == 0, done.stderr
    assert "kind: CronJob" not in done.stdout
