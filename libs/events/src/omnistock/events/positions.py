"""Consumer positions kept in a service's own database, in the same statement as the
read-model rows they cover (and fencing them: :class:`PositionedWrite`), plus the check
that the log still backs them.

A database can outlive its log: the embedded dev broker forgets everything on
restart, and a service may be pointed at another cluster. Serving rows the log
does not back would be serving fiction, so a service compares what it stored
with the log it finds and rebuilds when they disagree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from omnistock.events import sqlbatch
from omnistock.events.admin import cluster_id
from omnistock.events.metrics import READ_MODEL_OVERTAKEN
from omnistock.events.offsets import end_offsets
from omnistock.events.settings import KafkaSettings

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

log = logging.getLogger(__name__)


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


#: Positions only move forward.
_POSITIONS_FORWARD = sqlbatch.upsert(
    consumer_positions,
    key=("consumer", "topic", "partition"),
    update=("next_offset", "log_id"),
    only_if="consumer_positions.next_offset < excluded.next_offset",
)

# The stored positions of the batch's partitions, locked in a fixed order (two writers
# never deadlock) and read as they are once the lock is ours, not as the statement's
# snapshot saw them; and those already at or past the batch's. (Names from the table
# definition only.)
_OVERTAKEN = f"""
incoming AS (SELECT * FROM {sqlbatch.recordset(consumer_positions, "i")}),
stored AS (
    SELECT s.topic, s.partition, s.next_offset
    FROM consumer_positions AS s
    JOIN incoming AS i USING (consumer, topic, partition)
    ORDER BY s.topic, s.partition
    FOR UPDATE OF s
),
overtaken AS (
    SELECT s.topic, s.partition
    FROM stored AS s JOIN incoming AS i USING (topic, partition)
    WHERE s.next_offset >= i.next_offset
)"""  # noqa: S608


@dataclass(frozen=True, slots=True)
class PositionedWrite:
    """Read-model writes that go in one statement with the consumer positions they bring
    the rows to, fenced by those positions.

    Two members can write the same partition's rows for a while: a member starved of
    CPU may finish a batch after the group has given its partitions to another, which
    has written further already. The last writer would win, and put rows and position
    back. So the statement writes only if every stored position it carries is below
    the new one; otherwise it writes nothing, and says which partitions another writer
    has taken at least as far. Those rows are then in the read model already: every
    writer folds the same log, and rows written at a position are the fold up to it.
    """

    batch: sqlbatch.Batch

    @classmethod
    def of(cls, *writes: sqlbatch.Write) -> PositionedWrite:
        return cls(
            sqlbatch.one_statement(
                *writes,
                _POSITIONS_FORWARD,
                before=_OVERTAKEN,
                only_if="NOT EXISTS (SELECT FROM overtaken)",
                returning="SELECT topic, partition FROM overtaken",
            )
        )

    async def execute(
        self,
        engine: AsyncEngine,
        *,
        consumer: str,
        log_id: str,
        next_offsets: Mapping[TopicPartition, int],
        rows: Callable[[Collection[TopicPartition]], Mapping[Table, sqlbatch.Rows]],
    ) -> set[TopicPartition]:
        """Write ``rows(partitions)`` with ``next_offsets`` (``engine`` in autocommit: see
        :func:`sqlbatch.autocommit`). Partitions another writer has taken at least as far
        are left out (then the rest are written again); they are returned."""
        overtaken: set[TopicPartition] = set()
        remaining = dict(next_offsets)
        async with engine.connect() as connection:
            while remaining:
                found = {
                    TopicPartition(row.topic, row.partition)
                    for row in await self.batch.execute(
                        connection,
                        {
                            **rows(remaining.keys()),
                            consumer_positions: position_rows(consumer, remaining, log_id),
                        },
                    )
                }
                if not found:
                    break
                for tp in found:
                    log.warning("%s: another member has written %s at least this far", consumer, tp)
                    READ_MODEL_OVERTAKEN.labels(tp.topic, consumer).inc()
                overtaken |= found
                remaining = {tp: n for tp, n in remaining.items() if tp not in found}
        return overtaken


async def claim_positions(
    engine: AsyncEngine, consumer: str, partitions: Collection[TopicPartition], log_id: str
) -> dict[TopicPartition, int]:
    """The stored positions of ``partitions`` just assigned to this member; a partition
    never written gets a position of 0, so a :class:`PositionedWrite` always has a stored
    row to lock."""
    ordered = sorted(partitions)
    async with engine.begin() as connection:
        if ordered:
            await connection.execute(
                insert(consumer_positions)
                .values(position_rows(consumer, dict.fromkeys(ordered, 0), log_id))
                .on_conflict_do_nothing()
            )
        stored = await load_positions(connection, consumer)
    return {tp: stored.offsets.get(tp, 0) for tp in ordered}


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
