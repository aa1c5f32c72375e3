from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from omnistock.devstack.postgres import ensure_database
from omnistock.devstack.serving import serving
from omnistock.events.admin import ensure_topics
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import TOPICS
from omnistock.inventory.main import create_inventory_app
from omnistock.inventory.settings import InventorySettings
from omnistock.pos_gateway.main import create_pos_gateway_app
from omnistock.pos_gateway.settings import PosGatewaySettings
from omnistock.replenishment.settings import ReplenishmentSettings


@pytest.fixture
async def provisioned(kafka_settings: KafkaSettings) -> KafkaSettings:
    await ensure_topics(kafka_settings, TOPICS)
    return kafka_settings


@pytest.fixture
def new_database(postgres_url: str) -> Callable[[str], Any]:
    """A fresh database beside the test's own (each service owns one)."""

    async def make(what: str) -> str:
        return await ensure_database(postgres_url, f"{what}_{uuid.uuid4().hex[:12]}")

    return make


@pytest.fixture
def make_settings(
    provisioned: KafkaSettings, database_url: str
) -> Callable[..., ReplenishmentSettings]:
    def make(**overrides: Any) -> ReplenishmentSettings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "kafka": provisioned,
            "instance_id": "replenishment-test-0",
            **overrides,
        }
        return ReplenishmentSettings(**values)

    return make


@pytest.fixture
async def inventory(
    provisioned: KafkaSettings, new_database: Callable[[str], Any]
) -> AsyncIterator[httpx.AsyncClient]:
    settings = InventorySettings(
        database_url=await new_database("inventory"),
        kafka=provisioned,
        instance_id="inventory-test-0",
    )
    async with serving(create_inventory_app(settings)) as client:
        yield client


@pytest.fixture
async def pos(
    provisioned: KafkaSettings, new_database: Callable[[str], Any]
) -> AsyncIterator[httpx.AsyncClient]:
    settings = PosGatewaySettings(
        database_url=await new_database("pos"), kafka=provisioned, instance_id="pos-test-0"
    )
    async with serving(create_pos_gateway_app(settings)) as client:
        yield client
