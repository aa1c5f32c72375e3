"""Topic provisioning from the registry, and facts about the log a reader must check.

The dev stack and the topic operator both create topics through
:func:`reconcile_topic`, so there is one code path from registry to broker.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from omnistock.events.producer import BrokerUnavailable
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import Topic

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36

Action = Literal["created", "unchanged", "drifted"]


@dataclass(frozen=True, slots=True)
class TopicState:
    name: str
    action: Action
    partitions: int
    config: dict[str, str]
    #: Human-readable differences between the declaration and the broker.
    drift: tuple[str, ...] = ()


def admin_client(kafka: KafkaSettings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**kafka.client_options())


async def describe_topic(
    admin: AIOKafkaAdminClient, name: str
) -> tuple[int, dict[str, str]] | None:
    """Partitions and explicitly set configs of ``name``, or None if it does not exist."""
    if name not in await admin.list_topics():
        return None
    [described] = await admin.describe_topics([name])
    resources = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    config = {
        entry[0]: entry[1]
        for response in resources
        for resource in response.resources
        for entry in resource[4]
    }
    return len(described["partitions"]), config


async def reconcile_topic(
    admin: AIOKafkaAdminClient, topic: Topic, *, name: str, replication_factor: int = 1
) -> TopicState:
    """Create ``topic`` as ``name`` if missing; otherwise report how the broker differs."""
    wanted = topic.config()
    found = await describe_topic(admin, name)
    if found is None:
        response = await admin.create_topics(
            [NewTopic(name, topic.partitions, replication_factor, topic_configs=wanted)]
        )
        errors = [e for e in response.topic_errors if e[1] not in (0, TOPIC_ALREADY_EXISTS)]
        if errors:
            raise RuntimeError(f"creating topic {name} failed: {errors}")
        log.info("created topic %s (%d partitions)", name, topic.partitions)
        return TopicState(name, "created", topic.partitions, wanted)
    partitions, config = found
    drift = []
    if partitions != topic.partitions:
        drift.append(f"partitions: declared {topic.partitions}, broker has {partitions}")
    drift.extend(
        f"{key}: declared {value!r}, broker has {config.get(key)!r}"
        for key, value in sorted(wanted.items())
        if config.get(key) != value
    )
    return TopicState(name, "drifted" if drift else "unchanged", partitions, config, tuple(drift))


async def ensure_topics(kafka: KafkaSettings, topics: Iterable[Topic]) -> list[TopicState]:
    """Create every missing topic of ``topics`` (physical names carry the settings' prefix)."""
    admin = admin_client(kafka)
    try:
        await admin.start()
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot reach Kafka at {kafka.bootstrap_servers}") from exc
    try:
        return [
            await reconcile_topic(admin, topic, name=topic.physical(kafka.topic_prefix))
            for topic in topics
        ]
    finally:
        await admin.close()


async def cluster_id(kafka: KafkaSettings) -> str:
    """The broker cluster's id: a different id means a different log."""
    admin = admin_client(kafka)
    await admin.start()
    try:
        return str((await admin.describe_cluster())["cluster_id"])
    finally:
        await admin.close()
