"""Where the order domain meets Kafka and PostgreSQL.

* :class:`OrderProjector`: the consumer-group member owning some ``orders.events``
  partitions. It folds them from offset 0 (an order's state is its partition's
  fold) and writes the read model with its position in one transaction.
* :func:`answer_relay`: turns inventory's answers on ``inventory.reservations``
  (keyed by reservation id) into ``OrderConfirmed``/``OrderRejected`` on
  ``orders.events`` (keyed by order id). Stateless: the order fold decides which
  answer counts, so a repeat after a crash changes nothing.
* :class:`LogEnds`: where an order's partition ends, so the API decides on a read
  model that has caught up with everything already in the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from sqlalchemy.ext.asyncio import AsyncEngine

from omnistock.events.consumer import ConsumerRunner
from omnistock.events.envelope import Envelope, Event
from omnistock.events.fold import Fold
from omnistock.events.offsets import end_offsets
from omnistock.events.positions import load_positions, log_end_offsets, save_positions
from omnistock.events.producer import EventProducer
from omnistock.events.relay import Relay
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import INVENTORY_RESERVATIONS, ORDERS
from omnistock.orders import projections as rm
from omnistock.orders.domain.orders import OrderBook, answer

log = logging.getLogger(__name__)

ORDERS_GROUP = "orders-orders"
ANSWERS_GROUP = "orders-answers"


@dataclass
class _OrderPartition:
    fold: Fold[OrderBook]
    #: Offsets below this are already in the read model.
    rows_from: int
    end_at_assignment: int
    next_offset: int = 0
    touched: set[str] = field(default_factory=set)

    @property
    def caught_up(self) -> bool:
        return self.next_offset >= self.end_at_assignment


class OrderProjector:
    def __init__(
        self, kafka: KafkaSettings, producer: EventProducer, engine: AsyncEngine, *, log_id: str
    ) -> None:
        self.kafka = kafka
        self.engine = engine
        self.log_id = log_id
        self.parts: dict[TopicPartition, _OrderPartition] = {}
        #: Set once every assigned partition has caught up with the log end seen at assignment.
        self.ready = asyncio.Event()
        self.runner = ConsumerRunner(
            kafka,
            group_id=ORDERS_GROUP,
            topics=[ORDERS],
            handler=self.handle,
            producer=producer,
            batch_done=self.batch_done,
            batch_failed=self.batch_failed,
            on_assigned=self.assigned,
            on_revoked=self.revoked,
            client_id=producer.source,
        )

    def _note_progress(self) -> None:
        if self.parts and all(p.caught_up for p in self.parts.values()):
            self.ready.set()

    async def assigned(self, partitions: set[TopicPartition]) -> dict[TopicPartition, int]:
        async with self.engine.connect() as connection:
            stored = (await load_positions(connection, ORDERS_GROUP)).offsets
        ends = await log_end_offsets(self.kafka, sorted(partitions))
        for tp in partitions:
            self.parts[tp] = _OrderPartition(
                fold=Fold(OrderBook()), rows_from=stored.get(tp, 0), end_at_assignment=ends[tp]
            )
        self._note_progress()
        # Orders are folded from the beginning: their state is the log. (Snapshots, as the
        # inventory's stock partitions have, would bound restart time on a long log.)
        return {tp: 0 for tp in partitions}

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self.parts.pop(tp, None)

    async def batch_failed(self, tp: TopicPartition) -> int:
        # The fold took in part of a batch that will be redelivered: fold again from 0.
        self.parts.pop(tp, None)
        return (await self.assigned({tp}))[tp]

    async def handle(self, envelope: Envelope[Event]) -> None:
        assert envelope.position is not None
        part = self.parts[TopicPartition(envelope.position.topic, envelope.position.partition)]
        part.next_offset = envelope.position.offset + 1
        if not part.fold.admit(envelope):
            return
        order = part.fold.projection.apply(envelope)
        if order is not None and envelope.position.offset >= part.rows_from:
            part.touched.add(order.order_id)

    async def batch_done(self, next_offsets: Mapping[TopicPartition, int]) -> None:
        rows: list[dict[str, Any]] = []
        for tp in next_offsets:
            part = self.parts[tp]
            book = part.fold.projection
            rows.extend(book.orders[order_id].row() for order_id in sorted(part.touched))
            part.touched = set()
        async with self.engine.begin() as connection:
            await rm.upsert_orders(connection, rows)
            await save_positions(connection, ORDERS_GROUP, next_offsets, self.log_id)
        for tp, next_offset in next_offsets.items():
            part = self.parts[tp]
            part.rows_from = max(part.rows_from, next_offset)
        self._note_progress()


def answer_relay(kafka: KafkaSettings, producer: EventProducer) -> Relay:
    """Inventory's commit answers, copied onto the orders they answer (only those answers)."""
    return Relay(
        kafka,
        producer,
        group_id=ANSWERS_GROUP,
        topics=[INVENTORY_RESERVATIONS],
        translate=answer,
    )


class LogEnds:
    """Where each ``orders.events`` partition ends now, for deciding on fresh state."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka
        self.topic = ORDERS.physical(kafka.topic_prefix)
        self.partitions = [TopicPartition(self.topic, p) for p in range(ORDERS.partitions)]
        self._partitioner = DefaultPartitioner()
        self._consumer: AIOKafkaConsumer | None = None
        # end_offsets moves the consumer's positions: one measurement at a time.
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(**self.kafka.client_options(), group_id=None)
        await consumer.start()
        consumer.assign(self.partitions)
        self._consumer = consumer

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    def partition_of(self, order_id: str) -> TopicPartition:
        """The partition the producer writes ``order_id`` to (same default partitioner)."""
        all_partitions = list(range(ORDERS.partitions))
        partition: Any = self._partitioner(order_id.encode(), all_partitions, all_partitions)
        return TopicPartition(self.topic, int(partition))

    async def end_of(self, order_id: str) -> tuple[TopicPartition, int]:
        assert self._consumer is not None
        tp = self.partition_of(order_id)
        async with self._lock:
            ends = await end_offsets(self._consumer, [tp])
        return tp, ends[tp]
