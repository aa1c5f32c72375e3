"""Read-model writes fenced by their consumer positions, against the real PostgreSQL:
a member that finishes a batch after another has written further writes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Collection

import pytest
from aiokafka import TopicPartition
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from omnistock.devstack.waiting import eventually
from omnistock.events import sqlbatch
from omnistock.events.positions import (
    PLUMBING,
    PositionedWrite,
    claim_positions,
    consumer_positions,
    load_positions,
)

metadata = MetaData()
levels = Table(
    "fenced_levels",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("partition", Integer, nullable=False),
    Column("on_hand", BigInteger, nullable=False),
)
WRITE = PositionedWrite.of(sqlbatch.replace_all(levels))
CONSUMER = "stock-owner"
P0, P1 = TopicPartition("stock", 0), TopicPartition("stock", 1)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url)
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
        await connection.run_sync(PLUMBING.create_all)
    await claim_positions(engine, CONSUMER, [P0, P1], "log-1")
    yield engine
    await engine.dispose()


Rows = Callable[[Collection[TopicPartition]], dict[Table, list[dict[str, object]]]]


def rows_of(
    figures: dict[TopicPartition, dict[str, int]],
) -> tuple[list[set[TopicPartition]], Rows]:
    """A ``rows`` callback writing ``figures`` (sku → on_hand per partition), and the
    partition sets it was asked for."""
    asked: list[set[TopicPartition]] = []

    def rows(partitions: Collection[TopicPartition]) -> dict[Table, list[dict[str, object]]]:
        asked.append(set(partitions))
        return {
            levels: [
                {"sku": sku, "partition": tp.partition, "on_hand": on_hand}
                for tp in partitions
                for sku, on_hand in figures[tp].items()
            ]
        }

    return asked, rows


async def write(
    engine: AsyncEngine,
    next_offsets: dict[TopicPartition, int],
    figures: dict[TopicPartition, dict[str, int]],
) -> tuple[set[TopicPartition], list[set[TopicPartition]]]:
    asked, rows = rows_of(figures)
    overtaken = await WRITE.execute(
        sqlbatch.autocommit(engine),
        consumer=CONSUMER,
        log_id="log-1",
        next_offsets=next_offsets,
        rows=rows,
    )
    return overtaken, asked


async def state(engine: AsyncEngine) -> tuple[dict[str, int], dict[TopicPartition, int]]:
    async with engine.connect() as connection:
        on_hand = {
            sku: n for sku, n in await connection.execute(select(levels.c.sku, levels.c.on_hand))
        }
        return on_hand, (await load_positions(connection, CONSUMER)).offsets


async def test_a_writer_behind_the_stored_position_writes_nothing(engine: AsyncEngine) -> None:
    assert await write(engine, {P0: 10}, {P0: {"A": 60}}) == (set(), [{P0}])
    # The stale member folded to 5 only: its A is older, and its B did not exist at 10 yet.
    overtaken, _ = await write(engine, {P0: 5}, {P0: {"A": 40, "B": 1}})
    assert overtaken == {P0}
    assert await state(engine) == ({"A": 60}, {P0: 10, P1: 0})
    # Writing exactly as far as the stored position is no news either.
    assert (await write(engine, {P0: 10}, {P0: {"A": 0}}))[0] == {P0}
    assert await state(engine) == ({"A": 60}, {P0: 10, P1: 0})


async def test_the_partitions_still_ahead_are_written_without_the_overtaken_ones(
    engine: AsyncEngine,
) -> None:
    await write(engine, {P0: 10}, {P0: {"A": 60}})
    overtaken, asked = await write(engine, {P0: 5, P1: 3}, {P0: {"A": 40}, P1: {"Z": 7}})
    assert overtaken == {P0}
    assert asked == [{P0, P1}, {P1}]
    assert await state(engine) == ({"A": 60, "Z": 7}, {P0: 10, P1: 3})


async def test_a_writer_waiting_for_the_lock_sees_the_position_it_waited_for(
    engine: AsyncEngine,
) -> None:
    """The stale writer's statement starts while the new owner's is uncommitted: it must
    judge by the position the new owner commits, not by the one its snapshot saw."""
    _, rows = rows_of({P0: {"A": 60}})
    async with engine.connect() as new_owner:
        await new_owner.begin()
        await WRITE.batch.execute(
            new_owner,
            {
                **rows([P0]),
                consumer_positions: [
                    {
                        "consumer": CONSUMER,
                        "topic": P0.topic,
                        "partition": P0.partition,
                        "next_offset": 10,
                        "log_id": "log-1",
                    }
                ],
            },
        )
        stale = asyncio.create_task(write(engine, {P0: 5}, {P0: {"A": 40}}))

        async def stale_writer_waits() -> bool:
            assert not stale.done(), stale.result()
            return await waiting_for_a_lock(engine)

        await eventually(stale_writer_waits, timeout=30, message="the stale writer waits")
        await new_owner.commit()
    async with asyncio.timeout(30):
        overtaken, _ = await stale
    assert overtaken == {P0}
    assert await state(engine) == ({"A": 60}, {P0: 10, P1: 0})


async def waiting_for_a_lock(engine: AsyncEngine) -> bool:
    async with engine.connect() as connection:
        waiting = await connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
        )
        return bool(waiting.scalar_one())


async def test_claiming_keeps_stored_positions_and_adds_zero_for_new_partitions(
    engine: AsyncEngine,
) -> None:
    await write(engine, {P0: 10}, {P0: {"A": 60}})
    p2 = TopicPartition("stock", 2)
    assert await claim_positions(engine, CONSUMER, [P0, p2], "log-1") == {P0: 10, p2: 0}
