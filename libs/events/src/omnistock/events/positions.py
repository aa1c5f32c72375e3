"""Consumer positions kept in a service's own database, in the same statement as the
read-model rows they cover, plus the check that the log still backs them.

A database can outlive its log: the embedded dev broker forgets everything on
restart, and a service may be pointed at another cluster. Serving rows the log
does not back would be serving fiction, so a service compares what it stored
with the log it finds and rebuilds when they disagree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from omnistock.events.admin import cluster_id
from omnistock.events.offsets import end_offsets
from omnistock.events.settings import KafkaSettings
from omnistock.events.sqlbatch import upsert

#: Tables of the shared plumbing; each service adds them to its own database.
PLUMBING = MetaData()

consumer_positions = Table(
    "consumer_positions",
    PLUMBING,
    Column("consumer", String(200), primary_key=True),
    Column("topic", String(249), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
    #: The cluster id of the log these positions refer to.
    Column("log_id", String(200), nullable=False),
)


@dataclass(frozen=True, slots=True)
class StoredPositions:
    log_id: str | None
    offsets: dict[TopicPartition, int]


async def load_positions(connection: AsyncConnection, consumer: str) -> StoredPositions:
    rows = (
        await connection.execute(
            select(
                consumer_positions.c.topic,
                consumer_positions.c.partition,
                consumer_positions.c.next_offset,
                consumer_positions.c.log_id,
            ).where(consumer_positions.c.consumer == consumer)
        )
    ).all()
    log_ids = {row.log_id for row in rows}
    return StoredPositions(
        log_id=log_ids.pop() if len(log_ids) == 1 else None,
        offsets={TopicPartition(row.topic, row.partition): row.next_offset for row in rows},
    )


def position_rows(
    consumer: str, offsets: Mapping[TopicPartition, int], log_id: str
) -> list[dict[str, object]]:
    return [
        {
            "consumer": consumer,
            "topic": tp.topic,
            "partition": tp.partition,
            "next_offset": offset,
            "log_id": log_id,
        }
        for tp, offset in offsets.items()
    ]


#: A consumer's positions (:func:`position_rows`) as a part of one statement
#: (:mod:`omnistock.events.sqlbatch`), beside the rows they cover.
POSITIONS_UPSERT = upsert(
    consumer_positions, key=("consumer", "topic", "partition"), update=("next_offset", "log_id")
)


async def log_end_offsets(
    kafka: KafkaSettings, partitions: list[TopicPartition]
) -> dict[TopicPartition, int]:
    if not partitions:
        return {}
    consumer = AIOKafkaConsumer(**kafka.client_options(), group_id=None)
    await consumer.start()
    try:
        await consumer.topics()
        known = [
            tp
            for tp in partitions
            if tp.partition in (consumer.partitions_for_topic(tp.topic) or ())
        ]
        consumer.assign(known)
        return await end_offsets(consumer, known)
    finally:
        await consumer.stop()


async def why_rebuild(kafka: KafkaSettings, stored: StoredPositions) -> str | None:
    """None when the log backs ``stored``; otherwise why the state must be rebuilt."""
    if not stored.offsets:
        return None
    current = await cluster_id(kafka)
    if stored.log_id != current:
        return f"positions belong to log {stored.log_id!r}, the broker is {current!r}"
    ends = await log_end_offsets(kafka, list(stored.offsets))
    ahead = [
        f"{tp.topic}[{tp.partition}] stored {offset} > log end {ends.get(tp, 0)}"
        for tp, offset in sorted(stored.offsets.items())
        if offset > ends.get(tp, 0)
    ]
    return "positions are ahead of the log: " + "; ".join(ahead) if ahead else None


async def why_rebuild_read_model(
    kafka: KafkaSettings, engine: AsyncEngine, consumers: Sequence[str]
) -> str | None:
    """None when the log backs the stored positions of every one of ``consumers`` (the
    consumer groups that write a service's read model); otherwise why it must be rebuilt."""
    for consumer in consumers:
        async with engine.connect() as connection:
            stored = await load_positions(connection, consumer)
        reason = await why_rebuild(kafka, stored)
        if reason:
            return reason
    return None
