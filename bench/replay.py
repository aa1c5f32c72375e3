"""Rebuilding inventory state from the log: how fast one process folds stock events.

    uv run python bench/replay.py [--events 1000000] [--skus 20000] [--stores 50]
        [--profile/--no-profile] [--quick] [--json-out PATH]

Writes ``--events`` stock events (a simulated day of a retailer: receipts, holds and
what becomes of them, POS sales, adjustments; every SKU's events in its own partition,
as the service writes them) to ``inventory.stock`` under a topic prefix of the run's own,
as fast as aiokafka takes pre-encoded record batches, then rebuilds the stock book with
:func:`omnistock.events.replay.replay` into one ``Fold(StockBook())`` over all
partitions, in a fresh process so that its peak RSS and CPU are the rebuild's alone.
Target (ARCHITECTURE.md): ≥ 100,000 events/s per service instance.

With ``--profile`` (and py-spy on PATH, or ``PY_SPY``) the rebuild is sampled and the
table says where its time went: reading from the broker (aiokafka), decoding records
(CloudEvents headers, pydantic), folding (Fold and StockBook).
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import multiprocessing.connection
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import logging

import orjson
import typer
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2 as _murmur2

from bench._common import (
    EMBEDDED_TANSU,
    Broker,
    JsonOutOption,
    PayloadBytesOption,
    Row,
    baseline_rows,
    broker_baseline,
    delete_topics,
    machine_caption,
    machine_facts,
    make_console,
    print_table,
    resolve_broker,
    target_row,
    write_result,
)
from omnistock.events import codec
from omnistock.events.admin import ensure_topics
from omnistock.events.fold import Fold
from omnistock.events.replay import replay
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import INVENTORY_STOCK
from omnistock.inventory.domain.stock import StockBook

NAME: Final = "replay"
#: Kafka's default partitioner hash (untyped in aiokafka).
murmur2: Callable[[bytes], int] = _murmur2
log = logging.getLogger(__name__)

TARGET_EVENTS_PER_S: Final = 100_000.0
#: What aiokafka packs per partition and produce request: large, as a bulk load wants.
BATCH_BYTES: Final = 512 * 1024
#: How long the rebuild may take before the run is declared hung.
REBUILD_TIMEOUT_S: Final = 900.0
#: py-spy samples per second: enough for shares of a few percent, cheap to take.
PROFILE_RATE_HZ: Final = 100
SOURCE: Final = "/omnistock/inventory/bench-replay"
TTL: Final = timedelta(minutes=15)
#: Simulated time per event: a million events span most of a trading day's busy hours.
TICK: Final = timedelta(milliseconds=20)

#: The mix of a day (shares of all events after the opening receipts). Holds outnumber
#: their ends by the holds still open at the end; POS sales are the stores' own traffic.
MIX: Final = {
    "hold": 0.34,
    "release": 0.10,
    "commit": 0.17,
    "ship": 0.14,
    "pos_sale": 0.15,
    "receipt": 0.07,
    "adjustment": 0.02,
    "expiry": 0.01,
}


# --- the simulated day ------------------------------------------------------------------------


@dataclass(slots=True)
class _OpenHold:
    reservation_id: str
    sku: str
    quantity: int
    expires_at: datetime


@dataclass(slots=True)
class _State:
    rng: random.Random
    skus: list[str]
    warehouses: list[str]
    stores: list[str]
    online_json: bytes
    clock: datetime
    open_holds: list[_OpenHold] = field(default_factory=list)
    committed: list[_OpenHold] = field(default_factory=list)


Record = tuple[bytes, bytes, list[tuple[str, bytes]]]
#: Share of held lines for a named store (click and collect); stores stock few SKUs, so
#: most of these are rejected, as a checkout for an item the store lacks would be.
STORE_LINE_SHARE: Final = 0.05
#: Holds end mostly young: a checkout pays or gives up within minutes. The hold that
#: ends is this many holds back from the newest, on average (about 20 s of the day).
MEAN_HOLD_AGE: Final = 300


@dataclass(slots=True)
class Day:
    """A retailer's stock events, generated straight into wire records.

    Bodies are built as JSON without pydantic (a million models would take longer to
    build than to fold); ``tests/bench`` decodes generated records with the real codec
    to keep them honest.
    """

    skus: int
    stores: int
    seed: int
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    counts: Counter[str] = field(default_factory=Counter)

    def records(self, total: int) -> Iterator[Record]:
        """``total`` records (key, value, headers): opening stock first, then the day."""
        rng = random.Random(self.seed)
        skus = [f"SKU-{n:06d}" for n in range(self.skus)]
        warehouses = [f"WH-{n}" for n in range(1, 4)]
        stores = [f"ST-{n:03d}" for n in range(1, self.stores + 1)]
        state = _State(
            rng=rng,
            skus=skus,
            warehouses=warehouses,
            stores=stores,
            online_json=orjson.dumps(warehouses + stores[: max(1, len(stores) * 2 // 5)]),
            clock=datetime(2026, 11, 20, 8, 0, tzinfo=UTC),
        )
        n = 0
        # Opening stock: every SKU at every warehouse, up to a fifth of the events.
        for sku in skus:
            for warehouse in warehouses:
                if n >= total // 5:
                    break
                yield self._receipt(sku, warehouse, rng.randint(50, 500), n, state.clock)
                n += 1
        # Drawn all at once: one call instead of a million.
        kinds = rng.choices(list(MIX), list(MIX.values()), k=max(0, total - n))
        for kind in kinds:
            state.clock += TICK
            yield self._step(state, kind, n)
            n += 1

    def _step(self, s: _State, kind: str, n: int) -> Record:  # noqa: PLR0911 - one per kind
        rng = s.rng
        if (kind in ("release", "commit", "expiry") and not s.open_holds) or (
            kind == "ship" and not s.committed
        ):
            kind = "hold"
        if kind == "hold":
            hold = _OpenHold(
                f"r{self.run}-{n}", rng.choice(s.skus), rng.choice((1, 1, 1, 2, 3)), s.clock + TTL
            )
            s.open_holds.append(hold)
            store = rng.choice(s.stores) if rng.random() < STORE_LINE_SHARE else None
            return self._hold(hold, s.online_json, store, n, s.clock)
        if kind == "release":
            return self._release(_pop_recent(rng, s.open_holds), n, s.clock)
        if kind == "commit":
            hold = _pop_recent(rng, s.open_holds)
            s.committed.append(hold)
            return self._commit(hold, n, s.clock)
        if kind == "expiry":
            # An abandoned checkout: one of the oldest holds, expired by the owner's clock
            # once due.
            hold = _pop(s.open_holds, rng.randrange(min(len(s.open_holds), 100)))
            return self._expiry(hold, n, max(s.clock, hold.expires_at))
        if kind == "ship":
            committed = _pop_recent(rng, s.committed)
            return self._ship(committed, rng.choice(s.warehouses), n, s.clock)
        if kind == "pos_sale":
            return self._pos(rng.choice(s.skus), rng.choice(s.stores), n, s.clock)
        location = rng.choice(s.warehouses + s.stores)
        if kind == "receipt":
            return self._receipt(rng.choice(s.skus), location, rng.randint(10, 200), n, s.clock)
        return self._adjustment(rng.choice(s.skus), location, n, s.clock)

    # -- one record each --------------------------------------------------------------------

    def _record(
        self,
        event_type: str,
        sku: str,
        body: dict[str, Any] | bytes,
        *,
        n: int,
        at: datetime,
        correlation: str | None = None,
    ) -> Record:
        self.counts[event_type] += 1
        key = sku.encode()
        headers = [
            _SPECVERSION,
            (codec.H_ID, f"{self.run}-{n}".encode()),
            _SOURCE,
            (codec.H_TYPE, _TYPES[event_type]),
            (codec.H_TIME, _iso(at).encode()),
            _SCHEMAVERSION,
            _CONTENT_TYPE,
            (codec.H_SUBJECT, key),
        ]
        if correlation is not None:
            headers.append((codec.H_CORRELATION, correlation.encode()))
        value = body if isinstance(body, bytes) else orjson.dumps(body)
        return key, value, headers

    def _receipt(self, sku: str, location: str, quantity: int, n: int, at: datetime) -> Record:
        body = {
            "sku": sku,
            "location_id": location,
            "receipt_id": f"rc{self.run}-{n}",
            "quantity": quantity,
            "replenishment_id": None,
        }
        return self._record("StockReceived", sku, body, n=n, at=at)

    def _hold(
        self, hold: _OpenHold, online_json: bytes, store: str | None, n: int, at: datetime
    ) -> Record:
        # online_locations is spliced in pre-encoded: the same list in every request.
        line = orjson.dumps({"quantity": hold.quantity, "location_id": store})
        body = (
            b'{"reservation_id":"'
            + hold.reservation_id.encode()
            + b'","sku":"'
            + hold.sku.encode()
            + b'","lines":['
            + line
            + b'],"online_locations":'
            + online_json
            + b',"expires_at":"'
            + _iso(hold.expires_at).encode()
            + b'","requested_at":"'
            + _iso(at).encode()
            + b'","request_fingerprint":"'
            + f"{n:032x}".encode()
            + b'"}'
        )
        return self._record(
            "HoldRequested", hold.sku, body, n=n, at=at, correlation=hold.reservation_id
        )

    def _release(self, hold: _OpenHold, n: int, at: datetime) -> Record:
        body = {"reservation_id": hold.reservation_id, "sku": hold.sku, "reason": "released"}
        return self._record(
            "HoldReleaseRequested", hold.sku, body, n=n, at=at, correlation=hold.reservation_id
        )

    def _commit(self, hold: _OpenHold, n: int, at: datetime) -> Record:
        body = {
            "reservation_id": hold.reservation_id,
            "sku": hold.sku,
            "order_id": f"o-{hold.reservation_id}",
            "quantity": hold.quantity,
            "requested_at": _iso(at),
        }
        return self._record(
            "HoldCommitRequested", hold.sku, body, n=n, at=at, correlation=hold.reservation_id
        )

    def _expiry(self, hold: _OpenHold, n: int, at: datetime) -> Record:
        body = {"reservation_id": hold.reservation_id, "sku": hold.sku}
        return self._record(
            "HoldExpired", hold.sku, body, n=n, at=at, correlation=hold.reservation_id
        )

    def _ship(self, hold: _OpenHold, location: str, n: int, at: datetime) -> Record:
        body = {
            "reservation_id": hold.reservation_id,
            "sku": hold.sku,
            "order_id": f"o-{hold.reservation_id}",
            "shipment_id": f"sh{self.run}-{n}",
            "location_id": location,
            "quantity": hold.quantity,
        }
        return self._record(
            "StockShipped", hold.sku, body, n=n, at=at, correlation=hold.reservation_id
        )

    def _pos(self, sku: str, store: str, n: int, at: datetime) -> Record:
        body = {
            "sku": sku,
            "location_id": store,
            "transaction_id": f"tx{self.run}-{n}",
            "line_number": 0,
            "kind": "sale",
            "quantity_change": -1,
        }
        return self._record("PosLineApplied", sku, body, n=n, at=at)

    def _adjustment(self, sku: str, location: str, n: int, at: datetime) -> Record:
        body = {
            "sku": sku,
            "location_id": location,
            "adjustment_id": f"adj{self.run}-{n}",
            "delta": -1,
            "counted_quantity": None,
            "unsellable_delta": 0,
            "reason": "damage",
        }
        return self._record("StockAdjusted", sku, body, n=n, at=at)


def _pop_recent(rng: random.Random, items: list[_OpenHold]) -> _OpenHold:
    back = min(int(rng.expovariate(1 / MEAN_HOLD_AGE)), len(items) - 1)
    return _pop(items, len(items) - 1 - back)


def _pop(items: list[_OpenHold], i: int) -> _OpenHold:
    # Order is kept (oldest first): the expiries take the oldest.
    return items.pop(i)


@functools.lru_cache(maxsize=64)
def _iso(moment: datetime) -> str:
    # Cached: an event stamps the same instant in its header and body.
    return moment.isoformat().replace("+00:00", "Z")


_SPECVERSION: Final = (codec.H_SPECVERSION, codec.SPEC_VERSION.encode())
_SOURCE: Final = (codec.H_SOURCE, SOURCE.encode())
_SCHEMAVERSION: Final = (codec.H_SCHEMAVERSION, b"1")
_CONTENT_TYPE: Final = (codec.H_CONTENT_TYPE, codec.CONTENT_TYPE.encode())
_TYPES: Final = {
    name: f"io.omnistock.inventory.{name}".encode()
    for name in (
        "StockReceived",
        "HoldRequested",
        "HoldReleaseRequested",
        "HoldCommitRequested",
        "HoldExpired",
        "StockShipped",
        "PosLineApplied",
        "StockAdjusted",
    )
}


# --- writing -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Written:
    records: int
    bytes: int
    encode_s: float
    write_s: float


async def write_log(kafka: KafkaSettings, day: Day, total: int) -> Written:
    """Encode every record into aiokafka batches first, then send them all: the write rate
    is the broker's and client's, not the generator's."""
    producer = AIOKafkaProducer(
        **kafka.client_options(),
        acks="all",
        enable_idempotence=False,
        max_batch_size=BATCH_BYTES,
        max_request_size=BATCH_BYTES * 2,
    )
    await producer.start()
    try:
        topic = INVENTORY_STOCK.physical(kafka.topic_prefix)
        partitions = sorted(await producer.partitions_for(topic))
        by_sku: dict[bytes, int] = {}
        batches: dict[int, list[Any]] = {p: [] for p in partitions}
        open_batch: dict[int, Any] = {}
        size = 0
        count = 0
        started = time.perf_counter()
        for key, value, headers in day.records(total):
            partition = by_sku.get(key)
            if partition is None:
                # The default partitioner's choice, as the service's producer makes it.
                partition = by_sku[key] = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
            batch = open_batch.get(partition)
            if batch is None:
                batch = open_batch[partition] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                batch.close()
                batches[partition].append(batch)
                batch = open_batch[partition] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None, headers=headers)
            size += len(key) + len(value) + sum(len(k) + len(v) for k, v in headers)
            count += 1
        for partition, batch in open_batch.items():
            batch.close()
            batches[partition].append(batch)
        encoded = time.perf_counter()

        async def send(partition: int) -> list[asyncio.Future[Any]]:
            # send_batch returns once the batch is queued; one per partition waits in line.
            return [
                await producer.send_batch(b, topic, partition=partition) for b in batches[partition]
            ]

        futures = await asyncio.gather(*(send(p) for p in partitions))
        await asyncio.gather(*(f for fs in futures for f in fs))
        written = time.perf_counter()
    finally:
        await producer.stop()
    return Written(count, size, encoded - started, written - encoded)


# --- rebuilding, in a process of its own ------------------------------------------------------


def rebuild(kafka: KafkaSettings, results: multiprocessing.connection.Connection) -> None:
    """The child process: replay into one fold, send back what it measured."""
    logging.basicConfig(level=logging.WARNING)
    idle_rss_kb = peak_rss_kb()
    fold = Fold(StockBook())
    cpu = time.process_time()
    report = asyncio.run(replay(kafka, [INVENTORY_STOCK], fold, name="bench", progress=False))
    cpu = time.process_time() - cpu
    book = fold.projection
    results.send(
        {
            "events": report.events,
            "seconds": report.seconds,
            "events_per_s": report.events_per_second,
            "cpu_s": cpu,
            "state_hash": report.state_hash,
            "rss_before_kb": idle_rss_kb,
            "peak_rss_kb": peak_rss_kb(),
            "stats": {
                "applied": fold.stats.applied,
                "claims": fold.stats.claims,
                "fenced": fold.stats.fenced,
                "duplicates": fold.stats.duplicates,
                "poison": fold.stats.poison,
            },
            "state": {
                "levels": len(book.levels),
                "holds": len(book.holds),
                "holds_by_status": dict(Counter(h.status for h in book.holds.values())),
                "documents": len(book.documents),
            },
        }
    )
    results.close()


def peak_rss_kb() -> int:
    """This process's peak resident set size, in KiB.

    VmHWM, not ``getrusage``: Linux keeps ru_maxrss across fork and exec, so a process
    spawned by the writer (hundreds of MiB of encoded batches) would report the writer's.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_rebuild(
    kafka: KafkaSettings, py_spy: str | None, profile_path: Path | None
) -> dict[str, Any]:
    # spawn: a fresh interpreter, nothing inherited from the writer's memory.
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=rebuild, args=(kafka, send), name="replay-rebuild")
    child.start()
    send.close()
    spy = None
    if py_spy is not None and profile_path is not None:
        spy = subprocess.Popen(
            [
                *(py_spy, "record", "--pid", str(child.pid), "--rate", str(PROFILE_RATE_HZ)),
                *("--format", "raw", "--output", str(profile_path), "--nonblocking"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    try:
        if not receive.poll(REBUILD_TIMEOUT_S):
            raise RuntimeError(f"the rebuild did not finish within {REBUILD_TIMEOUT_S:g}s")
        result: dict[str, Any] = receive.recv()
    except EOFError:
        raise RuntimeError(f"the rebuild process died (exit code {child.exitcode})") from None
    finally:
        child.join(30)
        if child.is_alive():
            child.kill()
            child.join()
        if spy is not None:
            # py-spy stops by itself when the process it samples exits.
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()
    return result


# --- where the time went ----------------------------------------------------------------------

#: (label, test on one frame "function (file:line)"); a sample counts for the first label
#: any of its frames matches, innermost frame first.
CATEGORIES: Final[tuple[tuple[str, Callable[[str], bool]], ...]] = (
    ("pydantic model_validate_json", lambda f: "model_validate_json" in f),
    ("fold: StockBook", lambda f: "domain/stock.py" in f),
    (
        "fold: Fold.admit/apply (ids, epochs)",
        lambda f: "events/fold.py" in f and "apply_record" not in f,
    ),
    ("decode: headers, time, envelope", lambda f: "events/codec.py" in f),
    ("aiokafka: fetch, records, CRC", lambda f: "aiokafka/" in f),
    ("replay loop", lambda f: "events/replay.py" in f),
)


def summarise_profile(path: Path) -> dict[str, Any]:
    """Shares of the rebuild's samples per category, and its busiest functions.

    Only samples taken inside ``replay()``'s fold loop count: the process's imports and
    the state hash computed after the clock stops are not part of the events/s figure.
    """
    shares: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = outside = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        names = [frame.split(" (", 1)[0] for frame in frames]
        if not any(
            name == "replay" and "events/replay.py" in frame
            for name, frame in zip(names, frames, strict=True)
        ) or any(name.endswith("state_hash") for name in names):
            outside += count
            continue
        total += count
        own[frames[-1]] += count
        label = "other (event loop, GC, interpreter)"
        for frame in reversed(frames):
            match = next((name for name, test in CATEGORIES if test(frame)), None)
            if match is not None:
                label = match
                break
        shares[label] += count
    return {
        "samples": total,
        "samples_outside_the_rebuild": outside,
        "rate_hz": PROFILE_RATE_HZ,
        "shares": {label: n / total for label, n in shares.most_common()} if total else {},
        "top_functions": [[frame, n / total] for frame, n in own.most_common(20)] if total else [],
    }


def find_py_spy() -> str | None:
    return os.environ.get("PY_SPY") or shutil.which("py-spy")


# --- the command ---------------------------------------------------------------------------------

app = typer.Typer(add_completion=False)


@app.command()
def main(
    *,
    events: Annotated[
        int, typer.Option(min=100, help="Stock events to write and replay.")
    ] = 1_000_000,
    skus: Annotated[int, typer.Option(min=10, help="SKUs the events are about.")] = 20_000,
    stores: Annotated[int, typer.Option(min=1, help="Stores (besides three warehouses).")] = 50,
    seed: Annotated[int, typer.Option(help="Seed of the simulated day.")] = 1,
    profile: Annotated[
        bool, typer.Option(help="Sample the rebuild with py-spy (PY_SPY or on PATH).")
    ] = True,
    profile_out: Annotated[
        Path | None,
        typer.Option(dir_okay=False, help="Keep py-spy's raw samples (collapsed stacks) here."),
    ] = None,
    messages: Annotated[int, typer.Option(min=1, help="Broker baseline messages.")] = 2000,
    # A generated record averages about 450 bytes, headers included.
    payload_bytes: PayloadBytesOption = 450,
    quick: Annotated[
        bool, typer.Option("--quick", help="A few thousand events (smoke tests).")
    ] = False,
    json_out: JsonOutOption = None,
) -> None:
    """Write a day of stock events to the log, then rebuild the stock book from it."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if quick:
        events, skus, stores, messages = 5_000, 200, 5, 20
    console = make_console()
    py_spy = find_py_spy() if profile else None
    with resolve_broker() as broker, tempfile.TemporaryDirectory(prefix="omnistock-replay-") as tmp:
        console.print(f"broker: {broker.kind} at {broker.kafka.bootstrap_servers}")
        day = Day(skus=skus, stores=stores, seed=seed)
        figures = asyncio.run(measure(broker, day, events, messages, payload_bytes))
        profile_path = (profile_out or Path(tmp) / "rebuild.txt") if py_spy else None
        kafka = broker.kafka.model_copy(update={"topic_prefix": figures["topic_prefix"]})
        try:
            figures["rebuild"] = run_rebuild(kafka, py_spy, profile_path)
        finally:
            # An embedded broker's topics go with it; an external one keeps what it is given.
            if broker.kind != EMBEDDED_TANSU:
                asyncio.run(delete_topics(kafka, [INVENTORY_STOCK.physical(kafka.topic_prefix)]))
        figures["profile"] = (
            summarise_profile(profile_path)
            if profile_path is not None and profile_path.exists()
            else None
        )
    rebuilt = figures["rebuild"]
    stats = rebuilt["stats"]
    figures["checks"] = {
        "replayed_all_written": rebuilt["events"] == figures["write"]["records"],
        "every_event_accounted": sum(stats.values()) == rebuilt["events"],
        "no_poison": stats["poison"] == 0,
    }
    figures.update(
        benchmark=NAME,
        parameters={
            "events": events,
            "skus": skus,
            "stores": stores,
            "seed": seed,
            "quick": quick,
            "payload_bytes": payload_bytes,
        },
        machine=machine_facts(),
    )
    print_table(
        "rebuilding the stock book from the log",
        sections(figures),
        caption=machine_caption(figures["broker_baseline"]),
        console=console,
    )
    path = write_result(NAME, figures, json_out)
    console.print(f"wrote {path}")
    if not all(figures["checks"].values()):
        console.print("[bold red]the replay does not add up: see the JSON[/]")
        raise typer.Exit(1)


async def measure(
    broker: Broker, day: Day, events: int, messages: int, payload_bytes: int
) -> dict[str, Any]:
    # Round trips matter little to a rebuild: a short budget keeps the run short.
    baseline = await broker_baseline(
        broker.kafka,
        messages=messages,
        payload_bytes=payload_bytes,
        round_trip_budget_s=5.0,
        broker=broker.kind,
    )
    prefix = f"{broker.kafka.topic_prefix}bench-replay-{day.run}."
    kafka = broker.kafka.model_copy(update={"topic_prefix": prefix})
    await ensure_topics(kafka, [INVENTORY_STOCK])
    written = await write_log(kafka, day, events)
    return {
        "topic_prefix": prefix,
        "broker_baseline": baseline,
        "mix": dict(day.counts.most_common()),
        "write": {
            "records": written.records,
            "bytes": written.bytes,
            "encode_s": written.encode_s,
            "write_s": written.write_s,
            "records_per_s": written.records / written.write_s,
            "mb_per_s": written.bytes / written.write_s / 1e6,
            "partitions": INVENTORY_STOCK.partitions,
        },
    }


def sections(figures: Mapping[str, Any]) -> dict[str, list[Row]]:
    write = figures["write"]
    rebuilt = figures["rebuild"]
    result: dict[str, list[Row]] = {
        "write (aiokafka, pre-encoded batches, acks=all)": [
            Row(
                "write rate",
                f"{write['records_per_s']:,.0f} records/s · {write['mb_per_s']:.1f} MB/s",
                f"{write['records']:,}",
            ),
            Row("encoding (not in the rate)", f"{write['encode_s']:.1f} s"),
            Row("mix", ", ".join(f"{k} {v:,}" for k, v in figures["mix"].items())),
        ],
        "rebuild (replay into Fold(StockBook()), own process)": [
            Row(
                "events/s",
                f"{rebuilt['events_per_s']:,.0f} ({rebuilt['seconds']:.1f} s, "
                f"{rebuilt['cpu_s']:.1f} s CPU)",
                f"{rebuilt['events']:,}",
            ),
            target_row(
                f"≥ {TARGET_EVENTS_PER_S:,.0f} events/s",
                rebuilt["events_per_s"] >= TARGET_EVENTS_PER_S,
                f"{rebuilt['events_per_s'] / TARGET_EVENTS_PER_S:.0%} of target",
            ),
            Row(
                "peak RSS (before replay)",
                f"{rebuilt['peak_rss_kb'] / 1024:,.0f} MiB "
                f"({rebuilt['rss_before_kb'] / 1024:,.0f} MiB)",
            ),
            Row(
                "fold: applied · duplicates · fenced · poison",
                " · ".join(
                    f"{rebuilt['stats'][k]:,}"
                    for k in ("applied", "duplicates", "fenced", "poison")
                ),
            ),
            Row(
                "state: levels · holds · documents",
                f"{rebuilt['state']['levels']:,} · {rebuilt['state']['holds']:,} · "
                f"{rebuilt['state']['documents']:,}",
            ),
            Row("state hash", rebuilt["state_hash"][:16]),
        ],
    }
    profile = figures.get("profile")
    if profile:
        result["where the rebuild's time went (py-spy samples)"] = [
            Row(label, f"{share:.0%}") for label, share in profile["shares"].items()
        ]
    result["broker baseline (same run)"] = baseline_rows(figures["broker_baseline"])
    return result


if __name__ == "__main__":
    app()
