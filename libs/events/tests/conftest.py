from __future__ import annotations

import pytest

from omnistock.events.admin import ensure_topics
from omnistock.events.producer import EventProducer
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import TOPICS


@pytest.fixture
async def topics(kafka_settings: KafkaSettings) -> KafkaSettings:
    """Every registry topic, created under this test's prefix."""
    await ensure_topics(kafka_settings, TOPICS)
    return kafka_settings


@pytest.fixture
async def producer(topics: KafkaSettings):  # type: ignore[no-untyped-def]
    async with EventProducer(topics, source="/omnistock/test") as producer:
        yield producer
