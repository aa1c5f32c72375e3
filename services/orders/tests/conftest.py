from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from inventory_support import Clock
from orders_support import another_database

from omnistock.devstack.serving import serving
from omnistock.events.admin import ensure_topics
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import TOPICS
from omnistock.inventory.main import create_inventory_app
from omnistock.inventory.settings import InventorySettings
from omnistock.orders.main import create_orders_app
from omnistock.orders.settings import OrdersSettings


@pytest.fixture
async def provisioned(kafka_settings: KafkaSettings) -> KafkaSettings:
    await ensure_topics(kafka_settings, TOPICS)
    return kafka_settings


@pytest.fixture
async def inventory_database(postgres_url: str) -> str:
    return await another_database(postgres_url, "inventory")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def inventory(
    provisioned: KafkaSettings, inventory_database: str, clock: Clock
) -> AsyncIterator[httpx.AsyncClient]:
    settings = InventorySettings(
        database_url=inventory_database,
        kafka=provisioned,
        instance_id="inventory-test-0",
        expiry_interval_s=0.05,
    )
    async with serving(create_inventory_app(settings, clock=clock)) as client:
        yield client


@pytest.fixture
def make_orders_settings(
    provisioned: KafkaSettings, database_url: str
) -> Callable[..., OrdersSettings]:
    def make(**overrides: Any) -> OrdersSettings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "kafka": provisioned,
            "instance_id": "orders-test-0",
            **overrides,
        }
        return OrdersSettings(**values)

    return make


@pytest.fixture
async def orders(
    make_orders_settings: Callable[..., OrdersSettings],
) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_orders_app(make_orders_settings())) as client:
        yield client
