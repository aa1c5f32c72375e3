"""``omnistock-inventory``: operating the inventory service from a shell."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer
from prometheus_client import CollectorRegistry, push_to_gateway, write_to_textfile
from rich.console import Console
from rich.table import Table
from rich.text import Text

from omnistock.inventory.audit import INVARIANTS, AuditReport, Finding, Kind, run_audit
from omnistock.inventory.metrics import audit_metrics
from omnistock.inventory.settings import InventorySettings

AUDIT_JOB = "omnistock-inventory-audit"

app = typer.Typer(help="omnistock inventory operations.", no_args_is_help=True)

#: Findings of one kind listed on the terminal; --json has them all.
SHOWN = 20


@app.callback()
def main() -> None:
    """omnistock inventory operations. Settings come from the service's environment
    (KAFKA_BOOTSTRAP_SERVERS, KAFKA_TOPIC_PREFIX, DATABASE_URL, ...)."""


@app.command()
def audit(
    database: Annotated[
        bool,
        typer.Option(
            "--database/--no-database",
            help="Also compare the service's read model (DATABASE_URL) with the log.",
        ),
    ] = False,
    json_path: Annotated[
        Path | None,
        typer.Option("--json", help="Write the full report, every finding included, to this file."),
    ] = None,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress",
            help="Progress bar (default: on a terminal; log lines otherwise).",
        ),
    ] = None,
    metrics_file: Annotated[
        Path | None,
        typer.Option(
            "--metrics-file",
            help="Write the results as Prometheus metrics to this file (node-exporter's "
            "textfile collector), for the invariant-violation alert.",
        ),
    ] = None,
    pushgateway: Annotated[
        str | None,
        typer.Option(
            "--pushgateway",
            help="Push the results as Prometheus metrics to this Pushgateway (host:port or URL).",
        ),
    ] = None,
) -> None:
    """Replay inventory.stock and inventory.reservations from offset 0 and check I1-I4.

    Exits 1 when any invariant is violated. Discrepancies (stock short of what is
    promised, e.g. after POS sales) and sagas still in flight are reported, not failed.
    """
    settings = InventorySettings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    report = asyncio.run(
        run_audit(
            settings.kafka,
            database_url=settings.database_url.get_secret_value() if database else None,
            progress=progress,
        )
    )
    print_report(report, Console())
    if json_path is not None:
        json_path.write_bytes(report.to_json())
    if metrics_file is not None or pushgateway:
        registry = audit_registry(report)
        if metrics_file is not None:
            write_to_textfile(str(metrics_file), registry)
        if pushgateway:
            push_to_gateway(pushgateway, job=AUDIT_JOB, registry=registry)
    raise typer.Exit(0 if report.ok else 1)


def audit_registry(report: AuditReport) -> CollectorRegistry:
    """The audit's results as Prometheus metrics (every invariant, 0 when it held)."""
    registry = CollectorRegistry()
    violations, events, finished = audit_metrics(registry)
    for name in INVARIANTS:
        violations.labels(name).set(len(report.of_kind("violation", name)))
    events.set(report.events)
    finished.set_to_current_time()
    return registry


def _listing(findings: list[Finding]) -> str:
    lines = [f.message + (f" [{f.position}]" if f.position else "") for f in findings[:SHOWN]]
    if len(findings) > SHOWN:
        lines.append(f"… and {len(findings) - SHOWN} more (see --json)")
    return "\n".join(lines)


def print_report(report: AuditReport, console: Console) -> None:
    table = Table("invariant", "checked", "violations", "details", title="inventory log audit")
    for name, title in INVARIANTS.items():
        violations = report.of_kind("violation", name)
        table.add_row(
            f"{name} {title}",
            f"{report.checked[name]:,}",
            f"[red]{len(violations)}[/]" if violations else "[green]0[/]",
            # Text, not markup: messages contain brackets (positions, lists).
            Text(_listing(violations) or "ok"),
        )
    console.print(table)
    sections: tuple[tuple[Kind, str], ...] = (
        ("discrepancy", "Discrepancies (stock short of what is promised; not violations)"),
        ("in_flight", "In flight (started, not yet settled)"),
        ("note", "Notes"),
    )
    for kind, heading in sections:
        findings = report.of_kind(kind)
        if findings:
            console.print(f"[bold]{heading}[/]: {len(findings)}")
            console.print(_listing(findings), markup=False, highlight=False)
    console.print(
        f"{report.events:,} events ({report.applied:,} applied, {report.duplicates:,} "
        f"duplicates, {report.fenced:,} fenced, {report.poison:,} poison) in "
        f"{report.seconds:.2f} s; state {report.state_hash[:16]}"
        + ("; read model compared" if report.read_model_compared else "")
    )
    verdict = "[green]clean[/]" if report.ok else f"[red]{len(report.violations)} violation(s)[/]"
    console.print(f"verdict: {verdict}")
