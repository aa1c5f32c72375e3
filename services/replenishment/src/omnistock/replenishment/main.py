"""The replenishment process: HTTP API, stock watcher, planner."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import create_async_engine

from omnistock.events.admin import cluster_id
from omnistock.events.http import Health, create_app
from omnistock.events.locations import LocationsView
from omnistock.events.producer import EventProducer
from omnistock.events.readmodel import forget_unbacked, prepare
from omnistock.replenishment import projections as rm
from omnistock.replenishment.api import Replenishment, router
from omnistock.replenishment.handlers import (
    PLANNER_GROUP,
    WATCHER_GROUP,
    Planner,
    RulesView,
    StockWatcher,
)
from omnistock.replenishment.settings import ReplenishmentSettings

log = logging.getLogger(__name__)

VERSION = "0.1.0"
#: How often the gauges are recomputed (the oldest request ages by the second).
METRICS_INTERVAL_S = 1.0


def create_replenishment_app(settings: ReplenishmentSettings | None = None) -> FastAPI:
    """The replenishment service's app."""
    settings = settings or ReplenishmentSettings()
    health = Health()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        instance = settings.instance_id or f"replenishment-{uuid.uuid4().hex[:8]}"
        engine = create_async_engine(
            settings.database_url.get_secret_value(), pool_size=5, max_overflow=5
        )
        producer = EventProducer(settings.kafka, source=f"/omnistock/replenishment/{instance}")
        await producer.start()
        log_id = await cluster_id(settings.kafka)
        await prepare(engine, rm.metadata, rm.READ_MODEL_VERSION)
        # Rule 2, never serve fiction: empty the read model when the log no longer backs it.
        await forget_unbacked(settings.kafka, engine, rm.metadata, (PLANNER_GROUP, WATCHER_GROUP))
        locations = LocationsView(settings.kafka)
        rules = RulesView(settings.kafka)
        watcher = StockWatcher(
            settings.kafka,
            producer,
            engine,
            rules,
            log_id=log_id,
            velocity_window_days=settings.velocity_window_days,
        )
        planner = Planner(settings.kafka, producer, engine, log_id=log_id)
        app.state.replenishment = Replenishment(settings, producer, engine, locations)
        await asyncio.gather(locations.reader.start(), rules.reader.start())
        # The watcher reports ruled pairs only: it must know every rule before it reads stock.
        await rules.reader.caught_up()
        await asyncio.gather(watcher.runner.start(), planner.runner.start())
        background = [
            asyncio.create_task(_watch_readiness(health, watcher, planner)),
            asyncio.create_task(_refresh_metrics(planner)),
        ]
        try:
            yield
        finally:
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await planner.runner.stop()
            await watcher.stop()
            await rules.reader.stop()
            await locations.reader.stop()
            await producer.stop()
            await engine.dispose()

    app = create_app(
        title="omnistock replenishment",
        description="Reorder rules per SKU and location, low-stock detection from the stock "
        "log, and replenishment requests from request to receipt.",
        version=VERSION,
        health=health,
        auth=settings.auth,
        lifespan=lifespan,
    )
    app.include_router(router)
    return app


async def _watch_readiness(health: Health, watcher: StockWatcher, planner: Planner) -> None:
    """Ready once both the watcher and the planner have caught up with the log as it was
    at start: before that, requests and levels served would be stale."""
    health.unblock("starting")
    health.block("replaying", "catching up with inventory.stock and replenishment.events")
    await asyncio.gather(watcher.ready.wait(), planner.ready.wait())
    health.unblock("replaying")
    log.info("replenishment ready")


async def _refresh_metrics(planner: Planner) -> None:
    while True:
        try:
            planner.refresh_metrics(time.time())
        except Exception:
            log.exception("could not refresh the replenishment gauges")
        await asyncio.sleep(METRICS_INTERVAL_S)  # a timer: the oldest request ages
