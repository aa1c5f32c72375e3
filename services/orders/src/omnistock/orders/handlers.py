"""Where the order domain meets Kafka and PostgreSQL.

* :class:`OrderProjector`: the consumer-group member owning some ``orders.events``
  partitions (a :class:`PartitionedProjection`). It folds them from offset 0 (an
  order's state is its partition's fold) and writes the read model with its
  position in one statement.
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
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from omnistock.events import sqlbatch
from omnistock.events.envelope import Envelope, Event
from omnistock.events.offsets import end_offsets
from omnistock.events.producer import EventProducer
from omnistock.events.projection import OwnedPartition, PartitionedProjection
from omnistock.events.relay import Relay
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import INVENTORY_RESERVATIONS, ORDERS
from omnistock.orders import projections as rm
from omnistock.orders.domain.orders import OrderBook, answer

log = logging.getLogger(__name__)

ORDERS_GROUP = "orders-orders"
ANSWERS_GROUP = "orders-answers"


class OrderProjector(PartitionedProjection[OrderBook]):
    writes = (sqlbatch.replace_all(rm.orders),)

    def __init__(
        self, kafka: KafkaSettings, producer: EventProducer, engine: AsyncEngine, *, log_id: str
    ) -> None:
        super().__init__(
            kafka, producer, engine, group_id=ORDERS_GROUP, topics=[ORDERS], log_id=log_id
        )

    def new_projection(self) -> OrderBook:
        return OrderBook()

    def folded(
        self, part: OwnedPartition[OrderBook], envelope: Envelope[Event], result: Any
    ) -> None:
        if result is not None and part.new_row(envelope):
            part.pending.append(result.order_id)

    def rows(self, parts: Sequence[OwnedPartition[OrderBook]]) -> Mapping[Table, sqlbatch.Rows]:
        return {
            rm.orders: [
                part.fold.projection.orders[order_id].row()
                for part in parts
                for order_id in sorted(set(part.pending))
            ]
        }


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
