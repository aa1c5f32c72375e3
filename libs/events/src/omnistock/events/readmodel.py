"""A service's read model in PostgreSQL: disposable, versioned, never ahead of its log.

Every table of a read model can be dropped; the service rebuilds it from the log.
So there are no migrations: a new version number drops the tables and rebuilds
them, which is cheaper and safer than migrating data that is derived anyway. And
rows whose consumer positions the log does not back (a restarted in-memory
broker, another cluster) are emptied instead of served (rule 2).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import Column, Integer, MetaData, Table, delete, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from omnistock.events.positions import PLUMBING, why_rebuild_read_model
from omnistock.events.settings import KafkaSettings

log = logging.getLogger(__name__)

META_TABLE = "read_model_meta"
# Serialises schema changes when several replicas start at once.
_SCHEMA_LOCK = 424242


def read_model_metadata() -> MetaData:
    """A service's metadata, holding the version marker and the shared positions table."""
    metadata = MetaData()
    Table(
        META_TABLE,
        metadata,
        Column("id", Integer, primary_key=True),
        Column("version", Integer, nullable=False),
    )
    for table in PLUMBING.tables.values():
        table.to_metadata(metadata)
    return metadata


async def prepare(engine: AsyncEngine, metadata: MetaData, version: int) -> bool:
    """Create the tables; drop and recreate them when their version changed. True if emptied."""
    meta = metadata.tables[META_TABLE]
    async with engine.begin() as connection:
        await connection.execute(text(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})"))
        exists = (
            await connection.execute(text(f"SELECT to_regclass('{META_TABLE}') IS NOT NULL"))
        ).scalar_one()
        found = None
        if exists:
            found = (await connection.execute(select(meta.c.version))).scalar_one_or_none()
        if found == version:
            return False
        if found is not None:
            log.warning("read model v%s is not v%s: rebuilding from the log", found, version)
        await connection.run_sync(metadata.drop_all)
        await connection.run_sync(metadata.create_all)
        await connection.execute(insert(meta).values(id=1, version=version))
        return True


async def forget_unbacked(
    kafka: KafkaSettings, engine: AsyncEngine, metadata: MetaData, consumers: Sequence[str]
) -> str | None:
    """Empty every table when the log no longer backs the stored positions; say why."""
    reason = await why_rebuild_read_model(kafka, engine, consumers)
    if reason:
        log.warning("read model does not match the log (%s): rebuilding from offset 0", reason)
        async with engine.begin() as connection:
            for table in reversed(metadata.sorted_tables):
                if table.name != META_TABLE:
                    await connection.execute(delete(table))
    return reason
