from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from omnistock.events.admin import admin_client
from omnistock.events.settings import KafkaSettings


@pytest.fixture
async def admin(kafka_settings: KafkaSettings) -> AsyncIterator[AIOKafkaAdminClient]:
    client = admin_client(kafka_settings)
    await client.start()
    yield client
    await client.close()
