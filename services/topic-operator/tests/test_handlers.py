"""The operator's handlers as plain functions against the real (embedded) broker.

The embedded broker answers CreateTopics, DeleteTopics and DescribeConfigs but not
CreatePartitions or AlterConfigs, so growing partitions and reverting config end in a
Ready=False condition here; test_admin_boundary.py checks those requests themselves.
"""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from operator_support import applied, kafka_topic, ready

from omnistock.events.admin import observe_topic
from omnistock.events.settings import KafkaSettings
from omnistock.topic_operator.domain.resources import KafkaTopic
from omnistock.topic_operator.handlers import Broker, BrokerUnreachable, reconcile, release

pytestmark = pytest.mark.integration

CONFIG = {"retention.ms": "-1", "cleanup.policy": "delete"}


async def test_create_then_rerun_writes_nothing(
    admin: AIOKafkaAdminClient, topic_prefix: str
) -> None:
    body = kafka_topic(f"{topic_prefix}orders.events", partitions=6, config=CONFIG)

    created = await reconcile(admin, body)

    assert created.ready
    assert [(e.type, e.reason) for e in created.events] == [("Normal", "Created")]
    found = await observe_topic(admin, f"{topic_prefix}orders.events")
    assert found is not None
    assert found.partitions == 6
    assert found.owned_config(CONFIG) == CONFIG
    body = applied(body, created)
    assert ready(body)["status"] == "True"
    assert ready(body)["reason"] == "Created"
    assert body["status"]["partitions"] == 6
    assert body["status"]["config"] == CONFIG
    assert body["status"]["observedGeneration"] == 1

    again = await reconcile(admin, body)
    timer = await reconcile(admin, body, drift_check=True)

    # Idempotent, and the status is written only when it changes.
    assert again.ready
    assert timer.ready
    assert again.status == {}
    assert timer.status == {}
    assert again.events == ()
    assert timer.events == ()


async def test_an_existing_topic_is_adopted(admin: AIOKafkaAdminClient, topic_prefix: str) -> None:
    name = f"{topic_prefix}pos.transactions"
    await admin.create_topics([NewTopic(name, 4, 1, topic_configs=CONFIG)])
    body = kafka_topic(name, partitions=4, config=CONFIG)

    outcome = await reconcile(admin, body)

    assert outcome.ready
    assert ready(applied(body, outcome))["reason"] == "Adopted"
    assert [e.reason for e in outcome.events] == ["Adopted"]


async def test_partitions_never_shrink(admin: AIOKafkaAdminClient, topic_prefix: str) -> None:
    name = f"{topic_prefix}inventory.stock"
    body = applied(
        kafka_topic(name, partitions=6), await reconcile(admin, kafka_topic(name, partitions=6))
    )
    body["spec"]["partitions"] = 3
    body["metadata"]["generation"] = 2

    outcome = await reconcile(admin, body)

    assert not outcome.ready
    condition = ready(applied(body, outcome))
    assert condition["status"] == "False"
    assert condition["reason"] == "PartitionsCannotShrink"
    assert "declared 3, broker has 6" in condition["message"]
    assert [(e.type, e.reason) for e in outcome.events] == [("Warning", "PartitionsCannotShrink")]
    found = await observe_topic(admin, name)
    assert found is not None
    assert found.partitions == 6
    assert applied(body, outcome)["status"]["partitions"] == 6


async def test_growing_partitions_on_a_broker_without_create_partitions_is_a_condition(
    admin: AIOKafkaAdminClient, topic_prefix: str
) -> None:
    name = f"{topic_prefix}orders.events"
    body = applied(
        kafka_topic(name, partitions=2), await reconcile(admin, kafka_topic(name, partitions=2))
    )
    body["spec"]["partitions"] = 8

    outcome = await reconcile(admin, body)
    repeated = await reconcile(admin, applied(body, outcome), drift_check=True)

    condition = ready(applied(body, outcome))
    assert (condition["status"], condition["reason"]) == ("False", "BrokerCannotCreatePartitions")
    assert "CreatePartitions" in condition["message"]
    # Re-checked on every timer tick without a new event or status write: no crash loop.
    assert not repeated.ready
    assert repeated.status == {}
    assert repeated.events == ()


async def test_config_drift_is_detected_and_reported_when_the_broker_cannot_revert_it(
    admin: AIOKafkaAdminClient, topic_prefix: str
) -> None:
    name = f"{topic_prefix}inventory.locations"
    # Someone made the topic directly in Kafka with a 1-day retention.
    await admin.create_topics(
        [NewTopic(name, 3, 1, topic_configs={**CONFIG, "retention.ms": "86400000"})]
    )
    body = kafka_topic(name, partitions=3, config=CONFIG)

    outcome = await reconcile(admin, body, drift_check=True)

    condition = ready(applied(body, outcome))
    assert (condition["status"], condition["reason"]) == ("False", "BrokerCannotAlterConfigs")
    assert "retention.ms: declared '-1', broker has '86400000'" in condition["message"]
    assert applied(body, outcome)["status"]["config"]["retention.ms"] == "86400000"


async def test_a_topic_deleted_behind_the_operators_back_is_recreated(
    admin: AIOKafkaAdminClient, topic_prefix: str
) -> None:
    name = f"{topic_prefix}replenishment.events"
    body = kafka_topic(name, partitions=2, config=CONFIG)
    body = applied(body, await reconcile(admin, body))
    await admin.delete_topics([name])

    outcome = await reconcile(admin, body, drift_check=True)

    assert outcome.ready
    assert [(e.type, e.reason) for e in outcome.events] == [("Warning", "TopicRecreated")]
    found = await observe_topic(admin, name)
    assert found is not None
    assert found.partitions == 2


async def test_delete_honours_the_deletion_policy(
    admin: AIOKafkaAdminClient, topic_prefix: str
) -> None:
    kept = kafka_topic(f"{topic_prefix}kept", deletion_policy="Retain")
    gone = kafka_topic(f"{topic_prefix}gone", deletion_policy="Delete")
    for body in (kept, gone):
        await reconcile(admin, body)

    retained = await release(admin, kept)
    deleted = await release(admin, gone)
    again = await release(admin, gone)

    assert [e.reason for e in retained.events] == ["Retained"]
    assert [e.reason for e in deleted.events] == ["Deleted"]
    assert again.ready
    assert "already gone" in again.events[0].message
    topics = await admin.list_topics()
    assert f"{topic_prefix}kept" in topics
    assert f"{topic_prefix}gone" not in topics


async def test_the_older_of_two_resources_owns_the_topic(
    admin: AIOKafkaAdminClient, topic_prefix: str
) -> None:
    name = f"{topic_prefix}orders.events"
    older = kafka_topic(
        name, partitions=3, name="orders", created="2026-11-01T00:00:00Z", deletion_policy="Delete"
    )
    younger = kafka_topic(
        name,
        partitions=9,
        name="orders-copy",
        created="2026-11-02T00:00:00Z",
        deletion_policy="Delete",
    )
    claimants = [KafkaTopic.from_body(b).ref for b in (older, younger)]

    loser = await reconcile(admin, younger, claimants=claimants)
    winner = await reconcile(admin, older, claimants=claimants)
    loser_deleted = await release(admin, younger, claimants=claimants)

    condition = ready(applied(younger, loser))
    assert (condition["status"], condition["reason"]) == ("False", "Conflict")
    assert "shop/orders" in condition["message"]
    assert winner.ready
    # The loser's deletion leaves the winner's topic alone, whatever its policy says.
    assert [e.reason for e in loser_deleted.events] == ["Retained"]
    found = await observe_topic(admin, name)
    assert found is not None
    assert found.partitions == 3


async def test_paused_and_unmanaged_resources_leave_the_broker_alone(
    admin: AIOKafkaAdminClient, topic_prefix: str
) -> None:
    paused = kafka_topic(f"{topic_prefix}paused", annotations={"omnistock.io/paused": "true"})
    unmanaged = kafka_topic(
        f"{topic_prefix}unmanaged",
        deletion_policy="Delete",
        annotations={"omnistock.io/unmanaged": "true"},
    )
    await admin.create_topics([NewTopic(f"{topic_prefix}unmanaged", 1, 1)])

    paused_outcome = await reconcile(admin, paused)
    unmanaged_outcome = await reconcile(admin, unmanaged)
    unmanaged_deleted = await release(admin, unmanaged)

    assert ready(applied(paused, paused_outcome))["reason"] == "Paused"
    assert ready(applied(unmanaged, unmanaged_outcome))["reason"] == "Unmanaged"
    assert [e.reason for e in unmanaged_deleted.events] == ["Retained"]
    topics = await admin.list_topics()
    assert f"{topic_prefix}paused" not in topics
    assert f"{topic_prefix}unmanaged" in topics


async def test_an_unreachable_broker_is_a_retry_not_a_decision() -> None:
    broker = Broker(KafkaSettings(bootstrap_servers="127.0.0.1:1", request_timeout_ms=1_000))

    with pytest.raises(BrokerUnreachable, match="cannot reach Kafka"):
        await broker.admin()
    await broker.close()
