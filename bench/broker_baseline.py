"""The raw broker baseline on its own: what Kafka and the client give before any service.

    uv run python bench/broker_baseline.py [--messages 2000] [--payload-bytes 512]
        [--concurrency 64] [--round-trip-budget 20] [--fetch-max-wait-ms 500]
        [--json-out PATH]

Runs against ``KAFKA_BOOTSTRAP_SERVERS`` when set, else against an embedded Tansu
broker started for the run.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

# Run as a script, Python puts bench/ itself on the path; benchmarks import their
# shared code as ``bench._common`` (how mypy resolves it), so the repo root goes first.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import typer

from bench._common import (
    DEFAULT_CONCURRENCY,
    DEFAULT_ROUND_TRIP_BUDGET_S,
    ConcurrencyOption,
    FetchMaxWaitOption,
    JsonOutOption,
    MessagesOption,
    PayloadBytesOption,
    RoundTripBudgetOption,
    baseline_rows,
    broker_baseline,
    machine_caption,
    make_console,
    print_table,
    resolve_broker,
    write_result,
)

NAME = "broker_baseline"

app = typer.Typer(add_completion=False)


@app.command()
def main(
    *,
    messages: MessagesOption = 2000,
    payload_bytes: PayloadBytesOption = 512,
    concurrency: ConcurrencyOption = DEFAULT_CONCURRENCY,
    round_trip_budget: RoundTripBudgetOption = DEFAULT_ROUND_TRIP_BUDGET_S,
    fetch_max_wait_ms: FetchMaxWaitOption = None,
    json_out: JsonOutOption = None,
) -> None:
    """Measure produce→consume round trips and produce/consume throughput."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    console = make_console()
    with resolve_broker() as broker:
        console.print(f"broker: {broker.kind} at {broker.kafka.bootstrap_servers}")
        figures = asyncio.run(
            broker_baseline(
                broker.kafka,
                messages=messages,
                payload_bytes=payload_bytes,
                concurrency=concurrency,
                round_trip_budget_s=round_trip_budget,
                fetch_max_wait_ms=fetch_max_wait_ms,
                broker=broker.kind,
            )
        )
    print_table(
        "raw broker baseline",
        {"broker baseline": baseline_rows(figures)},
        caption=machine_caption(figures),
        console=console,
    )
    path = write_result(NAME, figures, json_out)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    app()
