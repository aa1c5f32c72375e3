"""A store sale from the POS gateway to the inventory stock query, and batch ingestion.

    uv run python bench/pos_to_stock.py [--sales 300] [--batches 20] [--batch-size 1000]
        [--concurrency 4] [--quick] [--json-out PATH]

Starts the inventory service and the pos-gateway as the dev stack does (processes,
sharing one topic prefix, each with its own database; ``KAFKA_BOOTSTRAP_SERVERS`` /
``DATABASE_URL`` when set, else an embedded broker and PostgreSQL), measures the raw
broker baseline first, then:

* **sale → stock**: one sale at a time, each of a SKU of its own that the store has on
  the shelf; the time from sending the POST until ``GET /v1/stock/{sku}`` on the
  inventory service first shows the unit gone (polled back to back, so the figure
  includes up to one query's time of polling granularity). Target: p99 ≤ 100 ms.
* **batch ingestion**: ``--batches`` batches of ``--batch-size`` sales over up to 500
  stocked SKUs, ``--concurrency`` requests in flight; transactions/s until the last
  answer (all accepted, in the log), and until inventory has applied them all (a marker
  sale written last is visible).

Every SKU sold is received at the store first, and the receipts are folded before the
first sale: a sale below zero would cost inventory a second event (a discrepancy).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import typer

from bench._common import (
    HttpClient,
    JsonOutOption,
    Location,
    PayloadBytesOption,
    Row,
    RunningService,
    baseline_rows,
    bench_headers,
    broker_baseline,
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
    write_result,
)
from omnistock.events.envelope import utcnow
from omnistock.events.topics import INVENTORY_STOCK
from omnistock.inventory.handlers import STOCK_GROUP

NAME: Final = "pos_to_stock"
STORE: Final = Location("store-bench", "store", False)
#: Units of each SKU on the shelf before its first sale.
OPENING_UNITS: Final = 5
#: The batch phase's sales spread over this many SKUs.
BATCH_SKUS: Final = 500
TARGET_P99_MS: Final = 100.0
#: Polling the stock query for a sale that never shows means something is broken.
VISIBLE_TIMEOUT_S: Final = 10.0

app = typer.Typer(add_completion=False)


def _sale(transaction_id: str, sequence: int, sku: str, terminal: str) -> dict[str, Any]:
    return {
        "transaction_id": transaction_id,
        "store_id": STORE.location_id,
        "terminal_id": terminal,
        "sequence": sequence,
        "occurred_at": (utcnow() - timedelta(seconds=1)).isoformat(),
        "type": "sale",
        "lines": [{"sku": sku, "quantity": 1, "unit_price": "4.99", "currency": "EUR"}],
    }


async def _sold(inventory: HttpClient, sku: str) -> None:
    """Poll the stock query back to back until the store shows one unit of ``sku`` sold."""
    query = inventory.prepare("GET", f"/v1/stock/{sku}")
    deadline = time.perf_counter() + VISIBLE_TIMEOUT_S
    while time.perf_counter() < deadline:
        if (
            on_hand(
                expect_status(await inventory.send(query), 200, f"stock of {sku}"),
                STORE.location_id,
            )
            < OPENING_UNITS
        ):
            return
    raise RuntimeError(f"sale of {sku} not visible in the stock query after {VISIBLE_TIMEOUT_S}s")


async def measure(
    gateway_url: str,
    inventory: RunningService,
    *,
    sales: int,
    batches: int,
    batch_size: int,
    concurrency: int,
) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    warm = [f"WARM-{run}-{n}" for n in range(3)]
    timed = [f"LAT-{run}-{n}" for n in range(sales)]
    marker = f"MARK-{run}"
    batch_skus = [f"TP-{run}-{i}" for i in range(min(batch_size, BATCH_SKUS))]
    total = batches * batch_size
    async with (
        httpx.AsyncClient(
            base_url=gateway_url,
            timeout=30,
            limits=httpx.Limits(max_connections=concurrency + 2),
            headers=bench_headers(),
        ) as gateway,
        HttpClient(inventory.url, max_connections=1, timeout_s=VISIBLE_TIMEOUT_S) as query,
    ):
        # Stores sell what they have: every SKU is on the shelf before the first sale, so a
        # sale is one movement, as in a shop (a sale below zero adds a discrepancy event).
        await register_locations(query, [STORE])
        opening = dict.fromkeys([*warm, *timed, marker], OPENING_UNITS)
        opening |= dict.fromkeys(batch_skus, -(-total // len(batch_skus)) + OPENING_UNITS)
        await receive_stock(query, STORE.location_id, opening, receipt_prefix=f"open-{run}")
        await settle(inventory.kafka, {STOCK_GROUP: [INVENTORY_STOCK]})

        # Warm-up: connections, metadata, the translator's first fetch.
        for n, sku in enumerate(warm):
            (
                await gateway.post("/v1/pos/transactions", json=_sale(f"w-{run}-{n}", n, sku, "tw"))
            ).raise_for_status()
            await _sold(query, sku)

        latencies: list[float] = []
        accept: list[float] = []
        for n, sku in enumerate(timed):
            started = time.perf_counter()
            response = await gateway.post(
                "/v1/pos/transactions", json=_sale(f"l-{run}-{n}", n, sku, "tl")
            )
            accept.append(time.perf_counter() - started)
            if response.status_code != 201:
                raise RuntimeError(f"sale answered {response.status_code}: {response.text}")
            await _sold(query, sku)
            latencies.append(time.perf_counter() - started)

        bodies = [
            {
                "transactions": [
                    _sale(
                        f"t-{run}-{b}-{i}",
                        b * batch_size + i,
                        batch_skus[i % len(batch_skus)],
                        "tb",
                    )
                    for i in range(batch_size)
                ]
            }
            for b in range(batches)
        ]
        gate = asyncio.Semaphore(concurrency)
        accepted = 0

        async def post(body: dict[str, Any]) -> None:
            nonlocal accepted
            async with gate:
                response = await gateway.post("/v1/pos/transactions", json=body)
            response.raise_for_status()
            accepted += response.json()["accepted"]

        started = time.perf_counter()
        await asyncio.gather(*(post(body) for body in bodies))
        answered = time.perf_counter() - started
        (
            await gateway.post("/v1/pos/transactions", json=_sale(f"m-{run}", 0, marker, "tm"))
        ).raise_for_status()
        await _sold(query, marker)
        applied = time.perf_counter() - started
    if accepted != total:
        raise RuntimeError(f"{accepted} of {total} batch transactions accepted")
    p99 = latency_summary_ms(latencies)["p99"]
    return {
        "sale_to_stock_ms": latency_summary_ms(latencies),
        "sale_accepted_ms": latency_summary_ms(accept),
        "target_p99_ms": TARGET_P99_MS,
        "target_met": p99 <= TARGET_P99_MS,
        "batch": {
            "transactions": total,
            "batch_size": batch_size,
            "concurrency": concurrency,
            "answered_s": answered,
            "answered_per_s": total / answered,
            "applied_s": applied,
            "applied_per_s": total / applied,
        },
    }


@app.command()
def main(
    *,
    sales: Annotated[int, typer.Option(min=1, help="Single sales timed to the stock query.")] = 300,
    batches: Annotated[int, typer.Option(min=1, help="Batches in the ingestion phase.")] = 20,
    batch_size: Annotated[int, typer.Option(min=1, max=1000, help="Sales per batch.")] = 1000,
    concurrency: Annotated[int, typer.Option(min=1, help="Batch requests in flight.")] = 4,
    messages: Annotated[int, typer.Option(min=1, help="Broker baseline messages.")] = 1000,
    payload_bytes: PayloadBytesOption = 600,
    quick: Annotated[bool, typer.Option("--quick", help="A few seconds of everything.")] = False,
    json_out: JsonOutOption = None,
) -> None:
    """POS sale → inventory stock query latency, and batch ingestion throughput."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if quick:
        sales, batches, batch_size, messages = 10, 2, 100, 100
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
        with run_service(broker, "inventory") as inventory:
            shared = {"KAFKA_TOPIC_PREFIX": inventory.kafka.topic_prefix}
            with run_service(broker, "pos-gateway", extra_env=shared) as gateway:
                result = _run(
                    gateway,
                    inventory=inventory,
                    sales=sales,
                    batches=batches,
                    batch_size=batch_size,
                    concurrency=concurrency,
                )
    figures = {
        "benchmark": NAME,
        "parameters": {
            "sales": sales,
            "batches": batches,
            "batch_size": batch_size,
            "concurrency": concurrency,
            "quick": quick,
        },
        "machine": machine_facts(),
        "broker_baseline": baseline,
        **result,
    }
    path = write_result(NAME, figures, json_out)
    batch = result["batch"]
    print_table(
        "POS sale → inventory stock query",
        {
            "pos-gateway + inventory": [
                Row(
                    "sale → visible in GET /v1/stock/{sku}",
                    latency_text(result["sale_to_stock_ms"]),
                    str(sales),
                ),
                Row("sale → gateway 201", latency_text(result["sale_accepted_ms"]), str(sales)),
                Row(
                    f"target p99 ≤ {TARGET_P99_MS:g} ms",
                    "met" if result["target_met"] else "NOT MET",
                ),
                Row(
                    f"batch ingestion ({batch_size}/request, {concurrency} in flight), answered",
                    f"{batch['answered_per_s']:,.0f} transactions/s",
                    str(batch["transactions"]),
                ),
                Row(
                    "batch ingestion, applied in inventory",
                    f"{batch['applied_per_s']:,.0f} transactions/s",
                    str(batch["transactions"]),
                ),
            ],
            "raw broker baseline (same run)": baseline_rows(baseline),
        },
        caption=machine_caption(baseline),
        console=console,
    )
    console.print(f"written to {path}")


def _run(
    gateway: RunningService,
    *,
    inventory: RunningService,
    sales: int,
    batches: int,
    batch_size: int,
    concurrency: int,
) -> dict[str, Any]:
    return asyncio.run(
        measure(
            gateway.url,
            inventory,
            sales=sales,
            batches=batches,
            batch_size=batch_size,
            concurrency=concurrency,
        )
    )


if __name__ == "__main__":
    app()
