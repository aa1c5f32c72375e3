"""The orders process: HTTP API, order projector, inventory answer relay."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import create_async_engine

from omnistock.events.admin import cluster_id
from omnistock.events.http import Health, create_app
from omnistock.events.outcomes import Outcomes
from omnistock.events.producer import EventProducer
from omnistock.events.readmodel import forget_unbacked, prepare
from omnistock.events.relay import Relay
from omnistock.events.topics import ORDERS
from omnistock.orders import projections as rm
from omnistock.orders.api import Orders, router
from omnistock.orders.handlers import ORDERS_GROUP, LogEnds, OrderProjector, answer_relay
from omnistock.orders.settings import OrdersSettings

log = logging.getLogger(__name__)

VERSION = "0.1.0"


def create_orders_app(settings: OrdersSettings | None = None) -> FastAPI:
    """The orders service's app."""
    settings = settings or OrdersSettings()
    health = Health()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        instance = settings.instance_id or f"orders-{uuid.uuid4().hex[:8]}"
        engine = create_async_engine(
            settings.database_url.get_secret_value(), pool_size=10, max_overflow=10
        )
        producer = EventProducer(settings.kafka, source=f"/omnistock/orders/{instance}")
        await producer.start()
        log_id = await cluster_id(settings.kafka)
        await prepare(engine, rm.metadata, rm.READ_MODEL_VERSION)
        # Rule 2, never serve fiction: empty the read model when the log no longer backs it.
        await forget_unbacked(settings.kafka, engine, rm.metadata, (ORDERS_GROUP,))
        projector = OrderProjector(settings.kafka, producer, engine, log_id=log_id)
        relay = answer_relay(settings.kafka, producer)
        outcomes = Outcomes(settings.kafka, [ORDERS], name="order-outcomes")
        ends = LogEnds(settings.kafka)
        app.state.orders = Orders(settings, producer, engine, outcomes, ends)
        # Group joins take a while on some brokers; they do not depend on each other.
        await asyncio.gather(
            outcomes.reader.start(), ends.start(), projector.runner.start(), relay.runner.start()
        )
        watcher = asyncio.create_task(_watch_readiness(health, projector, relay))
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await relay.runner.stop()
            await projector.runner.stop()
            await ends.stop()
            await outcomes.reader.stop()
            await producer.stop()
            await engine.dispose()

    app = create_app(
        title="omnistock orders",
        description="Orders tied to a reservation: placed, confirmed or rejected by inventory, "
        "fulfilled or cancelled. Every change is an event in the log first.",
        version=VERSION,
        health=health,
        auth=settings.auth,
        lifespan=lifespan,
    )
    app.include_router(router)
    return app


async def _watch_readiness(health: Health, projector: OrderProjector, relay: Relay) -> None:
    """Ready once the read model has caught up with the log as it was at start, and the
    relay has joined its group: until then no placed order can be answered. (A replica
    beyond the 12 partitions of inventory.reservations would never be; nobody runs that.)"""
    health.unblock("starting")
    health.block("replaying", "catching up with the log")
    await projector.ready.wait()
    await relay.runner.assigned.wait()
    health.unblock("replaying")
    log.info("orders ready")
