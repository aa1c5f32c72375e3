"""``omnistock-events``: the catalogue's own tooling."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from omnistock.events import schemas
from omnistock.events.topics import TOPICS, registry_document

app = typer.Typer(help="omnistock event catalogue tools.", no_args_is_help=True)
console = Console()


@app.command("schemas")
def schemas_command(
    check: bool = typer.Option(False, "--check", help="Exit 1 when committed files are stale."),
) -> None:
    """Write the JSON Schemas and the AsyncAPI document generated from the catalogue."""
    if check:
        stale = schemas.stale_files()
        if stale:
            console.print(f"[red]stale schema files[/]: {', '.join(stale)}")
            console.print("run: uv run omnistock-events schemas")
            raise typer.Exit(1)
        console.print("schemas are up to date")
        return
    stale = schemas.stale_files()
    schemas.write_files()
    console.print(f"wrote {len(stale)} changed file(s) under {schemas.SCHEMA_DIR}")


@app.command("topics")
def topics_command(
    as_json: bool = typer.Option(
        False,
        "--json",
        help="Print the registry as JSON (helm/omnistock/files/topics.json is this output).",
    ),
) -> None:
    """List the topic registry."""
    if as_json:
        print(json.dumps(registry_document(), indent=2))
        return
    table = Table("topic", "partitions", "retention.ms", "cleanup", "key", "owner", "consumers")
    for topic in TOPICS:
        table.add_row(
            topic.name,
            str(topic.partitions),
            str(topic.retention_ms),
            topic.cleanup_policy,
            topic.key,
            topic.owner,
            ", ".join(topic.consumers),
        )
    console.print(table)
