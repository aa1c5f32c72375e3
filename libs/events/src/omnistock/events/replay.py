"""Rebuild state from offset 0: the proof that the log alone is the system of record."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from omnistock.events import metrics
from omnistock.events.envelope import Position
from omnistock.events.fold import Fold
from omnistock.events.offsets import end_offsets
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import Topic

log = logging.getLogger(__name__)

#: Seconds between progress log lines when stderr is not a terminal.
LOG_EVERY_S = 2.0


@dataclass(frozen=True, slots=True)
class ReplayReport:
    name: str
    events: int
    seconds: float
    state_hash: str
    #: Next offset per partition: where a live consumer continues from.
    end_offsets: dict[TopicPartition, int] = field(default_factory=dict)

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        return (
            f"{self.name}: replayed {self.events:,} events in {self.seconds:.2f} s "
            f"({self.events_per_second:,.0f} events/s), state {self.state_hash[:16]}"
        )


async def replay(
    kafka: KafkaSettings,
    topics: Sequence[Topic],
    fold: Fold[Any],
    *,
    name: str,
    progress: bool | None = None,
    fetch_max_records: int = 10_000,
) -> ReplayReport:
    """Fold every record of ``topics`` from the beginning up to the end offsets seen at start.

    Records written while the replay runs are left for the live consumer, which
    continues from :attr:`ReplayReport.end_offsets`.
    """
    consumer = AIOKafkaConsumer(
        **kafka.client_options(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [
            TopicPartition(topic.physical(kafka.topic_prefix), p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic.physical(kafka.topic_prefix)) or ())
        ]
        consumer.assign(partitions)
        begin = await consumer.beginning_offsets(partitions)
        end = await end_offsets(consumer, partitions)
        for tp in partitions:
            consumer.seek(tp, begin[tp])
        total = sum(end[tp] - begin[tp] for tp in partitions)
        remaining = {tp for tp in partitions if end[tp] > begin[tp]}
        consumer.pause(*(set(partitions) - remaining))
        show_bar = sys.stderr.isatty() if progress is None else progress
        started = time.perf_counter()
        done = 0
        with _Reporter(name, total, show_bar) as reporter:
            while remaining:
                batches = await consumer.getmany(timeout_ms=500, max_records=fetch_max_records)
                for tp, records in batches.items():
                    stop = end[tp]
                    for record in records:
                        if record.offset >= stop:
                            break
                        fold.apply_record(
                            record.value,
                            record.headers or (),
                            Position(record.topic, record.partition, record.offset),
                            record.timestamp,
                        )
                        done += 1
                    if records and records[-1].offset + 1 >= stop:
                        remaining.discard(tp)
                        consumer.pause(tp)
                reporter.update(done)
        seconds = time.perf_counter() - started
    finally:
        await consumer.stop()
    report = ReplayReport(name, done, seconds, fold.state_hash(), dict(end))
    metrics.REPLAY_RATE.labels(name).set(report.events_per_second)
    log.info("%s", report.summary())
    return report


class _Reporter:
    """A progress bar on a terminal, periodic log lines anywhere else."""

    def __init__(self, name: str, total: int, bar: bool) -> None:
        self.name = name
        self.total = total
        self.started = time.perf_counter()
        self.last_log = self.started
        self.counted = 0
        metrics.REPLAY_PROGRESS.labels(name).set(0 if total else 1)
        self.progress: Progress | None = None
        if bar:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:>12} events/s"),
                TimeElapsedColumn(),
                transient=False,
            )
            self.task = self.progress.add_task(f"replay {name}", total=total, rate="")

    def __enter__(self) -> _Reporter:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def update(self, done: int) -> None:
        now = time.perf_counter()
        rate = done / (now - self.started) if now > self.started else 0.0
        metrics.REPLAY_EVENTS.labels(self.name).inc(done - self.counted)
        self.counted = done
        metrics.REPLAY_PROGRESS.labels(self.name).set(done / self.total if self.total else 1)
        metrics.REPLAY_RATE.labels(self.name).set(rate)
        if self.progress is not None:
            self.progress.update(self.task, completed=done, rate=f"{rate:,.0f}")
        elif now - self.last_log >= LOG_EVERY_S:
            self.last_log = now
            log.info("replay %s: %d/%d events (%.0f events/s)", self.name, done, self.total, rate)
