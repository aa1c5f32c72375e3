"""The pos-gateway read model in PostgreSQL: sales per store per minute, derived from the log.

The rows and the consumer position of each partition are written in one
statement, so additive updates are applied exactly once. No migrations: a new
:data:`READ_MODEL_VERSION` drops the tables, and the log rebuilds them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
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
from sqlalchemy.ext.asyncio import AsyncConnection

from omnistock.events import sqlbatch
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


#: Sales add to their minute's row (the row's position is stored in the same statement,
#: so each change is added exactly once).
ADD_SALES = sqlbatch.upsert(
    sales_minutes,
    key=("store_id", "minute", "currency"),
    update={
        column: f"pos_sales_minutes.{column} + excluded.{column}"
        for column in ("transactions", "units", "revenue")
    },
)


def sales_rows(changes: Iterable[SalesChange]) -> list[dict[str, Any]]:
    """``changes`` summed per minute (one statement may not touch a row twice)."""
    totals: dict[tuple[str, datetime, str], list[Any]] = {}
    for c in changes:
        row = totals.setdefault((c.store_id, c.minute, c.currency), [0, 0, Decimal(0)])
        row[0] += c.transactions
        row[1] += c.units
        row[2] += c.revenue
    return [
        {
            "store_id": store_id,
            "minute": minute,
            "currency": currency,
            "transactions": transactions,
            "units": units,
            "revenue": revenue,
        }
        for (store_id, minute, currency), (transactions, units, revenue) in totals.items()
    ]


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
