"""How soon a stock change is visible in the cross-store stock query.

    uv run python bench/visibility.py [--samples 200] [--quick] [--json-out PATH]

Starts the inventory service as the dev stack does (``KAFKA_BOOTSTRAP_SERVERS`` /
``DATABASE_URL`` when set, else an embedded broker and PostgreSQL), measures the raw
broker baseline first, then, one sample at a time, each on a SKU of its own:

* **receipt**: ``POST /v1/receipts``; from its 201 (accepted: in the log) until
  ``GET /v1/stock/{sku}`` shows the units at the store.
* **POS sale**: a ``PosTransactionRecorded`` written to ``pos.transactions`` the way the
  pos-gateway writes an accepted sale (``EventProducer.publish``, acks=all); from the
  acknowledgement until the stock query shows the unit gone. This is inventory's part
  of "POS sale accepted → visible"; ``bench/pos_to_stock.py`` measures the same through
  the pos-gateway's HTTP API.

The stock query is polled back to back without ``consistent_with`` (what a store app
does), so a figure can be late by up to one query's duration, reported alongside.
Target (ARCHITECTURE.md): p99 ≤ 100 ms.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import typer

from bench._common import (
    Broker,
    CpuMeter,
    HttpClient,
    JsonOutOption,
    Location,
    PayloadBytesOption,
    Row,
    RunningService,
    baseline_rows,
    broker_baseline,
    cpu_rows,
    expect_status,
    latency_summary_ms,
    latency_text,
    machine_caption,
    machine_facts,
    make_console,
    on_hand,
    print_table,
    receive_stock,
    register_locations,
    resolve_broker,
    run_service,
    settle,
    target_row,
    write_result,
)
from omnistock.events.catalogue import PosLine, PosTransactionRecorded
from omnistock.events.envelope import utcnow
from omnistock.events.producer import EventProducer
from omnistock.events.topics import INVENTORY_STOCK, POS_TRANSACTIONS
from omnistock.inventory.handlers import STOCK_GROUP, TRANSLATOR_GROUP

NAME: Final = "visibility"
log = logging.getLogger(__name__)

TARGET_P99_MS: Final = 100.0
#: A change not visible after this long is reported as never seen: something is broken.
VISIBLE_TIMEOUT_S: Final = 10.0
RECEIPT_UNITS: Final = 5
#: Stock each POS SKU starts with, so a sale is an ordinary one (no discrepancy).
POS_OPENING_UNITS: Final = 10
QUICK_SAMPLES: Final = 5


@dataclass(slots=True)
class Sample:
    sku: str
    #: perf_counter() when the change was sent, accepted (2xx / ack) and first seen.
    sent: float = 0.0
    accepted: float = 0.0
    visible: float | None = None
    polls: int = 0
    poll_s: float = 0.0

    @property
    def latency_s(self) -> float | None:
        return None if self.visible is None else self.visible - self.accepted


async def watch(
    client: HttpClient, sample: Sample, shows: Callable[[Mapping[str, Any]], bool]
) -> None:
    """Poll the stock query back to back until ``shows`` is true of the SKU's row."""
    path = client.prepare("GET", f"/v1/stock/{sample.sku}")
    deadline = sample.accepted + VISIBLE_TIMEOUT_S
    while time.perf_counter() < deadline:
        asked = time.perf_counter()
        stock = expect_status(await client.send(path), 200, f"stock of {sample.sku}")
        answered = time.perf_counter()
        sample.polls += 1
        sample.poll_s += answered - asked
        if shows(stock):
            sample.visible = answered
            return


async def receipts(client: HttpClient, store: str, run: str, count: int) -> list[Sample]:
    samples = []
    for n in range(count):
        sample = Sample(f"VIS-R-{run}-{n:05d}")
        body = {
            "receipt_id": f"vis-{run}-{n}",
            "location_id": store,
            "lines": [{"sku": sample.sku, "quantity": RECEIPT_UNITS}],
        }
        request = client.prepare("POST", "/v1/receipts", body)
        sample.sent = time.perf_counter()
        expect_status(await client.send(request), 201, "a receipt")
        sample.accepted = time.perf_counter()
        await watch(client, sample, lambda s: on_hand(s, store) >= RECEIPT_UNITS)
        samples.append(sample)
    return samples


async def pos_sales(
    client: HttpClient, producer: EventProducer, store: str, skus: list[str], run: str
) -> list[Sample]:
    samples = []
    for n, sku in enumerate(skus):
        sample = Sample(sku)
        sale = PosTransactionRecorded(
            transaction_id=f"vis-{run}-{n}",
            store_id=store,
            terminal_id="T1",
            sequence=n,
            occurred_at=utcnow() - timedelta(milliseconds=50),
            type="sale",
            lines=[PosLine(sku=sku, quantity=1, unit_price=Decimal("4.99"), currency="EUR")],
        )
        sample.sent = time.perf_counter()
        await producer.publish(sale)
        sample.accepted = time.perf_counter()
        await watch(client, sample, lambda s: on_hand(s, store) == POS_OPENING_UNITS - 1)
        samples.append(sample)
    return samples


def summarise(samples: list[Sample]) -> dict[str, Any]:
    seen = [s for s in samples if s.visible is not None]
    polls = sum(s.polls for s in samples)
    return {
        "samples": len(samples),
        "visible": len(seen),
        "never_visible": len(samples) - len(seen),
        "accepted_to_visible_ms": (
            latency_summary_ms([s.visible - s.accepted for s in seen if s.visible])
            if seen
            else None
        ),
        "sent_to_visible_ms": (
            latency_summary_ms([s.visible - s.sent for s in seen if s.visible]) if seen else None
        ),
        "accept_ms": latency_summary_ms([s.accepted - s.sent for s in samples]),
        "polls_per_sample": polls / len(samples),
        # The granularity of the figures: one stock query, back to back.
        "poll_ms": sum(s.poll_s for s in samples) / polls * 1000 if polls else None,
    }


async def measure(broker: Broker, service: RunningService, samples: int) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    store = Location(f"ST-VIS-{run}", "store", False)
    processes = {
        "load generator (this process)": os.getpid(),
        "inventory service": service.pid,
        "broker": broker.pid,
        "PostgreSQL": service.postgres_pid,
    }
    # One connection: samples are sequential, and so are the polls of each.
    async with (
        HttpClient(service.url, max_connections=1, timeout_s=VISIBLE_TIMEOUT_S) as client,
        EventProducer(service.kafka, source="/omnistock/pos-gateway/bench") as producer,
    ):
        await register_locations(client, [store])
        pos_skus = [f"VIS-P-{run}-{n:05d}" for n in range(samples)]
        await receive_stock(
            client,
            store.location_id,
            dict.fromkeys(pos_skus, POS_OPENING_UNITS),
            receipt_prefix=f"open-{run}",
        )
        # Every opening receipt folded, so a sale's figure is the sale's alone.
        await settle(service.kafka, {STOCK_GROUP: [INVENTORY_STOCK]})
        phases: dict[str, Any] = {}
        meter = CpuMeter(processes)
        meter.start()
        receipt_samples = await receipts(client, store.location_id, run, samples)
        phases["receipt"] = {**summarise(receipt_samples), "cpu": meter.read()}
        meter.start()
        sale_samples = await pos_sales(client, producer, store.location_id, pos_skus, run)
        phases["pos_sale"] = {**summarise(sale_samples), "cpu": meter.read()}
        await settle(
            service.kafka,
            {TRANSLATOR_GROUP: [POS_TRANSACTIONS], STOCK_GROUP: [INVENTORY_STOCK]},
        )
        phases["checks"] = await final_figures(
            client, store.location_id, receipt_samples, sale_samples
        )
    return phases


async def final_figures(
    client: HttpClient, store: str, receipt_samples: list[Sample], sale_samples: list[Sample]
) -> dict[str, Any]:
    """Once settled, every SKU shows exactly what was done to it: nothing lost or doubled."""
    wrong: list[dict[str, Any]] = []
    expected = [(s.sku, RECEIPT_UNITS) for s in receipt_samples] + [
        (s.sku, POS_OPENING_UNITS - 1) for s in sale_samples
    ]
    for sku, units in expected:
        stock = expect_status(await client.request("GET", f"/v1/stock/{sku}"), 200, sku)
        if on_hand(stock, store) != units:
            wrong.append({"sku": sku, "expected": units, "on_hand": on_hand(stock, store)})
    return {"skus": len(expected), "wrong": wrong[:50], "ok": not wrong}


def phase_rows(phase: Mapping[str, Any]) -> list[Row]:
    n = str(phase["samples"])
    rows = [
        Row(
            "accepted → visible",
            latency_text(phase["accepted_to_visible_ms"]),
            str(phase["visible"]),
        ),
        Row("sent → visible", latency_text(phase["sent_to_visible_ms"]), str(phase["visible"])),
        Row("accept (2xx / ack)", latency_text(phase["accept_ms"]), n),
        Row(
            "stock query (poll granularity) · polls per sample",
            f"{phase['poll_ms'] or 0:.1f} ms · {phase['polls_per_sample']:.1f}",
        ),
    ]
    summary = phase["accepted_to_visible_ms"]
    if summary:
        rows.append(
            target_row(
                f"p99 ≤ {TARGET_P99_MS:g} ms",
                summary["p99"] <= TARGET_P99_MS and not phase["never_visible"],
                f"p99 {summary['p99']:.1f} ms",
            )
        )
    if phase["never_visible"]:
        rows.append(
            Row(f"never visible within {VISIBLE_TIMEOUT_S:g} s", str(phase["never_visible"]))
        )
    cpu = phase["cpu"]
    rows.append(
        Row(
            "CPU: generator · service · broker · PostgreSQL · others",
            " · ".join(f"{c:.2f}" for c in cpu["cores"].values())
            + f" · {cpu['others_cores']:.2f} cores",
        )
    )
    return rows


app = typer.Typer(add_completion=False)


@app.command()
def main(
    *,
    samples: Annotated[int, typer.Option(min=1, help="Samples of each kind of change.")] = 200,
    messages: Annotated[int, typer.Option(min=1, help="Broker baseline messages.")] = 1000,
    payload_bytes: PayloadBytesOption = 600,
    quick: Annotated[bool, typer.Option("--quick", help="A few samples (smoke tests).")] = False,
    json_out: JsonOutOption = None,
) -> None:
    """Measure receipt and POS sale → visible in GET /v1/stock/{sku}."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if quick:
        samples, messages = QUICK_SAMPLES, 20
    console = make_console()
    with resolve_broker() as broker:
        console.print(f"broker: {broker.kind} at {broker.kafka.bootstrap_servers}")
        baseline = asyncio.run(
            broker_baseline(
                broker.kafka,
                messages=messages,
                payload_bytes=payload_bytes,
                round_trip_budget_s=10.0,
                broker=broker.kind,
            )
        )
        with run_service(broker) as service:
            console.print(f"inventory service at {service.url}, database {service.postgres}")
            phases = asyncio.run(measure(broker, service, samples))
    figures = {
        "benchmark": NAME,
        "parameters": {"samples": samples, "quick": quick, "poll": "back to back"},
        "machine": machine_facts(),
        "broker_baseline": baseline,
        **phases,
    }
    print_table(
        "stock change → visible in GET /v1/stock/{sku}",
        {
            "receipt (POST /v1/receipts)": phase_rows(phases["receipt"]),
            "POS sale (pos.transactions, as the gateway writes it)": phase_rows(phases["pos_sale"]),
            "CPU during the receipts": cpu_rows(phases["receipt"]["cpu"]),
            "broker baseline (same run, before the service started)": baseline_rows(baseline),
        },
        caption=machine_caption(baseline),
        console=console,
    )
    path = write_result(NAME, figures, json_out)
    console.print(f"wrote {path}")
    if not phases["checks"]["ok"] or any(
        phases[kind]["never_visible"] for kind in ("receipt", "pos_sale")
    ):
        console.print("[bold red]a change was lost or never became visible: see the JSON[/]")
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
