"""The inventory read model in PostgreSQL: rows derived from the log, nothing else.

Every table here can be dropped; the service rebuilds it from the log. The
consumer position of each partition is written in the same statement as the
rows it covers, so rows and position never disagree. There are no migrations:
a new :data:`READ_MODEL_VERSION` drops the tables and rebuilds them from the log,
which is cheaper and safer than migrating data that is derived anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson
from aiokafka import TopicPartition
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    String,
    Table,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from omnistock.events import sqlbatch
from omnistock.events.positions import PositionedWrite
from omnistock.events.readmodel import read_model_metadata

log = logging.getLogger(__name__)

#: Bump when a table below, or the stock fold's snapshot state, changes shape: the read
#: model (snapshots included) is then rebuilt from the log. 2: transfers in transit.
READ_MODEL_VERSION = 2

metadata = read_model_metadata()

stock_levels = Table(
    "stock_levels",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("location_id", String(64), primary_key=True),
    Column("on_hand", BigInteger, nullable=False),
    Column("held", BigInteger, nullable=False),
    Column("committed", BigInteger, nullable=False),
    Column("unsellable", BigInteger, nullable=False),
    Column("incoming", BigInteger, nullable=False),
    Column("safety_stock", BigInteger, nullable=False),
    Column("available", BigInteger, nullable=False, index=True),
    Column("partition", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

stock_movements = Table(
    "stock_movements",
    metadata,
    Column("partition", Integer, primary_key=True),
    Column("offset", BigInteger, primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("sku", String(64), nullable=False),
    Column("location_id", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("document_type", String(32), nullable=False),
    Column("document_id", String(64), nullable=False),
    Column("reason", String(200)),
    Column("on_hand_change", BigInteger, nullable=False),
    Column("held_change", BigInteger, nullable=False),
    Column("committed_change", BigInteger, nullable=False),
    Column("unsellable_change", BigInteger, nullable=False),
    Column("incoming_change", BigInteger, nullable=False),
    Column("on_hand", BigInteger, nullable=False),
    Column("held", BigInteger, nullable=False),
    Column("committed", BigInteger, nullable=False),
    Column("available", BigInteger, nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("event_type", String(100), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
)

reservations = Table(
    "reservations",
    metadata,
    Column("reservation_id", String(64), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("channel", String(32)),
    Column("lines", JSONB, nullable=False),
    Column("requested_lines", JSONB, nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    Column("order_id", String(64)),
    Column("request_fingerprint", String(128)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

#: How far the read model of each stock partition has got, for ``as_of`` on queries.
stock_progress = Table(
    "stock_progress",
    metadata,
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
    Column("last_event_at", DateTime(timezone=True)),
    Column("written_at", DateTime(timezone=True), nullable=False),
)

snapshots = Table(
    "snapshots",
    metadata,
    Column("consumer", String(200), primary_key=True),
    Column("topic", String(249), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
    Column("log_id", String(200), nullable=False),
    Column("state", LargeBinary, nullable=False),
)


def level_row(
    sku: str, location_id: str, figures: Mapping[str, int], partition: int, at: datetime
) -> dict[str, Any]:
    return {
        "sku": sku,
        "location_id": location_id,
        "partition": partition,
        "updated_at": at,
        **figures,
    }


#: A reservation coordinator's unit of work after a poll: the sagas it moved.
RESERVATIONS_WRITE = PositionedWrite.of(sqlbatch.replace_all(reservations))
#: A stock owner's whole unit of work after a poll: levels, movements and each
#: partition's progress.
STOCK_WRITE = PositionedWrite.of(
    sqlbatch.replace_all(stock_levels),
    sqlbatch.upsert(stock_movements),
    sqlbatch.upsert(
        stock_progress,
        key=("partition",),
        update={
            "next_offset": "excluded.next_offset",
            "last_event_at": "coalesce(excluded.last_event_at, stock_progress.last_event_at)",
            "written_at": "excluded.written_at",
        },
    ),
)


def progress_row(
    partition: int, next_offset: int, last_event_at: datetime | None, written_at: datetime
) -> dict[str, Any]:
    """``last_event_at``: the time of the last event folded."""
    return {
        "partition": partition,
        "next_offset": next_offset,
        "last_event_at": last_event_at,
        "written_at": written_at,
    }


async def save_snapshot(
    connection: AsyncConnection,
    *,
    consumer: str,
    tp: TopicPartition,
    next_offset: int,
    log_id: str,
    state: Any,
) -> None:
    statement = insert(snapshots).values(
        consumer=consumer,
        topic=tp.topic,
        partition=tp.partition,
        next_offset=next_offset,
        log_id=log_id,
        state=orjson.dumps(state),
    )
    await connection.execute(
        statement.on_conflict_do_update(
            index_elements=["consumer", "topic", "partition"],
            set_={
                "next_offset": statement.excluded.next_offset,
                "log_id": log_id,
                "state": statement.excluded.state,
            },
        )
    )


async def load_snapshot(
    connection: AsyncConnection, consumer: str, tp: TopicPartition, log_id: str
) -> tuple[int, Any] | None:
    row = (
        await connection.execute(
            select(snapshots.c.next_offset, snapshots.c.state, snapshots.c.log_id).where(
                snapshots.c.consumer == consumer,
                snapshots.c.topic == tp.topic,
                snapshots.c.partition == tp.partition,
            )
        )
    ).one_or_none()
    if row is None or row.log_id != log_id:
        return None
    return row.next_offset, orjson.loads(row.state)


async def stock_counts(connection: AsyncConnection) -> dict[str, tuple[int, int]]:
    """Per location: SKUs with a stock level, and how many of them have nothing available."""
    c = stock_levels.c
    rows = await connection.execute(
        select(
            c.location_id,
            func.count(),
            func.count().filter(c.available <= 0),
        ).group_by(c.location_id)
    )
    return {location_id: (skus, zero) for location_id, skus, zero in rows}
