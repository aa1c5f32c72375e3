"""Several writes as one statement, against the real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    MetaData,
    Numeric,
    String,
    Table,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from omnistock.events import sqlbatch

metadata = MetaData()
# Reserved words as column names: the statement must quote them.
levels = Table(
    "levels",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("offset", BigInteger, nullable=False),
    Column("seen_at", DateTime(timezone=True)),
)
ledger = Table(
    "ledger",
    metadata,
    Column("partition", BigInteger, primary_key=True),
    Column("note", String(16), nullable=False),
)

totals = Table(
    "totals",
    metadata,
    Column("store_id", String(16), primary_key=True),
    Column("revenue", Numeric(20, 4), nullable=False),
)

WRITE = sqlbatch.one_statement(
    sqlbatch.upsert(
        levels,
        key=("sku",),
        update={
            "offset": "excluded.offset",
            "seen_at": "coalesce(excluded.seen_at, levels.seen_at)",
        },
    ),
    sqlbatch.upsert(ledger),
)
T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url)
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    yield sqlbatch.autocommit(engine)
    await engine.dispose()


async def contents(
    engine: AsyncEngine,
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    async with engine.connect() as connection:
        return (
            [tuple(r) for r in await connection.execute(select(levels).order_by(levels.c.sku))],
            [
                tuple(r)
                for r in await connection.execute(select(ledger).order_by(ledger.c.partition))
            ],
        )


async def write(
    engine: AsyncEngine, level_rows: list[dict[str, object]], ledger_rows: list[dict[str, object]]
) -> None:
    async with engine.connect() as connection:
        await WRITE.execute(connection, {levels: level_rows, ledger: ledger_rows})


async def test_rows_are_inserted_updated_on_their_key_and_left_alone_without_one(
    engine: AsyncEngine,
) -> None:
    await write(
        engine,
        [{"sku": "A", "offset": 1, "seen_at": T0}, {"sku": "B", "offset": 2, "seen_at": None}],
        [{"partition": 0, "note": "first"}],
    )
    await write(
        engine,
        [{"sku": "A", "offset": 5, "seen_at": None}],
        [{"partition": 0, "note": "second"}, {"partition": 1, "note": "new"}],
    )
    assert await contents(engine) == (
        # The update's own expression kept A's time; B was not in the second write.
        [("A", 5, T0), ("B", 2, None)],
        # No key: the existing row stays as it was.
        [(0, "first"), (1, "new")],
    )


async def test_nothing_is_written_when_one_part_fails(engine: AsyncEngine) -> None:
    with pytest.raises(IntegrityError):
        await write(
            engine, [{"sku": "A", "offset": 1, "seen_at": T0}], [{"partition": 0, "note": None}]
        )
    assert await contents(engine) == ([], [])


async def test_a_naive_time_is_utc_whatever_the_session_time_zone(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SET TIME ZONE 'America/New_York'"))
        await WRITE.execute(
            connection, {levels: [{"sku": "A", "offset": 1, "seen_at": T0.replace(tzinfo=None)}]}
        )
    assert (await contents(engine))[0] == [("A", 1, T0)]


async def test_decimals_are_exact_and_an_update_can_add_to_the_row(engine: AsyncEngine) -> None:
    add = sqlbatch.one_statement(
        sqlbatch.upsert(
            totals, key=("store_id",), update={"revenue": "totals.revenue + excluded.revenue"}
        )
    )
    for amount in ("0.1", "0.2"):
        async with engine.connect() as connection:
            await add.execute(connection, {totals: [{"store_id": "S", "revenue": Decimal(amount)}]})
    async with engine.connect() as connection:
        assert (await connection.execute(select(totals.c.revenue))).scalar_one() == Decimal("0.3")


async def test_no_rows_write_nothing(engine: AsyncEngine) -> None:
    await write(engine, [], [])
    assert await contents(engine) == ([], [])


async def test_a_batch_names_its_tables_once_and_takes_no_others(engine: AsyncEngine) -> None:
    with pytest.raises(ValueError, match="one write per table"):
        sqlbatch.one_statement(sqlbatch.upsert(ledger), sqlbatch.upsert(ledger))
    with pytest.raises(ValueError, match="totals"):
        async with engine.connect() as connection:
            await WRITE.execute(connection, {totals: []})
