"""The requests the embedded broker cannot answer (CreatePartitions, AlterConfigs), checked
at the admin client's boundary: every other request goes to the real broker; these two
are encoded exactly as they would be sent to Apache Kafka, recorded, and answered the way
Kafka answers them."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.protocol.admin import (
    AlterConfigsRequest,
    AlterConfigsRequest_v0,
    AlterConfigsResponse_v0,
    CreatePartitionsRequest,
    CreatePartitionsRequest_v0,
    CreatePartitionsResponse_v0,
)
from operator_support import applied, kafka_topic, ready

from omnistock.events.admin import TopicSpec, reconcile_topic
from omnistock.topic_operator.handlers import reconcile

pytestmark = pytest.mark.integration

CONFIG = {"retention.ms": "-1", "cleanup.policy": "delete"}
POLICY_VIOLATION = 44


class KafkaAnswers:
    """Stands in for a broker that supports the two requests; records what it was sent."""

    def __init__(self, admin: AIOKafkaAdminClient, *, error: int = 0) -> None:
        self.sent: list[Any] = []
        self._error = error
        client = admin._client
        real_send = client.send

        async def send(node_id: int, request: Any, **kwargs: Any) -> Any:
            if isinstance(request, CreatePartitionsRequest):
                struct = request.build(CreatePartitionsRequest_v0)
                self.sent.append(CreatePartitionsRequest_v0.decode(struct.encode()))
                return CreatePartitionsResponse_v0(
                    0,
                    [
                        (t, self._error, "policy" if self._error else None)
                        for t, _ in struct.topic_partitions
                    ],
                )
            if isinstance(request, AlterConfigsRequest):
                struct = request.build(AlterConfigsRequest_v0)
                self.sent.append(AlterConfigsRequest_v0.decode(struct.encode()))
                return AlterConfigsResponse_v0(
                    0,
                    [
                        (self._error, "policy" if self._error else None, r[0], r[1])
                        for r in struct.resources
                    ],
                )
            return await real_send(node_id, request, **kwargs)

        client.send = send


async def test_growing_partitions_sends_the_new_total(
    admin: AIOKafkaAdminClient, topic_prefix: str
) -> None:
    name = f"{topic_prefix}orders.events"
    await admin.create_topics([NewTopic(name, 3, 1, topic_configs=CONFIG)])
    kafka = KafkaAnswers(admin)

    result = await reconcile_topic(admin, TopicSpec(name, 6, 1, CONFIG))

    [request] = kafka.sent
    # No assignment (null): the brokers place the new partitions.
    assert request.topic_partitions == [(name, (6, None))]
    assert request.validate_only is False
    assert result.in_sync
    assert result.repaired == ("partitions: declared 6, broker has 3",)
    assert result.observed.partitions == 6


async def test_reverting_config_replaces_the_whole_topic_config(
    admin: AIOKafkaAdminClient, topic_prefix: str
) -> None:
    name = f"{topic_prefix}inventory.stock"
    await admin.create_topics(
        [NewTopic(name, 3, 1, topic_configs={**CONFIG, "retention.ms": "3600000"})]
    )
    body = kafka_topic(name, partitions=3, config=CONFIG)
    # The resource had seen its topic before: this run is the drift timer, not adoption.
    body["status"] = {"partitions": 3, "replicationFactor": 1, "config": CONFIG}
    kafka = KafkaAnswers(admin)

    outcome = await reconcile(admin, body, drift_check=True)

    [request] = kafka.sent
    [(resource_type, resource_name, entries)] = request.resources
    assert (resource_type, resource_name) == (2, name)  # 2: TOPIC
    # Non-incremental AlterConfigs: the declared set, all of it, and nothing else.
    assert dict(entries) == CONFIG
    assert outcome.ready
    assert [(e.type, e.reason) for e in outcome.events] == [("Warning", "DriftReverted")]
    assert "retention.ms: declared '-1', broker has '3600000'" in outcome.events[0].message


async def test_a_refused_request_is_a_condition(
    admin: AIOKafkaAdminClient, topic_prefix: str
) -> None:
    name = f"{topic_prefix}pos.transactions"
    await admin.create_topics([NewTopic(name, 2, 1, topic_configs={"retention.ms": "1"})])
    KafkaAnswers(admin, error=POLICY_VIOLATION)
    body = kafka_topic(name, partitions=4, config=CONFIG)

    outcome = await reconcile(admin, body)

    condition = ready(applied(body, outcome))
    assert condition["status"] == "False"
    assert condition["reason"] == "CreatePartitionsFailed"
    assert "the broker refused new partitions" in condition["message"]
    assert "the broker refused the config" in condition["message"]
