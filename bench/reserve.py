"""Reservations through the real inventory service: open-loop rates, and a flash sale.

    uv run python bench/reserve.py [--rates 100,250,500,1000] [--duration 20]
        [--skus 1000] [--max-connections 512] [--client lean|httpx] [--quick]
        [--json-out PATH]
    uv run python bench/reserve.py --flash-sale [--shoppers 5000] [--units 100] [--quick]

Starts the inventory service as the dev stack does (its own topics and database;
``KAFKA_BOOTSTRAP_SERVERS`` / ``DATABASE_URL`` when set, else an embedded broker and
PostgreSQL), measures the raw broker baseline first, then:

* **rates** (default): for each rate, a fixed schedule of send times (request *i* at
  ``start + i / rate``), whatever the answers do. Latency runs from the scheduled time,
  so when the service (or the generator) falls behind, the queueing shows in the
  figures instead of silently lowering the offered load (coordinated omission). Carts
  of 1-3 lines over ``--skus`` SKUs at warehouses and stores; a few SKUs are scarce,
  so some carts are rejected (409).
* **flash sale**: one SKU with exactly ``--units`` units at two locations, and
  ``--shoppers`` shoppers, each on an open connection, all asking for one unit at
  the same moment.

Each phase ends by waiting until the service has folded everything written, then
checks the books: the units held per SKU and location equal what the 201 answers
allocated (plus what requests that got no answer turned out to hold), none of them
more than is on hand. A mismatch is a correctness failure and makes the run fail.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import typer

from bench._common import (
    CLIENTS,
    CONNECTION_ERROR,
    HELD,
    OUTCOMES,
    REJECTED,
    SETTLE_TIMEOUT_S,
    TIMEOUT,
    UNKNOWN_OUTCOMES,
    AnyHttpClient,
    Broker,
    CpuMeter,
    HttpError,
    JsonOutOption,
    Location,
    PayloadBytesOption,
    Prepared,
    Row,
    RunningService,
    baseline_rows,
    broker_baseline,
    classify,
    cpu_per_answer,
    cpu_rows,
    expect_status,
    http_client,
    latency_summary_ms,
    latency_text,
    machine_caption,
    machine_facts,
    make_console,
    merge_positions,
    print_table,
    receive_stock,
    register_locations,
    resolve_broker,
    run_service,
    settle,
    target_row,
    write_result,
)
from omnistock.events import codec
from omnistock.events.envelope import Envelope, Event, Position
from omnistock.events.fold import Fold
from omnistock.events.replay import replay
from omnistock.events.topics import INVENTORY_RESERVATIONS, INVENTORY_STOCK
from omnistock.inventory.domain.stock import StockBook
from omnistock.inventory.handlers import RESERVATIONS_GROUP, STOCK_GROUP

NAME: Final = "reserve"
#: How the CPU figures name the service under load.
SERVICE: Final = "inventory service"
log = logging.getLogger(__name__)

#: The groups whose work a reservation causes, and what they read.
GROUPS: Final = {STOCK_GROUP: [INVENTORY_STOCK], RESERVATIONS_GROUP: [INVENTORY_RESERVATIONS]}
#: Targets from ARCHITECTURE.md ("Performance targets").
TARGET_P99_MS: Final = 25.0
TARGET_P99_RATE: Final = 500
TARGET_RESERVATIONS_PER_S: Final = 1000.0
#: Holds outlive the run, so every unit held during it is still held when it is checked.
TTL_SECONDS: Final = 900
WAREHOUSE_UNITS: Final = 500
STORE_UNITS: Final = 50
#: Share of SKUs with only a few units, so that some carts are rejected.
SCARCE_SHARE: Final = 0.02
SCARCE_UNITS: Final = 3
#: Share of lines for a named store (click and collect); the rest ship from anywhere.
STORE_LINE_SHARE: Final = 0.2
#: Load before the measured rates, not recorded: connections, caches, first batches.
WARMUP_RATE: Final = 50
WARMUP_S: Final = 2.0
#: How long the books check waits for an overloaded service to fold its backlog: every
#: request that reached the log is decided, answered or not.
BACKLOG_TIMEOUT_S: Final = 300.0
#: Concurrent stock queries when the books are checked.
CHECK_CONCURRENCY: Final = 16
#: The flash sale's client timeout: longer than the service's own decision timeout (5 s),
#: so a slow decision shows as the service's 504, not as a client giving up.
FLASH_TIMEOUT_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class Quick:
    """What ``--quick`` runs: everything once, briefly (smoke tests)."""

    rates: tuple[int, ...] = (20, 50)
    duration_s: float = 2.0
    skus: int = 100
    shoppers: int = 200
    units: int = 20
    messages: int = 20


QUICK: Final = Quick()


# --- the catalogue of the run ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Catalogue:
    skus: list[str]
    scarce: set[str]
    warehouses: list[Location]
    stores: list[Location]

    @property
    def locations(self) -> list[Location]:
        return [*self.warehouses, *self.stores]

    def stock(self) -> dict[str, dict[str, int]]:
        """location → sku → units to receive."""
        stock: dict[str, dict[str, int]] = {loc.location_id: {} for loc in self.locations}
        for sku in self.skus:
            if sku in self.scarce:
                stock[self.warehouses[0].location_id][sku] = SCARCE_UNITS
                continue
            for warehouse in self.warehouses:
                stock[warehouse.location_id][sku] = WAREHOUSE_UNITS
            for store in self.stores:
                stock[store.location_id][sku] = STORE_UNITS
        return stock


def make_catalogue(skus: int, run: str) -> Catalogue:
    names = [f"SKU-{run}-{n:05d}" for n in range(skus)]
    scarce = set(names[: max(1, int(skus * SCARCE_SHARE))])
    warehouses = [Location(f"WH-{run}-{n}", "warehouse", True) for n in (1, 2)]
    # Two stores ship online orders (ship-from-store), two only sell and collect.
    stores = [Location(f"ST-{run}-{n}", "store", n <= 2) for n in (1, 2, 3, 4)]
    return Catalogue(names, scarce, warehouses, stores)


def make_cart(rng: random.Random, catalogue: Catalogue) -> list[dict[str, Any]]:
    """1-3 lines of distinct SKUs; mostly one unit, sometimes a named store."""
    lines: list[dict[str, Any]] = []
    for sku in rng.sample(catalogue.skus, rng.choice((1, 1, 2, 2, 3))):
        line: dict[str, Any] = {"sku": sku, "quantity": rng.choices((1, 2, 3), (80, 15, 5))[0]}
        if rng.random() < STORE_LINE_SHARE:
            line["location_id"] = rng.choice(catalogue.stores).location_id
        lines.append(line)
    return lines


def reservation_body(reservation_id: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "reservation_id": reservation_id,
        "lines": lines,
        "ttl_seconds": TTL_SECONDS,
        "channel": "web",
    }


# --- one request, as the figures see it -------------------------------------------------------


@dataclass(slots=True)
class Sent:
    reservation_id: str
    lines: list[dict[str, Any]]
    request: Prepared
    #: loop.time() of the schedule, of the actual send, of the answer.
    scheduled: float = 0.0
    started: float = 0.0
    finished: float = 0.0
    outcome: str = ""
    status: int | None = None
    #: The 201 answer's allocations: (sku, location_id, quantity).
    allocations: tuple[tuple[str, str, int], ...] = ()
    position: str = ""

    @property
    def latency_s(self) -> float:
        return self.finished - self.scheduled


async def send(client: AnyHttpClient, sent: Sent) -> None:
    loop = asyncio.get_running_loop()
    sent.started = loop.time()
    try:
        response = await client.send(sent.request)
    except TimeoutError:
        sent.outcome = TIMEOUT
    except HttpError:
        sent.outcome = CONNECTION_ERROR
    else:
        sent.status = response.status
        sent.outcome = classify(response.status, response.body)
        if sent.outcome == HELD:
            answer = response.json()
            sent.allocations = tuple(
                (line["sku"], line["location_id"], line["quantity"]) for line in answer["lines"]
            )
            sent.position = answer.get("position") or ""
    sent.finished = loop.time()


async def open_loop(client: AnyHttpClient, requests: Sequence[Sent], rate: float) -> None:
    """Send request *i* at ``start + i / rate`` whether or not earlier ones were answered."""
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.01
    tasks: set[asyncio.Task[None]] = set()
    for i, sent in enumerate(requests):
        sent.scheduled = start + i / rate
        delay = sent.scheduled - loop.time()
        if delay > 0:
            # Keeping to the schedule: the load's shape, not a wait for a condition.
            await asyncio.sleep(delay)
        task = asyncio.create_task(send(client, sent))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)


def summarise(requests: Sequence[Sent], rate: float | None) -> dict[str, Any]:
    counts = Counter(sent.outcome for sent in requests)
    answered = [s for s in requests if s.status is not None]
    n = len(requests)
    first = min(s.scheduled for s in requests)
    last = max(s.finished for s in requests)
    span = last - first
    figures: dict[str, Any] = {
        "requests": n,
        "outcomes": {outcome: counts.get(outcome, 0) for outcome in OUTCOMES},
        "statuses": dict(sorted(Counter(str(s.status) for s in requests).items())),
        "reject_rate": counts.get(REJECTED, 0) / n,
        "error_rate": sum(counts.get(o, 0) for o in UNKNOWN_OUTCOMES) / n,
        "span_s": span,
        "answers_per_s": len(answered) / span,
        "reservations_per_s": counts.get(HELD, 0) / span,
        # Every request with an HTTP answer, 409 and 5xx included.
        "latency_ms": latency_summary_ms([s.latency_s for s in answered]) if answered else None,
        "held_latency_ms": (
            latency_summary_ms([s.latency_s for s in requests if s.outcome == HELD])
            if counts.get(HELD)
            else None
        ),
        # How late the generator itself sent: CPU it did not get shows here.
        "send_lag_ms": latency_summary_ms([s.started - s.scheduled for s in requests]),
    }
    if rate is not None:
        figures["offered_per_s"] = rate
    return figures


# --- checking the books ----------------------------------------------------------------------


async def check_books(
    client: AnyHttpClient,
    service: RunningService,
    requests: Sequence[Sent],
    skus: Sequence[str],
    *,
    settle_timeout_s: float = SETTLE_TIMEOUT_S,
) -> dict[str, Any]:
    """After the service has settled, three views of the holds must agree per (sku, location):

    * the answers: a 201 holds exactly its allocations, a 409 nothing, and a request
      without a definite answer (5xx, timeout) what ``GET /v1/reservations/{id}`` says;
    * the read model: ``GET /v1/stock/{sku}``;
    * the log itself: ``inventory.stock`` folded from offset 0 by a fresh
      ``Fold(StockBook())``, as every reader folds it.

    And a reservation answered 201 must still be ``held`` by its saga. Where the views
    differ, the log's records of the reservations involved are kept in the result.
    """
    try:
        settle_s = await settle(service.kafka, GROUPS, timeout_s=settle_timeout_s)
    except TimeoutError:
        backlog = f"the service was still folding its backlog after {settle_timeout_s:g} s"
        return {"ok": None, "not_checked": backlog}
    expected: dict[tuple[str, str], int] = defaultdict(int)
    unknown = [s for s in requests if s.outcome in UNKNOWN_OUTCOMES]
    held_answers = [s for s in requests if s.outcome == HELD]
    for sent in held_answers:
        for sku, location_id, quantity in sent.allocations:
            expected[sku, location_id] += quantity
    statuses: Counter[str] = Counter()
    answered_held_status: Counter[str] = Counter()
    not_held_after_201: list[str] = []
    unknown_held: list[str] = []
    gate = asyncio.Semaphore(CHECK_CONCURRENCY)

    async def saga_of(sent: Sent) -> dict[str, Any] | None:
        async with gate:
            response = await client.request("GET", f"/v1/reservations/{sent.reservation_id}")
        if response.status == 404:
            return None
        stored: dict[str, Any] = expect_status(response, 200, f"reading {sent.reservation_id}")
        return stored

    async def look_up_unknown(sent: Sent) -> None:
        stored = await saga_of(sent)
        if stored is None:
            # The request never reached the log: nothing may be held for it.
            statuses["never_requested"] += 1
            return
        statuses[stored["status"]] += 1
        if stored["status"] == "held":
            unknown_held.append(sent.reservation_id)
            for line in stored["lines"]:
                expected[line["sku"], line["location_id"]] += line["quantity"]

    async def look_up_held(sent: Sent) -> None:
        stored = await saga_of(sent)
        status = "never_requested" if stored is None else stored["status"]
        answered_held_status[status] += 1
        if status != "held":
            not_held_after_201.append(sent.reservation_id)

    async with asyncio.TaskGroup() as group:
        for sent in unknown:
            group.create_task(look_up_unknown(sent))
        for sent in held_answers:
            group.create_task(look_up_held(sent))
    found: dict[tuple[str, str], dict[str, int]] = {}

    async def read(sku: str) -> None:
        async with gate:
            stock = expect_status(await client.request("GET", f"/v1/stock/{sku}"), 200, sku)
        for row in stock["locations"]:
            found[sku, row["location_id"]] = row

    async with asyncio.TaskGroup() as group:
        for sku in skus:
            group.create_task(read(sku))
    folded = await fold_stock(service)
    wanted = set(skus)
    log_held = {key: held for key, held in folded.items() if key[0] in wanted}
    keys = sorted(set(expected) | set(found) | set(log_held))
    mismatches = [
        {
            "sku": sku,
            "location_id": loc,
            "expected_held": expected.get((sku, loc), 0),
            "read_model_held": found.get((sku, loc), {}).get("held", 0),
            "log_held": log_held.get((sku, loc), 0),
        }
        for sku, loc in keys
        if len(
            {
                expected.get((sku, loc), 0),
                found.get((sku, loc), {}).get("held", 0),
                log_held.get((sku, loc), 0),
            }
        )
        > 1
    ]
    oversold = [
        {"sku": sku, "location_id": loc, **row}
        for (sku, loc), row in sorted(found.items())
        if row["held"] + row["committed"] > row["on_hand"]
    ]
    partial = [
        s.reservation_id
        for s in held_answers
        if sum(q for _, _, q in s.allocations) != sum(line["quantity"] for line in s.lines)
    ]
    suspects = sorted(not_held_after_201)[:SUSPECTS_KEPT]
    return {
        "settle_s": settle_s,
        "skus_checked": len(skus),
        "units_held_expected": sum(expected.values()),
        "units_held_found": sum(row["held"] for row in found.values()),
        "units_held_in_log": sum(log_held.values()),
        "unknown_outcomes": len(unknown),
        "unknown_outcomes_by_stored_status": dict(statuses),
        "unknown_outcomes_held": len(unknown_held),
        "answered_201_by_stored_status": dict(answered_held_status),
        "answered_201_not_held": len(not_held_after_201),
        "mismatches": mismatches[:50],
        "mismatch_count": len(mismatches),
        "oversold": oversold[:50],
        "oversold_count": len(oversold),
        "partially_held_answers": partial[:50],
        "read_model_totals": {
            sku: {
                f: sum(row[f] for (s, _), row in found.items() if s == sku)
                for f in ("on_hand", "held", "committed", "available")
            }
            for sku in skus[:SUSPECTS_KEPT]
        },
        # What the log says happened to reservations answered 201 but not held.
        "histories": await histories(service, suspects) if suspects else {},
        "ok": not mismatches and not oversold and not partial and not not_held_after_201,
    }


#: Reservations whose log records a failed check keeps, for the reader to see why.
SUSPECTS_KEPT: Final = 5


async def fold_stock(service: RunningService) -> dict[tuple[str, str], int]:
    """Held units per (sku, location) by the log alone: ``inventory.stock`` from offset 0."""
    fold = Fold(StockBook())
    await replay(service.kafka, [INVENTORY_STOCK], fold, name="bench-check", progress=False)
    return {key: level.held for key, level in fold.projection.levels.items() if level.held}


async def histories(service: RunningService, reservation_ids: Sequence[str]) -> dict[str, Any]:
    """Every record about ``reservation_ids`` in the stock and reservation topics, in each
    partition's order: type, topic, partition, offset, and the decision it carries."""
    wanted = set(reservation_ids)
    found: dict[str, list[dict[str, Any]]] = {rid: [] for rid in reservation_ids}

    class Collect:
        def apply(self, envelope: Envelope[Event]) -> None:
            # Unused: _Everything below hands each record over with whether it counted.
            pass

        def note(self, envelope: Envelope[Event], counted: bool) -> None:
            rid = getattr(envelope.event, "reservation_id", None)
            if rid in wanted and envelope.position is not None:
                event = envelope.event
                found[rid].append(
                    {
                        "type": envelope.type.rsplit(".", 1)[-1],
                        "topic": envelope.position.topic.rsplit(".", 2)[-2],
                        "partition": envelope.position.partition,
                        "offset": envelope.position.offset,
                        "id": envelope.id,
                        # False for a duplicate (a retried send) or a fenced decision.
                        "counted": counted,
                        **{
                            k: v
                            for k, v in event.model_dump(mode="json").items()
                            if k in ("request", "outcome", "reason", "sku")
                        },
                    }
                )

        def canonical(self) -> Any:
            return None

    class _Everything(Fold[Collect]):
        def apply_record(
            self,
            value: bytes | None,
            headers: Sequence[tuple[str, bytes]],
            position: Position,
            timestamp_ms: int | None = None,
        ) -> bool:
            try:
                envelope = codec.decode(value, headers, position, timestamp_ms)
            except codec.PoisonMessage:
                return False
            counted = self.admit(envelope)
            self.projection.note(envelope, counted)
            return counted

    await replay(
        service.kafka,
        [INVENTORY_STOCK, INVENTORY_RESERVATIONS],
        _Everything(Collect()),
        name="bench-histories",
        progress=False,
    )
    return found


# --- the rate sweep --------------------------------------------------------------------------

#: A rate at which more requests went unanswered than this is past what the service does.
SATURATION_ERROR_RATE: Final = 0.5


def saturated(figures: Mapping[str, Any]) -> bool:
    return bool(figures["error_rate"] > SATURATION_ERROR_RATE or figures["settle_s"] is None)


async def stock_catalogue(
    client: AnyHttpClient, service: RunningService, catalogue: Catalogue, run: str
) -> None:
    await register_locations(client, catalogue.locations)
    for location_id, quantities in catalogue.stock().items():
        await receive_stock(client, location_id, quantities, receipt_prefix=run)
    # The stock is folded and in the read model before any load.
    await settle(service.kafka, GROUPS)


def plan(
    rng: random.Random, client: AnyHttpClient, catalogue: Catalogue, prefix: str, count: int
) -> list[Sent]:
    planned = []
    for i in range(count):
        reservation_id = f"{prefix}-{i}"
        lines = make_cart(rng, catalogue)
        request = client.prepare(
            "POST", "/v1/reservations", reservation_body(reservation_id, lines)
        )
        planned.append(Sent(reservation_id, lines, request))
    return planned


async def rate_sweep(
    broker: Broker,
    service: RunningService,
    *,
    rates: Sequence[int],
    duration_s: float,
    skus: int,
    max_connections: int,
    timeout_s: float,
    client_kind: str,
    seed: int,
    warmup: bool,
    stop_at_saturation: bool = True,
) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    rng = random.Random(seed)
    catalogue = make_catalogue(skus, run)
    processes = {
        "load generator (this process)": os.getpid(),
        SERVICE: service.pid,
        "broker": broker.pid,
        "PostgreSQL": service.postgres_pid,
    }
    async with http_client(
        client_kind, service.url, max_connections=max_connections, timeout_s=timeout_s
    ) as client:
        seeding = time.perf_counter()
        await stock_catalogue(client, service, catalogue, run)
        seeding_s = time.perf_counter() - seeding
        everything: list[Sent] = []
        if warmup:
            # At the first rate, or slower: a warm-up the service cannot keep up with
            # would leave a backlog for the first measured rate.
            warm_rate = min(WARMUP_RATE, rates[0])
            warm = plan(rng, client, catalogue, f"{run}-warm", max(1, int(warm_rate * WARMUP_S)))
            await open_loop(client, warm, warm_rate)
            everything += warm
            await settle(service.kafka, GROUPS)
        results: list[dict[str, Any]] = []
        skipped: list[int] = []
        for rate in rates:
            if results and stop_at_saturation and saturated(results[-1]):
                # A higher rate can only queue more, and its backlog would take minutes
                # to fold: the figures of the rate that saturated say what there is to say.
                skipped.append(rate)
                continue
            requests = plan(rng, client, catalogue, f"{run}-{rate}", max(1, int(rate * duration_s)))
            meter = CpuMeter(processes)
            meter.start()
            await open_loop(client, requests, rate)
            cpu = meter.read()
            everything += requests
            figures = summarise(requests, rate)
            figures["cpu"] = cpu
            figures["connections_open"] = client.open_connections
            results.append(figures)
            # The next rate starts from a service that has caught up with this one.
            try:
                figures["settle_s"] = await settle(service.kafka, GROUPS)
            except TimeoutError:
                figures["settle_s"] = None
        books = await check_books(
            client, service, everything, catalogue.skus, settle_timeout_s=BACKLOG_TIMEOUT_S
        )
    return {
        "mode": "rates",
        "seeding_s": seeding_s,
        "catalogue": {
            "skus": len(catalogue.skus),
            "scarce_skus": len(catalogue.scarce),
            "locations": [loc.location_id for loc in catalogue.locations],
            "warehouse_units": WAREHOUSE_UNITS,
            "store_units": STORE_UNITS,
            "scarce_units": SCARCE_UNITS,
        },
        "rates": results,
        "skipped_rates": skipped,
        "books": books,
    }


# --- the flash sale --------------------------------------------------------------------------


async def flash_sale(
    broker: Broker,
    service: RunningService,
    *,
    shoppers: int,
    units: int,
    client_kind: str,
) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    sku = f"FLASH-{run}"
    # Both ship online, so every shopper's line (no location named) may be held at either.
    warehouse = Location(f"WH-{run}", "warehouse", True)
    store = Location(f"ST-{run}", "store", True)
    split = {warehouse.location_id: units - units // 2, store.location_id: units // 2}
    processes = {
        "load generator (this process)": os.getpid(),
        SERVICE: service.pid,
        "broker": broker.pid,
        "PostgreSQL": service.postgres_pid,
    }
    async with http_client(
        client_kind, service.url, max_connections=shoppers, timeout_s=FLASH_TIMEOUT_S
    ) as client:
        await register_locations(client, [warehouse, store])
        tokens = []
        for location_id, quantity in split.items():
            tokens += await receive_stock(client, location_id, {sku: quantity}, receipt_prefix=run)
        before = expect_status(
            await client.request(
                "GET", f"/v1/stock/{sku}?consistent_with={merge_positions(tokens)}"
            ),
            200,
            "the flash-sale stock",
        )
        # Every shopper already has a connection open, as browsers on the product page do:
        # the sale measures requests, not TCP handshakes.
        connecting = time.perf_counter()
        await client.connect(shoppers)
        connect_s = time.perf_counter() - connecting
        requests = [
            Sent(
                f"{run}-shopper-{n}",
                [{"sku": sku, "quantity": 1}],
                client.prepare(
                    "POST",
                    "/v1/reservations",
                    reservation_body(f"{run}-shopper-{n}", [{"sku": sku, "quantity": 1}]),
                ),
            )
            for n in range(shoppers)
        ]
        meter = CpuMeter(processes)
        meter.start()
        loop = asyncio.get_running_loop()
        start = loop.time()
        for sent in requests:
            sent.scheduled = start
        await asyncio.gather(*(send(client, sent) for sent in requests))
        cpu = meter.read()
        figures = summarise(requests, None)
        held = sorted(s.finished - start for s in requests if s.outcome == HELD)
        books = await check_books(
            client, service, requests, [sku], settle_timeout_s=BACKLOG_TIMEOUT_S
        )
    after = books.get("read_model_totals", {}).get(sku)
    sold_answers = len(held)
    sold_books = None if after is None else after["held"]
    return {
        "mode": "flash_sale",
        "sku": sku,
        "units": units,
        "units_by_location": split,
        "shoppers": shoppers,
        "stock_before": before["totals"],
        "stock_after": after,
        "connect_s": connect_s,
        "sold_by_answers": sold_answers,
        "sold_by_stock_query": sold_books,
        # The books: the read model and the log hold exactly the units, no more, no less.
        "sold_exactly": sold_books == units and books.get("units_held_in_log") == units,
        # Every unit sold was confirmed to its buyer with a 201 (others got no answer).
        "confirmed_exactly": sold_answers == units,
        # Until the last unit was sold (the units-th 201), from the moment all asked.
        "sell_out_s": held[units - 1] if len(held) >= units else None,
        "last_answer_s": max(s.finished for s in requests) - start,
        "cpu": cpu,
        **figures,
        "books": books,
    }


# --- printing ----------------------------------------------------------------------------------


def _outcomes(figures: Mapping[str, Any]) -> str:
    counts = figures["outcomes"]
    return " · ".join(f"{name} {counts[name]}" for name in OUTCOMES if counts[name])


def rate_rows(figures: Mapping[str, Any]) -> list[Row]:
    n = str(figures["requests"])
    cpu = figures["cpu"]
    generator = next(iter(cpu["cores"].values()), 0.0)
    return [
        Row("latency from schedule (every answer)", latency_text(figures["latency_ms"]), n),
        Row(
            "latency of 201s",
            latency_text(figures["held_latency_ms"]),
            str(figures["outcomes"][HELD]),
        ),
        Row(
            "achieved",
            f"{figures['answers_per_s']:,.0f} answers/s · "
            f"{figures['reservations_per_s']:,.0f} reservations/s",
        ),
        Row(
            "rejected (409) · errors (5xx, timeouts)",
            f"{figures['reject_rate']:.1%} · {figures['error_rate']:.1%}",
        ),
        Row("outcomes", _outcomes(figures)),
        Row("generator send lag", latency_text(figures["send_lag_ms"]), n),
        Row(
            "CPU: generator · service · broker · PostgreSQL · others",
            " · ".join(f"{c:.2f}" for c in cpu["cores"].values())
            + f" · {cpu['others_cores']:.2f} cores (generator {generator / cpu['cpus']:.0%})",
        ),
        cpu_per_answer(cpu, SERVICE, figures["answers_per_s"]),
    ]


def targets(result: Mapping[str, Any]) -> list[Row]:
    rows = []
    by_rate = {r["offered_per_s"]: r for r in result["rates"]}
    at = by_rate.get(TARGET_P99_RATE)
    if at is not None and at["latency_ms"]:
        p99 = at["latency_ms"]["p99"]
        rows.append(
            target_row(
                f"p99 ≤ {TARGET_P99_MS:g} ms at {TARGET_P99_RATE} req/s",
                p99 <= TARGET_P99_MS and at["error_rate"] == 0,
                f"p99 {p99:.1f} ms, errors {at['error_rate']:.1%}",
            )
        )
    else:
        rows.append(target_row(f"p99 at {TARGET_P99_RATE} req/s", None, "rate not run"))
    best = max(r["reservations_per_s"] for r in result["rates"])
    rows.append(
        target_row(
            f"≥ {TARGET_RESERVATIONS_PER_S:,.0f} reservations/s sustained",
            best >= TARGET_RESERVATIONS_PER_S,
            f"best {best:,.0f}/s",
        )
    )
    return rows


def books_rows(books: Mapping[str, Any]) -> list[Row]:
    if books["ok"] is None:
        return [Row("not checked", books["not_checked"])]
    return [
        Row(
            "held: answers == read model == log, per SKU and location",
            "yes"
            if books["mismatch_count"] == 0
            else f"NO: {books['mismatch_count']} differ (see JSON)",
            str(books["skus_checked"]),
        ),
        Row(
            "units held: answers · read model · log",
            f"{books['units_held_expected']:,} · {books['units_held_found']:,} · "
            f"{books['units_held_in_log']:,}",
        ),
        Row(
            "answered 201 but not held by the saga",
            "none"
            if not books["answered_201_not_held"]
            else f"{books['answered_201_not_held']} (histories in the JSON)",
        ),
        Row("held + committed ≤ on hand", "yes" if not books["oversold_count"] else "NO"),
        Row(
            "no answer (5xx/timeout) · of those held",
            f"{books['unknown_outcomes']} · {books['unknown_outcomes_held']}",
        ),
        Row("settled after the load in", f"{books['settle_s']:.1f} s"),
    ]


def flash_rows(sale: Mapping[str, Any]) -> list[Row]:
    n = str(sale["shoppers"])
    sold = sale["sell_out_s"]
    return [
        Row(
            "sold: by stock query · by the log",
            f"{sale['sold_by_stock_query']} · {sale['books'].get('units_held_in_log', '-')} "
            f"(of {sale['units']}: {'exactly' if sale['sold_exactly'] else 'NOT exactly'})",
        ),
        Row(
            "confirmed to buyers (201)",
            f"{sale['sold_by_answers']} "
            f"({'every unit' if sale['confirmed_exactly'] else 'NOT every unit'})",
        ),
        Row("time to sell out", "-" if sold is None else f"{sold * 1000:,.0f} ms"),
        Row("last answer after", f"{sale['last_answer_s'] * 1000:,.0f} ms"),
        Row("latency (every answer)", latency_text(sale["latency_ms"]), n),
        Row("latency of 201s", latency_text(sale["held_latency_ms"]), str(sale["sold_by_answers"])),
        Row("outcomes", _outcomes(sale)),
        Row(
            "stock after: on hand · held · available",
            "-" if sale["stock_after"] is None else _totals(sale["stock_after"]),
        ),
    ]


def _totals(totals: Mapping[str, int]) -> str:
    return f"{totals['on_hand']} · {totals['held']} · {totals['available']}"


# --- the command -----------------------------------------------------------------------------

app = typer.Typer(add_completion=False)


def parse_rates(text: str) -> list[int]:
    try:
        rates = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a list of integers") from None
    if not rates or any(r <= 0 for r in rates):
        raise typer.BadParameter("rates must be positive")
    return rates


@app.command()
def main(
    *,
    rates: Annotated[
        str, typer.Option(help="Offered request rates (req/s), comma-separated, in order.")
    ] = "100,250,500,1000",
    duration: Annotated[float, typer.Option(min=0.5, help="Seconds of load per rate.")] = 20.0,
    skus: Annotated[int, typer.Option(min=10, help="SKUs in the catalogue.")] = 1000,
    max_connections: Annotated[
        int, typer.Option(min=1, help="Connections the generator may open (rates mode).")
    ] = 512,
    timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds before a request counts as timed out.")
    ] = 10.0,
    flash: Annotated[
        bool, typer.Option("--flash-sale", help="Run the flash sale instead of the rates.")
    ] = False,
    shoppers: Annotated[int, typer.Option(min=1, help="Flash-sale shoppers.")] = 5000,
    units: Annotated[int, typer.Option(min=1, help="Flash-sale units.")] = 100,
    client: Annotated[
        str, typer.Option(help=f"HTTP client of the generator: {' or '.join(CLIENTS)}.")
    ] = "lean",
    stop_at_saturation: Annotated[
        bool,
        typer.Option(help="Skip the higher rates once one leaves most requests unanswered."),
    ] = True,
    seed: Annotated[int, typer.Option(help="Seed of the carts.")] = 1,
    messages: Annotated[int, typer.Option(min=1, help="Broker baseline messages.")] = 1000,
    payload_bytes: PayloadBytesOption = 700,
    quick: Annotated[
        bool, typer.Option("--quick", help="A few seconds of everything (smoke tests).")
    ] = False,
    json_out: JsonOutOption = None,
) -> None:
    """Reserve through the inventory service at fixed rates, or run a flash sale."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if client not in CLIENTS:
        raise typer.BadParameter(f"--client must be one of {', '.join(CLIENTS)}")
    rate_list = parse_rates(rates)
    if quick:
        rate_list = list(QUICK.rates)
        duration = QUICK.duration_s
        skus = QUICK.skus
        shoppers = min(shoppers, QUICK.shoppers)
        units = min(units, QUICK.units)
        messages = QUICK.messages
    console = make_console()
    with resolve_broker() as broker:
        console.print(f"broker: {broker.kind} at {broker.kafka.bootstrap_servers}")
        # Before the service starts: the broker's own figures, with nothing else using it.
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
            if flash:
                result = asyncio.run(
                    flash_sale(broker, service, shoppers=shoppers, units=units, client_kind=client)
                )
            else:
                result = asyncio.run(
                    rate_sweep(
                        broker,
                        service,
                        rates=rate_list,
                        duration_s=duration,
                        skus=skus,
                        max_connections=max_connections,
                        timeout_s=timeout,
                        client_kind=client,
                        seed=seed,
                        warmup=not quick,
                        stop_at_saturation=stop_at_saturation,
                    )
                )
    figures = {
        "benchmark": NAME,
        "parameters": {
            "rates": rate_list,
            "duration_s": duration,
            "skus": skus,
            "max_connections": max_connections,
            "timeout_s": timeout,
            "shoppers": shoppers,
            "units": units,
            "client": client,
            "seed": seed,
            "stop_at_saturation": stop_at_saturation,
            "quick": quick,
            "ttl_seconds": TTL_SECONDS,
        },
        "machine": machine_facts(),
        "broker_baseline": baseline,
        **result,
    }
    sections: dict[str, list[Row]] = {}
    if flash:
        sections[f"flash sale: {units} units, {shoppers} shoppers"] = flash_rows(result)
        sections["CPU during the sale"] = cpu_rows(result["cpu"])
    else:
        for rate_figures in result["rates"]:
            sections[f"{rate_figures['offered_per_s']} req/s offered"] = rate_rows(rate_figures)
        if result["skipped_rates"]:
            sections["not run"] = [
                Row(
                    ", ".join(f"{r} req/s" for r in result["skipped_rates"]),
                    f"a lower rate saturated the service (over {SATURATION_ERROR_RATE:.0%} "
                    "unanswered); --no-stop-at-saturation runs them anyway",
                )
            ]
        sections["targets"] = targets(result)
    sections["books after the load"] = books_rows(result["books"])
    sections["broker baseline (same run, before the service started)"] = baseline_rows(baseline)
    print_table(
        "reservations through the inventory service",
        sections,
        caption=machine_caption(baseline),
        console=console,
    )
    path = write_result(NAME + ("_flash_sale" if flash else ""), figures, json_out)
    console.print(f"wrote {path}")
    if result["books"]["ok"] is False or (flash and not result["sold_exactly"]):
        console.print("[bold red]the books do not add up: see the JSON[/]")
        raise typer.Exit(1)
    if flash and not result["confirmed_exactly"]:
        console.print(
            f"[yellow]{result['units'] - result['sold_by_answers']} of the units sold were "
            "not confirmed to their buyers in time (5xx or timeout)[/]"
        )


if __name__ == "__main__":
    app()
