"""The pos-gateway process: HTTP API, the ledger every replica folds, the sales projector."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import create_async_engine

from omnistock.events.admin import cluster_id
from omnistock.events.envelope import utcnow
from omnistock.events.http import Health, create_app
from omnistock.events.producer import EventProducer
from omnistock.events.readmodel import forget_unbacked, prepare
from omnistock.pos_gateway import projections as rm
from omnistock.pos_gateway.api import PosGateway, router
from omnistock.pos_gateway.handlers import SALES_GROUP, LedgerView, SalesProjector
from omnistock.pos_gateway.settings import PosGatewaySettings

log = logging.getLogger(__name__)

VERSION = "0.1.0"


def create_pos_gateway_app(
    settings: PosGatewaySettings | None = None, *, clock: Callable[[], datetime] = utcnow
) -> FastAPI:
    """The pos-gateway's app. ``clock`` judges future timestamps (tests move it)."""
    settings = settings or PosGatewaySettings()
    health = Health()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        instance = settings.instance_id or f"pos-gateway-{uuid.uuid4().hex[:8]}"
        engine = create_async_engine(
            settings.database_url.get_secret_value(), pool_size=5, max_overflow=5
        )
        producer = EventProducer(settings.kafka, source=f"/omnistock/pos-gateway/{instance}")
        await producer.start()
        log_id = await cluster_id(settings.kafka)
        await prepare(engine, rm.metadata, rm.READ_MODEL_VERSION)
        # Rule 2, never serve fiction: empty the read model when the log no longer backs it.
        await forget_unbacked(settings.kafka, engine, rm.metadata, [SALES_GROUP])
        window = settings.resend_window
        view = LedgerView(settings.kafka, resend_window=window)
        sales = SalesProjector(
            settings.kafka, producer, engine, log_id=log_id, resend_window=window
        )
        app.state.pos_gateway = PosGateway(settings, producer, engine, view, clock)
        await asyncio.gather(view.reader.start(), sales.runner.start())
        watcher = asyncio.create_task(_watch_readiness(health, view))
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await sales.runner.stop()
            await view.reader.stop()
            await producer.stop()
            await engine.dispose()

    app = create_app(
        title="omnistock pos-gateway",
        description="Store POS transactions (sales, returns, voids) into the log, once each: "
        "per-item answers, terminal sequence gaps, sales per store per minute.",
        version=VERSION,
        health=health,
        auth=settings.auth,
        lifespan=lifespan,
    )
    app.include_router(router)
    return app


async def _watch_readiness(health: Health, view: LedgerView) -> None:
    """Ready once the ledger holds every transaction in the log at start: before that, a
    resent transaction could not be recognised as a duplicate."""
    health.unblock("starting")
    health.block("replaying", "folding pos.transactions")
    await view.reader.caught_up()
    health.unblock("replaying")
    log.info("pos-gateway ready")
