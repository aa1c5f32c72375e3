"""Helpers shared by the orders tests: the inventory side of an order, and read-model hashes."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import create_async_engine

from omnistock.devstack.postgres import ensure_database
from omnistock.events.fold import Fold, state_hash
from omnistock.events.replay import replay
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import ORDERS
from omnistock.orders import projections as rm
from omnistock.orders.domain.orders import OrderBook


async def another_database(postgres_url: str, what: str) -> str:
    """A fresh database beside the test's own (each service owns one)."""
    return await ensure_database(postgres_url, f"{what}_{uuid.uuid4().hex[:12]}")


async def reserve(
    inventory: httpx.AsyncClient, rid: str, ttl_seconds: int = 900, **skus: int
) -> dict[str, Any]:
    response = await inventory.post(
        "/v1/reservations",
        json={
            "reservation_id": rid,
            "ttl_seconds": ttl_seconds,
            "lines": [{"sku": sku.replace("_", "-"), "quantity": q} for sku, q in skus.items()],
        },
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def order_body(
    order_id: str, reservation_id: str, customer: str = "cust-1", **skus: int
) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "reservation_id": reservation_id,
        "customer_id": customer,
        "payment_reference": f"psp-{order_id}",
        "lines": [{"sku": sku.replace("_", "-"), "quantity": q} for sku, q in skus.items()],
    }


async def totals(inventory: httpx.AsyncClient, sku: str) -> dict[str, int]:
    response = await inventory.get(f"/v1/stock/{sku}")
    assert response.status_code == 200, response.text
    figures: dict[str, int] = response.json()["totals"]
    return figures


async def read_model_hash(database_url: str) -> str:
    engine = create_async_engine(database_url)
    try:
        return state_hash(await rm.every_order(engine))
    finally:
        await engine.dispose()


async def replayed_hash(kafka: KafkaSettings) -> str:
    """The order read model a fold of ``orders.events`` from offset 0 yields, hashed."""
    fold = Fold(OrderBook())
    await replay(kafka, [ORDERS], fold, name="orders", progress=False)
    return state_hash(fold.projection.canonical())
