"""The inventory process: HTTP API, partition owner, saga coordinator, translator."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from omnistock.events import sqlbatch
from omnistock.events.admin import cluster_id
from omnistock.events.envelope import utcnow
from omnistock.events.http import Health, create_app
from omnistock.events.outcomes import Outcomes
from omnistock.events.producer import EventProducer
from omnistock.events.readmodel import forget_unbacked, prepare
from omnistock.events.topics import INVENTORY_RESERVATIONS
from omnistock.inventory import metrics
from omnistock.inventory import projections as rm
from omnistock.inventory.api import Inventory, router
from omnistock.inventory.handlers import (
    RESERVATIONS_GROUP,
    STOCK_GROUP,
    LocationsView,
    ReservationCoordinator,
    StockOwner,
    Translator,
)
from omnistock.inventory.settings import InventorySettings

log = logging.getLogger(__name__)

VERSION = "0.1.0"


def create_inventory_app(
    settings: InventorySettings | None = None, *, clock: Callable[[], datetime] = utcnow
) -> FastAPI:
    """The inventory service's app. ``clock`` is when holds expire (tests move it)."""
    settings = settings or InventorySettings()
    health = Health()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        instance = settings.instance_id or f"inventory-{uuid.uuid4().hex[:8]}"
        engine = create_async_engine(
            settings.database_url.get_secret_value(), pool_size=10, max_overflow=10
        )
        producer = EventProducer(settings.kafka, source=f"/omnistock/inventory/{instance}")
        await producer.start()
        log_id = await cluster_id(settings.kafka)
        await prepare(engine, rm.metadata, rm.READ_MODEL_VERSION)
        # Rule 2, never serve fiction: empty the read model when the log no longer backs it.
        await forget_unbacked(
            settings.kafka, engine, rm.metadata, (STOCK_GROUP, RESERVATIONS_GROUP)
        )
        locations = LocationsView(settings.kafka)
        outcomes = Outcomes(settings.kafka, [INVENTORY_RESERVATIONS], name="outcomes")
        owner = StockOwner(
            settings.kafka,
            producer,
            engine,
            log_id=log_id,
            snapshot_every=settings.snapshot_every,
            expiry_interval_s=settings.expiry_interval_s,
            clock=clock,
        )
        coordinator = ReservationCoordinator(
            settings.kafka,
            producer,
            engine,
            log_id=log_id,
            held_verdict_margin=timedelta(seconds=settings.held_verdict_margin_s),
            clock=clock,
        )
        translator = Translator(settings.kafka, producer)
        # The API only reads, one statement at a time: no BEGIN/ROLLBACK round trips.
        reads = sqlbatch.autocommit(engine)
        app.state.inventory = Inventory(settings, producer, reads, locations, outcomes)
        app.state.components = {"owner": owner, "coordinator": coordinator}
        # Group joins take a while on some brokers; they do not depend on each other.
        await asyncio.gather(
            locations.reader.start(),
            outcomes.reader.start(),
            owner.start(),
            coordinator.runner.start(),
            translator.runner.start(),
        )
        watcher = asyncio.create_task(_watch_readiness(health, locations, owner, coordinator))
        gauges = asyncio.create_task(
            _count_stock(engine, locations, settings.stock_gauges_interval_s)
        )
        try:
            yield
        finally:
            for task in (watcher, gauges):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await translator.runner.stop()
            await coordinator.runner.stop()
            await owner.stop()
            await outcomes.reader.stop()
            await locations.reader.stop()
            await producer.stop()
            await engine.dispose()

    app = create_app(
        title="omnistock inventory",
        description="Stock per (sku, location), reservations with holds, receipts, "
        "adjustments, and cross-store stock queries. Every write is an event in the log first.",
        version=VERSION,
        health=health,
        auth=settings.auth,
        lifespan=lifespan,
    )
    app.include_router(router)
    return app


async def _watch_readiness(
    health: Health,
    locations: LocationsView,
    owner: StockOwner,
    coordinator: ReservationCoordinator,
) -> None:
    """Ready once every view has caught up with the log as it was at start. Later lag does
    not make the service unready: queries still answer and say how fresh they are."""
    health.unblock("starting")
    health.block("replaying", "catching up with the log")
    await locations.reader.caught_up()
    await owner.ready.wait()
    await coordinator.ready.wait()
    health.unblock("replaying")
    log.info("inventory ready")


async def _count_stock(engine: AsyncEngine, locations: LocationsView, interval_s: float) -> None:
    """Recount the stock gauges from the read model: every replica reads the same rows, so
    each reports the whole picture (dashboards and alerts take the max over replicas)."""
    while True:
        try:
            async with engine.connect() as connection:
                counts = await rm.stock_counts(connection)
            metrics.publish_stock_counts(counts, locations.locations)
        except Exception:
            log.exception("could not count stock for the gauges; trying again")
        await asyncio.sleep(interval_s)  # a timer: gauges are sampled, not waited on
