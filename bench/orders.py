"""Place-order latency through the real orders and inventory services, at a fixed rate.

    uv run python bench/orders.py [--rate 200] [--duration 10] [--client lean|httpx]
        [--quick] [--json-out PATH]

Starts the inventory and orders services as the dev stack does (processes, their
own databases, topics under one prefix; ``KAFKA_BOOTSTRAP_SERVERS`` /
``DATABASE_URL`` when set, else an embedded broker, where services fetch with
``KAFKA_FETCH_MAX_WAIT_MS=10`` because Tansu holds every fetch for the full wait),
and measures the raw broker baseline first. Then it reserves one cart per order at
inventory (not timed) and places the orders open loop: order *i* at
``start + i / rate``, whatever the answers do, with latency from the scheduled time
(so a service that falls behind shows as queueing, not as a lower offered load).

A placed order's answer waits for the whole saga: ``OrderPlaced`` in the log,
inventory's translator, its reservation saga and stock partitions committing, the
answer back on ``inventory.reservations`` and relayed to ``orders.events``. Every
cart is valid, so every order must end ``confirmed``; the run fails otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import typer

from bench._common import (
    CLIENTS,
    AnyHttpClient,
    HttpError,
    JsonOutOption,
    Location,
    Row,
    baseline_rows,
    broker_baseline,
    expect_status,
    http_client,
    latency_summary_ms,
    machine_caption,
    make_console,
    print_table,
    receive_stock,
    register_locations,
    resolve_broker,
    run_service,
    write_result,
)

NAME = "orders"
WAREHOUSE: Final = Location("bench-wh", "warehouse", fulfils_online=True)
SKUS: Final = 200
#: Reservations made at once while preparing (not measured).
SETUP_IN_FLIGHT: Final = 32
#: Per request; an answer later than this counts as a timeout.
REQUEST_TIMEOUT_S: Final = 30.0
SETTLE_TIMEOUT_S: Final = 60.0
_SETTLE_POLL_S: Final = 0.2


@dataclass(slots=True)
class Placed:
    body: dict[str, Any]
    scheduled: float = 0.0
    started: float = 0.0
    finished: float = 0.0
    outcome: str = "unsent"

    @property
    def latency_s(self) -> float:
        return self.finished - self.scheduled


def order_bodies(run: str, count: int) -> list[dict[str, Any]]:
    return [
        {
            "order_id": f"ord-{run}-{n}",
            "reservation_id": f"res-{run}-{n}",
            "customer_id": f"cust-{n % 97}",
            "payment_reference": f"psp-{run}-{n}",
            "lines": [{"sku": f"SKU-{n % SKUS}", "quantity": 1}],
        }
        for n in range(count)
    ]


async def reserve_all(client: AnyHttpClient, bodies: Sequence[dict[str, Any]]) -> None:
    gate = asyncio.Semaphore(SETUP_IN_FLIGHT)

    async def reserve(body: dict[str, Any]) -> None:
        request = {"reservation_id": body["reservation_id"], "lines": body["lines"]}
        async with gate:
            response = await client.request("POST", "/v1/reservations", request)
            while response.status == 504:
                # Decided later than inventory's wait on a busy machine; reserving is
                # idempotent on the reservation id, so asking again returns the outcome.
                response = await client.request("POST", "/v1/reservations", request)
        expect_status(response, 201, f"reserving {body['reservation_id']}")

    await asyncio.gather(*(reserve(body) for body in bodies))


async def place(client: AnyHttpClient, placed: Placed) -> None:
    placed.started = asyncio.get_running_loop().time()
    try:
        response = await client.request("POST", "/v1/orders", placed.body)
    except TimeoutError:
        placed.outcome = "timeout"
    except HttpError:
        placed.outcome = "connection_error"
    else:
        if response.status == 201:
            placed.outcome = str(response.json()["status"])
        else:
            placed.outcome = "pending" if response.status == 202 else f"http_{response.status}"
    placed.finished = asyncio.get_running_loop().time()


async def open_loop(client: AnyHttpClient, orders: Sequence[Placed], rate: float) -> None:
    """Send order *i* at ``start + i / rate`` whether or not earlier ones were answered."""
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    tasks = []
    for i, placed in enumerate(orders):
        placed.scheduled = start + i / rate
        delay = placed.scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)  # keeping to the schedule: the load's shape
        tasks.append(asyncio.create_task(place(client, placed)))
    await asyncio.gather(*tasks)


async def until_settled(client: AnyHttpClient) -> float:
    """Seconds until no order is left ``placed`` (answers still in flight at the end)."""
    started = time.perf_counter()
    async with asyncio.timeout(SETTLE_TIMEOUT_S):
        while True:
            page = expect_status(
                await client.request("GET", "/v1/orders?status=placed&limit=1"), 200, "listing"
            )
            if not page["items"]:
                return time.perf_counter() - started
            await asyncio.sleep(_SETTLE_POLL_S)  # polling another process's progress


async def count_statuses(client: AnyHttpClient) -> dict[str, int]:
    counts: Counter[str] = Counter()
    after = ""
    while True:
        query = "/v1/orders?limit=500" + (f"&after={after}" if after else "")
        page = expect_status(await client.request("GET", query), 200, "listing")
        counts.update(item["status"] for item in page["items"])
        if page["next_after"] is None:
            return dict(counts)
        after = page["next_after"]


async def measure(
    inventory_url: str, orders_url: str, *, rate: int, duration_s: float, client_kind: str
) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    count = max(1, int(rate * duration_s))
    warmup = order_bodies(f"{run}w", max(10, rate // 10))
    bodies = order_bodies(run, count)
    # An answer may take the whole decision wait (3 s by default): enough connections that
    # the client never queues requests itself, or the figures would measure its pool.
    connections = max(64, rate * 5)
    stock = http_client(client_kind, inventory_url, max_connections=64, timeout_s=30.0)
    orders = http_client(
        client_kind, orders_url, max_connections=connections, timeout_s=REQUEST_TIMEOUT_S
    )
    async with stock, orders:
        await register_locations(stock, [WAREHOUSE])
        await receive_stock(
            stock,
            WAREHOUSE.location_id,
            {f"SKU-{n}": count + len(warmup) for n in range(SKUS)},
            receipt_prefix=f"rc-{run}",
        )
        await reserve_all(stock, [*warmup, *bodies])
        # Connections, first batches and caches, not recorded.
        await open_loop(orders, [Placed(body) for body in warmup], max(1.0, rate / 4))
        placed = [Placed(body) for body in bodies]
        await open_loop(orders, placed, rate)
        settle_s = await until_settled(orders)
        statuses = await count_statuses(orders)
    outcomes = Counter(p.outcome for p in placed)
    answered = [p.latency_s for p in placed if p.outcome in ("confirmed", "rejected")]
    return {
        "rate_per_s": rate,
        "orders": count,
        # The rate requests actually went out at (the generator keeping up, or not).
        "sent_per_s": (count - 1) / max(1e-9, placed[-1].started - placed[0].started),
        "send_lag_ms": latency_summary_ms([p.started - p.scheduled for p in placed]),
        "latency_ms": latency_summary_ms([p.latency_s for p in placed]),
        "decided_latency_ms": latency_summary_ms(answered) if answered else None,
        "outcomes": dict(sorted(outcomes.items())),
        "settle_s": settle_s,
        "final_statuses": statuses,
    }


def order_rows(figures: dict[str, Any]) -> list[Row]:
    def ms(summary: dict[str, float] | None) -> str:
        if summary is None:
            return "-"
        return f"p50 {summary['p50']:.1f} · p99 {summary['p99']:.1f} · max {summary['max']:.1f} ms"

    n = str(figures["orders"])
    return [
        Row(
            f"place order at {figures['rate_per_s']}/s (every answer)", ms(figures["latency_ms"]), n
        ),
        Row("place order, 201 with the final status", ms(figures["decided_latency_ms"])),
        Row("offered → sent rate", f"{figures['rate_per_s']} → {figures['sent_per_s']:.0f}/s"),
        Row("send lag behind the schedule", ms(figures["send_lag_ms"])),
        Row("answers", ", ".join(f"{k} {v}" for k, v in figures["outcomes"].items())),
        Row("settled after the last request", f"{figures['settle_s']:.2f} s"),
    ]


app = typer.Typer(add_completion=False)


@app.command()
def main(
    *,
    rate: Annotated[int, typer.Option("--rate", min=1, help="Orders placed per second.")] = 200,
    duration: Annotated[
        float, typer.Option("--duration", min=0.1, help="Seconds of placing orders.")
    ] = 10.0,
    client: Annotated[
        str, typer.Option("--client", help=f"HTTP client: {', '.join(CLIENTS)}.")
    ] = "lean",
    quick: Annotated[
        bool, typer.Option("--quick", help="A short, light run (smoke tests).")
    ] = False,
    json_out: JsonOutOption = None,
) -> None:
    """Measure place-order latency at a fixed rate, beside the raw broker baseline."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if quick:
        rate, duration = min(rate, 20), min(duration, 2.0)
    console = make_console()
    with resolve_broker() as broker:
        console.print(f"broker: {broker.kind} at {broker.kafka.bootstrap_servers}")
        baseline = asyncio.run(
            broker_baseline(
                broker.kafka,
                messages=200 if quick else 2000,
                payload_bytes=512,
                round_trip_budget_s=2.0 if quick else 10.0,
                broker=broker.kind,
            )
        )
        with (
            run_service(broker, "inventory") as inventory,
            run_service(
                broker,
                "orders",
                extra_env={"KAFKA_TOPIC_PREFIX": inventory.kafka.topic_prefix},
            ) as orders,
        ):
            figures = asyncio.run(
                measure(
                    inventory.url, orders.url, rate=rate, duration_s=duration, client_kind=client
                )
            )
    print_table(
        "place order (orders + inventory services)",
        {"orders": order_rows(figures), "broker baseline": baseline_rows(baseline)},
        caption=machine_caption(baseline),
        console=console,
    )
    path = write_result(NAME, {"orders": figures, "baseline": baseline}, json_out)
    console.print(f"wrote {path}")
    confirmed = figures["final_statuses"].get("confirmed", 0)
    if confirmed != figures["orders"] + max(10, rate // 10):
        # Every cart was held: anything but confirmed is a correctness failure.
        console.print(f"[red]not every order was confirmed: {figures['final_statuses']}[/]")
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
