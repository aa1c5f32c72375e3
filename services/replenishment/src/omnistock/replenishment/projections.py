"""The replenishment read model in PostgreSQL, derived from the log alone.

* ``reorder_rules``, ``stock_levels``, ``replenishments``: the planner's fold of
  ``replenishment.events``, one row per rule / observed (sku, location) / request;
* ``demand_days``: units demanded per (sku, location, day), added up by the stock
  watcher from ``inventory.stock`` (suggestions read it).

Rows and the consumer position of their partition are written in one statement.
No migrations: a new :data:`READ_MODEL_VERSION` drops the tables and the service
rebuilds them from the log (:mod:`omnistock.events.readmodel`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Float,
    Integer,
    String,
    Table,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from omnistock.events import sqlbatch
from omnistock.events.readmodel import read_model_metadata
from omnistock.replenishment.domain.watch import Demand

#: Bump when a table below changes shape: the read model is then rebuilt from the log.
READ_MODEL_VERSION = 1

metadata = read_model_metadata()

rules = Table(
    "reorder_rules",
    metadata,
    Column("location_id", String(64), primary_key=True),
    Column("sku", String(64), primary_key=True),
    Column("reorder_point", Integer, nullable=False),
    Column("order_up_to", Integer, nullable=False),
    Column("lead_time_hours", Integer, nullable=False),
    Column("source_location_id", String(64), nullable=False),
    Column("safety_stock", Integer, nullable=False),
    Column("pack_size", Integer, nullable=False),
    Column("set_at", DateTime(timezone=True), nullable=False),
)

levels = Table(
    "stock_levels",
    metadata,
    Column("location_id", String(64), primary_key=True),
    Column("sku", String(64), primary_key=True),
    Column("available", Integer, nullable=False),
    Column("inbound", Integer, nullable=False),
    Column("velocity_per_day", Float, nullable=False),
    Column("stock_partition", Integer, nullable=False),
    Column("stock_offset", BigInteger, nullable=False),
    Column("observed_at", DateTime(timezone=True), nullable=False),
)

replenishments = Table(
    "replenishments",
    metadata,
    Column("replenishment_id", String(64), primary_key=True),
    Column("location_id", String(64), nullable=False, index=True),
    Column("sku", String(64), nullable=False),
    Column("source_location_id", String(64), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("quantity", Integer, nullable=False),
    Column("available", Integer, nullable=False),
    Column("inbound", Integer, nullable=False),
    Column("reorder_point", Integer, nullable=False),
    Column("order_up_to", Integer, nullable=False),
    Column("velocity_per_day", Float, nullable=False),
    Column("days_of_cover", Float),
    Column("dispatched_quantity", Integer, nullable=False),
    Column("received_quantity", Integer, nullable=False),
    Column("receipts", JSONB, nullable=False),
    Column("requested_at", DateTime(timezone=True), nullable=False),
    Column("dispatched_at", DateTime(timezone=True)),
    Column("received_at", DateTime(timezone=True)),
)

demand_days = Table(
    "demand_days",
    metadata,
    Column("location_id", String(64), primary_key=True),
    Column("sku", String(64), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("units", BigInteger, nullable=False),
)

_TIMES = {
    "reorder_rules": ("set_at",),
    "stock_levels": ("observed_at",),
    "replenishments": ("requested_at", "dispatched_at", "received_at"),
}
TABLES = {"rules": rules, "levels": levels, "replenishments": replenishments}


def from_columns(table: Table, record: Any) -> dict[str, Any]:
    """A stored row in the shape the fold gives it (for the API and state hashes)."""
    row = {c.name: getattr(record, c.name) for c in table.columns}
    return {**row, **{k: row[k].isoformat() if row[k] else None for k in _TIMES[table.name]}}


#: Demand adds to its day's row (the row's position is stored in the same statement, so
#: each unit is added exactly once).
ADD_DEMAND = sqlbatch.upsert(
    demand_days,
    key=("location_id", "sku", "day"),
    update={"units": "demand_days.units + excluded.units"},
)


def demand_rows(demand: Iterable[Demand]) -> list[dict[str, Any]]:
    """Units summed per day (one statement may not touch a row twice)."""
    totals: dict[tuple[str, str, date], int] = {}
    for d in demand:
        key = (d.location_id, d.sku, d.day)
        totals[key] = totals.get(key, 0) + d.units
    return [
        {"location_id": loc, "sku": sku, "day": day, "units": units}
        for (loc, sku, day), units in totals.items()
    ]


async def demand_since(
    connection: AsyncConnection, location_id: str, since: date
) -> list[tuple[str, int]]:
    """Units demanded per SKU at ``location_id`` from ``since`` on, for SKUs without a rule."""
    ruled = select(rules.c.sku).where(rules.c.location_id == location_id)
    records = (
        await connection.execute(
            select(demand_days.c.sku, func.sum(demand_days.c.units).label("units"))
            .where(
                demand_days.c.location_id == location_id,
                demand_days.c.day >= since,
                demand_days.c.sku.not_in(ruled),
            )
            .group_by(demand_days.c.sku)
        )
    ).all()
    return [(r.sku, int(r.units)) for r in records]


async def observed_offsets(
    connection: AsyncConnection, stock_partition: int
) -> dict[tuple[str, str], int]:
    """(sku, location) → offset of the last observation the planner holds, for one stock
    partition (what the watcher need not observe again)."""
    records = (
        await connection.execute(
            select(levels.c.sku, levels.c.location_id, levels.c.stock_offset).where(
                levels.c.stock_partition == stock_partition
            )
        )
    ).all()
    return {(r.sku, r.location_id): r.stock_offset for r in records}


async def every_row(engine: AsyncEngine) -> dict[str, list[dict[str, Any]]]:
    """The planner's whole read model in key order: what a replay's state hash is compared
    with (the shape of :meth:`ReplenishmentBook.rows`)."""
    order = {
        "rules": (rules.c.location_id, rules.c.sku),
        "levels": (levels.c.location_id, levels.c.sku),
        "replenishments": (replenishments.c.replenishment_id,),
    }
    result: dict[str, list[dict[str, Any]]] = {}
    async with engine.connect() as connection:
        for name, table in TABLES.items():
            records = (await connection.execute(select(table).order_by(*order[name]))).all()
            result[name] = [from_columns(table, r) for r in records]
    return result
