from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from omnistock.devstack.postgres import drop_database, ensure_database
from omnistock.devstack.serving import serving
from omnistock.events.admin import ensure_topics
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import TOPICS
from omnistock.inventory.main import create_inventory_app
from omnistock.inventory.settings import InventorySettings
from omnistock.pos_gateway.main import create_pos_gateway_app
from omnistock.pos_gateway.settings import PosGatewaySettings


@pytest.fixture
async def provisioned(kafka_settings: KafkaSettings) -> KafkaSettings:
    await ensure_topics(kafka_settings, TOPICS)
    return kafka_settings


@pytest.fixture
def make_settings(
    provisioned: KafkaSettings, database_url: str
) -> Callable[..., PosGatewaySettings]:
    def make(**overrides: Any) -> PosGatewaySettings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "kafka": provisioned,
            "instance_id": "pos-gateway-test-0",
            **overrides,
        }
        return PosGatewaySettings(**values)

    return make


@pytest.fixture
async def gateway(
    make_settings: Callable[..., PosGatewaySettings],
) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_pos_gateway_app(make_settings())) as client:
        yield client


@pytest.fixture
async def inventory(
    provisioned: KafkaSettings, postgres_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    """The real inventory service beside the gateway, in a database of its own."""
    name = f"inventory_{uuid.uuid4().hex[:12]}"
    url = await ensure_database(postgres_url, name)
    settings = InventorySettings(
        database_url=url, kafka=provisioned, instance_id="inventory-for-pos-0"
    )
    try:
        async with serving(create_inventory_app(settings)) as client:
            yield client
    finally:
        await drop_database(postgres_url, name)
