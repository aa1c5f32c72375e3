from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from inventory_support import Clock

from omnistock.devstack.serving import serving
from omnistock.events.admin import ensure_topics
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import TOPICS
from omnistock.inventory.main import create_inventory_app
from omnistock.inventory.settings import InventorySettings


@pytest.fixture
async def provisioned(kafka_settings: KafkaSettings) -> KafkaSettings:
    await ensure_topics(kafka_settings, TOPICS)
    return kafka_settings


@pytest.fixture
def make_settings(
    provisioned: KafkaSettings, database_url: str
) -> Callable[..., InventorySettings]:
    def make(**overrides: Any) -> InventorySettings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "kafka": provisioned,
            "instance_id": "inventory-test-0",
            "expiry_interval_s": 0.05,
            **overrides,
        }
        return InventorySettings(**values)

    return make


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def inventory(
    make_settings: Callable[..., InventorySettings], clock: Clock
) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_inventory_app(make_settings(), clock=clock)) as client:
        yield client
