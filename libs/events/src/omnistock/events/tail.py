"""Every replica reading a whole (small) topic without a consumer group.

Used where each replica needs all of a topic: the locations every API validates
against, and the reservation outcomes an API request waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from omnistock.events.offsets import end_offsets
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import Topic

log = logging.getLogger(__name__)

RecordHandler = Callable[[ConsumerRecord[bytes, bytes]], Awaitable[None] | None]


class TailReader:
    """Reads every partition of ``topics`` from the beginning (or the end) and keeps going.

    The handler gets raw records, so it can skip what it does not need before
    paying for decoding. :meth:`caught_up` waits until everything in the log at
    call time has been handled: read-your-writes for this replica.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: Sequence[Topic],
        handler: RecordHandler,
        *,
        from_beginning: bool = True,
        name: str = "tail",
    ) -> None:
        self.kafka = kafka
        self.topics = tuple(topics)
        self.handler = handler
        self.from_beginning = from_beginning
        self.name = name
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._partitions: list[TopicPartition] = []
        self._next: dict[TopicPartition, int] = {}
        self._progress = asyncio.Condition()

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            **self.kafka.client_options(),
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=self.kafka.fetch_max_wait_ms,
        )
        await consumer.start()
        await consumer.topics()
        names = [topic.physical(self.kafka.topic_prefix) for topic in self.topics]
        self._partitions = [
            TopicPartition(name, p)
            for name in names
            for p in sorted(consumer.partitions_for_topic(name) or ())
        ]
        consumer.assign(self._partitions)
        if self.from_beginning:
            starts = await consumer.beginning_offsets(self._partitions)
        else:
            starts = await end_offsets(consumer, self._partitions)
        for tp in self._partitions:
            consumer.seek(tp, starts[tp])
        self._next = dict(starts)
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(), name=f"tail:{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=100, max_records=5_000)
            for tp, records in batches.items():
                for record in records:
                    try:
                        result = self.handler(record)
                        if result is not None:
                            await result
                    except Exception:
                        # A tail reader feeds views and waiters, never the system of record:
                        # skipping one record must not stop every later answer.
                        log.exception("%s could not handle %s@%d", self.name, tp, record.offset)
                self._next[tp] = records[-1].offset + 1
            if batches:
                async with self._progress:
                    self._progress.notify_all()

    async def caught_up(self) -> None:
        """Return once everything written before this call has been handled (callers bound
        the wait with ``asyncio.timeout``)."""
        assert self._consumer is not None
        probe = AIOKafkaConsumer(**self.kafka.client_options(), group_id=None)
        await probe.start()
        try:
            probe.assign(self._partitions)
            targets = await end_offsets(probe, self._partitions)
        finally:
            await probe.stop()

        def reached() -> bool:
            return all(self._next.get(tp, 0) >= end for tp, end in targets.items())

        async with self._progress:
            await self._progress.wait_for(reached)
