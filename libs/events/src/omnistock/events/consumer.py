"""The one way omnistock reads from Kafka: at-least-once, commit after handling.

A record that can never be handled (a :class:`PoisonMessage`) is written to
``<topic>.dlq`` with the reason in its headers, and consumption continues. Any
other failure is treated as transient: the partition is rewound to the first
record not yet committed and retried with backoff, so nothing is skipped. When even
the rewind fails (the state to restart from lives in a database that is down), the
partition is parked, paused and retried from the poll loop until it succeeds, while
the other partitions, heartbeats and rebalances go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError
from aiokafka.structs import ConsumerRecord

from omnistock.events import metrics, tracing
from omnistock.events.codec import PoisonMessage, decode
from omnistock.events.envelope import Envelope, Event, Position
from omnistock.events.producer import EventProducer
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import Topic

log = logging.getLogger(__name__)

Handler = Callable[[Envelope[Event]], Awaitable[None]]
#: Called once per poll after every partition's records were handled, with the next offset
#: to read per partition: the place to commit one unit of work together with the consumer
#: positions. One per poll, not per partition: a transaction and an offset commit per
#: partition made a 12-partition owner spend most of its time waiting on round trips.
BatchDone = Callable[[Mapping[TopicPartition, int]], Awaitable[None]]
#: Called when a batch failed and will be retried: discard what it half-did, and say where
#: to read again from (None: the failed batch's first record).
BatchFailed = Callable[[TopicPartition], Awaitable[int | None]]
#: Called on assignment; may return the offsets to start from (positions kept in a database).
OnAssigned = Callable[[set[TopicPartition]], Awaitable[Mapping[TopicPartition, int] | None]]
OnRevoked = Callable[[set[TopicPartition]], Awaitable[None]]

DLQ_ERROR_LIMIT = 1000


def dead_letter_headers(
    record: ConsumerRecord[bytes, bytes], error: BaseException, group: str
) -> list[tuple[str, bytes]]:
    reason = error.reason if isinstance(error, PoisonMessage) else "handler_rejected"
    return [
        *(record.headers or ()),
        ("dlq_reason", reason.encode()),
        ("dlq_error_type", type(error).__name__.encode()),
        ("dlq_error", str(error)[:DLQ_ERROR_LIMIT].encode()),
        ("dlq_topic", record.topic.encode()),
        ("dlq_partition", str(record.partition).encode()),
        ("dlq_offset", str(record.offset).encode()),
        ("dlq_group", group.encode()),
        ("dlq_time", datetime.now(UTC).isoformat().encode()),
    ]


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: ConsumerRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.runner._revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self.runner._assigned(set(assigned))


class ConsumerRunner:
    """Runs ``handler`` for every event of ``topics`` in a consumer group, in log order per
    partition, committing only what was handled."""

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        group_id: str,
        topics: Sequence[Topic],
        handler: Handler,
        producer: EventProducer,
        batch_done: BatchDone | None = None,
        batch_failed: BatchFailed | None = None,
        on_assigned: OnAssigned | None = None,
        on_revoked: OnRevoked | None = None,
        max_batch: int = 500,
        retry_backoff_s: float = 0.1,
        max_retry_backoff_s: float = 5.0,
        client_id: str | None = None,
    ) -> None:
        self.kafka = kafka
        self.group_id = group_id
        self.topics = tuple(topics)
        self.handler = handler
        self.producer = producer
        self.batch_done = batch_done
        self.batch_failed = batch_failed
        self.on_assigned = on_assigned
        self.on_revoked = on_revoked
        self.max_batch = max_batch
        self.retry_backoff_s = retry_backoff_s
        self.max_retry_backoff_s = max_retry_backoff_s
        self.client_id = client_id or group_id
        #: Set while this member holds at least one assignment (tests and readiness wait on it).
        self.assigned = asyncio.Event()
        self.assignment: set[TopicPartition] = set()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        # Held while a batch is handled, so a revocation waits for it to finish.
        self._batch_lock = asyncio.Lock()
        self._next_offsets: dict[TopicPartition, int] = {}
        # Where on_assigned asked each partition to start, until a batch from there arrives.
        self._sought: dict[TopicPartition, int] = {}
        #: Log time (s) of the oldest record fetched and not yet handled, per partition.
        self._unhandled_since: dict[TopicPartition, float] = {}
        #: Paused partitions whose state could not be restored, with the offset to read
        #: again from (None: its assignment failed, on_assigned says where to start).
        self._parked: dict[TopicPartition, int | None] = {}
        self._park_tries = 0
        self._unpark_at = 0.0
        metrics.OLDEST_UNPROCESSED_AGE.labels(group_id).set_function(self._oldest_unprocessed_age)

    @property
    def physical_topics(self) -> list[str]:
        return [topic.physical(self.kafka.topic_prefix) for topic in self.topics]

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            **self.kafka.client_options(),
            group_id=self.kafka.group(self.group_id),
            client_id=self.client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.max_batch,
            session_timeout_ms=self.kafka.session_timeout_ms,
            fetch_max_wait_ms=self.kafka.fetch_max_wait_ms,
            heartbeat_interval_ms=self.kafka.heartbeat_interval_ms,
        )
        consumer.subscribe(self.physical_topics, listener=_Rebalance(self))
        self._zero_counters()
        # Set before start(): the first assignment can arrive while start() runs.
        self._consumer = consumer
        await consumer.start()
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name=f"consumer:{self.group_id}")

    def _zero_counters(self) -> None:
        """Export the error counters at 0 from the start: ``increase()`` cannot see the first
        count of a series that appears with it, and the first dead letter must alert."""
        reasons = {"handler_rejected", PoisonMessage.reason}
        reasons.update(kind.reason for kind in PoisonMessage.__subclasses__())
        for topic in self.physical_topics:
            metrics.HANDLER_ERRORS.labels(topic, self.group_id)
            for reason in reasons:
                metrics.DLQ_MESSAGES.labels(topic, reason, self.group_id)

    async def stop(self) -> None:
        """Finish the batch in hand, commit it, leave the group."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        self.assigned.clear()

    async def __aenter__(self) -> ConsumerRunner:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def committed(self, tp: TopicPartition) -> int:
        """The group's committed offset of ``tp`` (0 when nothing was committed)."""
        assert self._consumer is not None
        return int(await self._consumer.committed(tp) or 0)

    async def _assigned(self, partitions: set[TopicPartition]) -> None:
        consumer = self._consumer
        assert consumer is not None
        # aiokafka starts fetching from the committed offsets at once; nothing may be
        # handled until on_assigned has said where each partition really starts.
        async with self._batch_lock:
            consumer.pause(*partitions)
            self.assignment = set(partitions)
            self._parked = {tp: at for tp, at in self._parked.items() if tp not in partitions}
            try:
                if self.on_assigned is not None and partitions:
                    starts = await self.on_assigned(partitions)
                    for tp, offset in (starts or {}).items():
                        self._seek(consumer, tp, offset)
            except Exception:
                log.exception("%s: assignment of %s failed; parked", self.group_id, partitions)
                self._park(consumer, partitions, None)
            finally:
                consumer.resume(*(tp for tp in partitions if tp not in self._parked))
        if partitions:
            self.assigned.set()
        log.info("%s assigned %s", self.group_id, sorted(map(str, partitions)))

    async def _revoked(self, partitions: set[TopicPartition]) -> None:
        async with self._batch_lock:
            self.assignment -= partitions
            for tp in partitions:
                self._parked.pop(tp, None)
            if not self.assignment:
                self.assigned.clear()
            if self.on_revoked is not None and partitions:
                await self.on_revoked(partitions)

    async def _run(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        failures = 0
        while not self._stopping.is_set():
            if self._parked and time.monotonic() >= self._unpark_at:
                async with self._batch_lock:
                    await self._unpark(consumer)
            batches = await consumer.getmany(timeout_ms=100, max_records=self.max_batch)
            ready: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
            for tp, records in batches.items():
                sought = self._sought.get(tp)
                if sought is not None:
                    if records[0].offset != sought:
                        # Fetched from the old position before on_assigned's seek took
                        # effect: handling it would skip or repeat records. Fetch again.
                        # (Offsets are contiguous: omnistock topics are never compacted.)
                        consumer.seek(tp, sought)
                        continue
                    del self._sought[tp]
                ready[tp] = records
            if ready:
                async with self._batch_lock:
                    failed = await self._handle(consumer, ready)
                if failed:
                    # Backoff before retrying a failed batch; stop() still ends it promptly.
                    await self._pause(self._backoff(failures))
                    failures += 1
                else:
                    failures = 0
            self._update_lag(consumer)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _handle(
        self,
        consumer: AIOKafkaConsumer,
        batches: Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
    ) -> bool:
        """Handle one poll's records of every partition as one unit of work: one
        ``batch_done`` and one offset commit for all of them. Returns whether any failed."""
        for tp, records in batches.items():
            self._unhandled_since.setdefault(tp, records[0].timestamp / 1000)
        started = time.perf_counter()
        handled: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
        failed = False
        for tp, records in batches.items():
            if tp not in self.assignment:
                continue  # revoked while fetched: the new owner reads it again
            try:
                for record in records:
                    await self._handle_one(record)
            except Exception as error:
                failed = True
                await self._retry(consumer, tp, records[0].offset, error)
            else:
                handled[tp] = records
        if not handled:
            return failed
        next_offsets = {tp: records[-1].offset + 1 for tp, records in handled.items()}
        done_at = committed_at = handled_at = time.perf_counter()
        try:
            if self.batch_done is not None:
                await self.batch_done(next_offsets)
            done_at = time.perf_counter()
            await consumer.commit(next_offsets)
            committed_at = time.perf_counter()
        except CommitFailedError:
            # The group rebalanced under us (this member was too slow to heartbeat). The
            # work is done and idempotent; whoever is assigned the partitions next starts
            # from the last commit (and on_assigned's positions), so there is nothing to
            # undo here, and undoing it would re-claim partitions that are no longer ours.
            log.warning(
                "%s: offsets %s not committed, the group is rebalancing",
                self.group_id,
                {str(tp): n for tp, n in next_offsets.items()},
            )
            return True
        except Exception as error:
            for tp, records in handled.items():
                await self._retry(consumer, tp, records[0].offset, error)
            return True
        observe = metrics.BATCH_SECONDS.labels
        observe(self.group_id, "handle").observe(handled_at - started)
        observe(self.group_id, "batch_done").observe(done_at - handled_at)
        observe(self.group_id, "commit").observe(committed_at - done_at)
        self._next_offsets.update(next_offsets)
        self._note_handled(consumer, handled)
        return failed

    def _note_handled(
        self,
        consumer: AIOKafkaConsumer,
        handled: Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
    ) -> None:
        for tp, records in handled.items():
            highwater = consumer.highwater(tp)
            if highwater is not None and highwater > records[-1].offset + 1:
                # More is waiting; the next record is no older than the last one handled.
                self._unhandled_since[tp] = records[-1].timestamp / 1000
            else:
                self._unhandled_since.pop(tp, None)

    async def _retry(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, first: int, error: Exception
    ) -> None:
        """Rewind ``tp`` to read a failed batch again (or from where batch_failed says)."""
        metrics.HANDLER_ERRORS.labels(tp.topic, self.group_id).inc()
        log.error(
            "%s failed on %s@%d; retrying from there", self.group_id, tp, first, exc_info=error
        )
        await self._restore(consumer, tp, first)

    async def _restore(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, first: int | None
    ) -> bool:
        """Make ``tp`` readable again: after a failed batch (``first``, its first offset)
        through batch_failed, after a failed assignment (``first`` None) through on_assigned.
        When that fails too, park ``tp`` and return False."""
        try:
            if first is None:
                starts = await self.on_assigned({tp}) if self.on_assigned is not None else None
                restart = (starts or {}).get(tp)
            else:
                restart = await self.batch_failed(tp) if self.batch_failed is not None else None
                restart = first if restart is None else restart
        except Exception:
            log.exception("%s: %s could not be restored; parked", self.group_id, tp)
            self._park(consumer, {tp}, first)
            return False
        if restart is not None:
            self._seek(consumer, tp, restart)
        return True

    def _seek(self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
        consumer.seek(tp, offset)
        self._sought[tp] = offset

    def _park(
        self, consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition], first: int | None
    ) -> None:
        # Paused, not left: giving the partitions up would hand the same failure to another
        # member, and a member that keeps them keeps heartbeating while it waits.
        consumer.pause(*partitions)
        for tp in partitions:
            self._parked[tp] = first
        if not self._park_tries:
            self._unpark_at = time.monotonic() + self._backoff(0)

    async def _unpark(self, consumer: AIOKafkaConsumer) -> None:
        """One try at restoring every parked partition; the ones that fail again wait longer."""
        parked, self._parked = self._parked, {}
        for tp, first in parked.items():
            if tp in self.assignment and await self._restore(consumer, tp, first):
                consumer.resume(tp)
                log.info("%s: %s restored", self.group_id, tp)
        if self._parked:
            self._park_tries += 1
            self._unpark_at = time.monotonic() + self._backoff(self._park_tries)
        else:
            self._park_tries = 0

    def _backoff(self, tries_before: int) -> float:
        """Seconds to wait before the next try, doubling from retry_backoff_s to the cap."""
        return min(self.retry_backoff_s * 2.0**tries_before, self.max_retry_backoff_s)

    async def _handle_one(self, record: ConsumerRecord[bytes, bytes]) -> None:
        position = Position(record.topic, record.partition, record.offset)
        try:
            envelope = decode(record.value, record.headers or (), position, record.timestamp)
        except PoisonMessage as exc:
            await self._dead_letter(record, exc)
            return
        with tracing.process_span(record, envelope, self.group_id):
            try:
                await self.handler(envelope)
            except PoisonMessage as exc:
                await self._dead_letter(record, exc)
                return
        metrics.EVENTS_CONSUMED.labels(record.topic, envelope.type, self.group_id).inc()

    async def _dead_letter(self, record: ConsumerRecord[bytes, bytes], error: Exception) -> None:
        reason = getattr(error, "reason", "handler_rejected")
        log.error(
            "dead-lettering %s@%d/%d (%s): %s",
            record.topic,
            record.partition,
            record.offset,
            reason,
            error,
        )
        await self.producer.send_raw(
            f"{record.topic}.dlq",
            record.key,
            record.value,
            dead_letter_headers(record, error, self.group_id),
        )
        metrics.DLQ_MESSAGES.labels(record.topic, reason, self.group_id).inc()

    def _update_lag(self, consumer: AIOKafkaConsumer) -> None:
        for tp in self.assignment:
            highwater = consumer.highwater(tp)
            handled = self._next_offsets.get(tp)
            if highwater is None or handled is None:
                continue
            lag = max(0, highwater - handled)
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition), self.group_id).set(lag)

    def _oldest_unprocessed_age(self) -> float:
        """Read at scrape time, so the age keeps growing while a batch is stuck retrying."""
        unhandled = [since for tp, since in self._unhandled_since.items() if tp in self.assignment]
        return max(0.0, time.time() - min(unhandled)) if unhandled else 0.0
