"""The pos-gateway read model in PostgreSQL: sales per store per minute, derived from the log.

The rows and the consumer position of each partition are written in one
transaction, so additive updates are applied exactly once. No migrations: a new
:data:`READ_MODEL_VERSION` drops the tables, and the log rebuilds them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Numeric,
    String,
    Table,
    select,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from omnistock.events.readmodel import read_model_metadata
from omnistock.pos_gateway.domain.ledger import SalesChange

log = logging.getLogger(__name__)

#: Bump when a table below changes shape: the read model is then rebuilt from the log.
READ_MODEL_VERSION = 1
metadata = read_model_metadata()

sales_minutes = Table(
    "pos_sales_minutes",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("minute", DateTime(timezone=True), primary_key=True),
    Column("currency", String(3), primary_key=True),
    #: Sales and returns count +1, a void -1 (in the voided transaction's minute).
    Column("transactions", BigInteger, nullable=False),
    #: Net units sold: sales minus returns.
    Column("units", BigInteger, nullable=False),
    Column("revenue", Numeric(20, 4), nullable=False),
)


async def add_sales(connection: AsyncConnection, changes: Sequence[SalesChange]) -> None:
    """Add ``changes`` to the minutes they belong to (one statement may not touch a row twice,
    so changes to the same minute are summed first)."""
    if not changes:
        return
    totals: dict[tuple[str, datetime, str], list[Any]] = {}
    for c in changes:
        row = totals.setdefault((c.store_id, c.minute, c.currency), [0, 0, Decimal(0)])
        row[0] += c.transactions
        row[1] += c.units
        row[2] += c.revenue
    statement = insert(sales_minutes)
    await connection.execute(
        statement.on_conflict_do_update(
            index_elements=["store_id", "minute", "currency"],
            set_={
                column: sales_minutes.c[column] + statement.excluded[column]
                for column in ("transactions", "units", "revenue")
            },
        ),
        [
            {
                "store_id": store_id,
                "minute": minute,
                "currency": currency,
                "transactions": transactions,
                "units": units,
                "revenue": revenue,
            }
            for (store_id, minute, currency), (transactions, units, revenue) in totals.items()
        ],
    )


async def sales_since(
    connection: AsyncConnection, store_id: str, since: datetime
) -> list[tuple[datetime, str, int, int, Decimal]]:
    rows = (
        await connection.execute(
            select(
                sales_minutes.c.minute,
                sales_minutes.c.currency,
                sales_minutes.c.transactions,
                sales_minutes.c.units,
                sales_minutes.c.revenue,
            )
            .where(sales_minutes.c.store_id == store_id, sales_minutes.c.minute >= since)
            .order_by(sales_minutes.c.minute, sales_minutes.c.currency)
        )
    ).all()
    return [(r.minute, r.currency, r.transactions, r.units, r.revenue) for r in rows]
