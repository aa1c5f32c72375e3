"""The orders read model in PostgreSQL: one row per order, derived from the log alone.

Rows and the consumer position of their partition are written in one
statement. No migrations: a new :data:`READ_MODEL_VERSION` drops the tables
and the service rebuilds them from the log (:mod:`omnistock.events.readmodel`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, DateTime, String, Table, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine

from omnistock.events.readmodel import read_model_metadata

#: Bump when a table below changes shape: the read model is then rebuilt from the log.
READ_MODEL_VERSION = 1

metadata = read_model_metadata()

orders = Table(
    "orders",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("status", String(32), nullable=False, index=True),
    Column("reservation_id", String(64), nullable=False),
    Column("customer_id", String(64), nullable=False, index=True),
    Column("payment_reference", String(128), nullable=False),
    Column("lines", JSONB, nullable=False),
    Column("shipped", JSONB, nullable=False),
    Column("reject_reason", String(64)),
    Column("cancel_reason", String(200)),
    Column("timeline", JSONB, nullable=False),
    Column("placed_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

_TIMES = ("placed_at", "updated_at")


def from_columns(record: Any) -> dict[str, Any]:
    """A stored row in the shape of :meth:`Order.row` (for state hashes and the API)."""
    row = {c.name: getattr(record, c.name) for c in orders.columns}
    return {**row, **{k: row[k].isoformat() for k in _TIMES}}


async def every_order(engine: AsyncEngine) -> list[dict[str, Any]]:
    """The whole read model, by order id: what a replay's state hash is compared with."""
    async with engine.connect() as connection:
        records = (await connection.execute(select(orders).order_by(orders.c.order_id))).all()
    return [from_columns(r) for r in records]
