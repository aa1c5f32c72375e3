"""The operator's pure decisions: ownership, conditions, what status is written."""

from __future__ import annotations

from datetime import UTC, datetime

from operator_support import kafka_topic

from omnistock.events.admin import ObservedTopic, Refusal, TopicReconciliation
from omnistock.topic_operator.domain.resources import (
    Condition,
    KafkaTopic,
    ResourceRef,
    desired_status,
    owner,
    ready_condition,
    status_changes,
)
from omnistock.topic_operator.main import needs_finalizer

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 21, 11, 0, tzinfo=UTC)


def result(*refusals: Refusal) -> TopicReconciliation:
    return TopicReconciliation(
        "orders.events", False, (), (), refusals, ObservedTopic(6, 1, {"retention.ms": "-1"})
    )


def test_the_oldest_resource_owns_a_topic_and_uid_breaks_ties() -> None:
    a = ResourceRef("shop", "a", "uid-b", "2026-11-01T00:00:00Z")
    b = ResourceRef("shop", "b", "uid-a", "2026-11-01T00:00:00Z")
    c = ResourceRef("other", "c", "uid-0", "2026-11-02T00:00:00Z")

    assert owner([c, a, b]) == b
    assert owner([c]) == c
    assert owner([]) is None


def test_the_transition_time_moves_only_when_ready_changes() -> None:
    body = kafka_topic("orders.events")
    first = desired_status(KafkaTopic.from_body(body), Condition("True", "Created", "x"), now=T0)
    body["status"] = first
    same = desired_status(KafkaTopic.from_body(body), Condition("True", "Reconciled", "y"), now=T1)
    flipped = desired_status(
        KafkaTopic.from_body(body), Condition("False", "Conflict", "z"), now=T1
    )

    assert same["conditions"][0]["lastTransitionTime"] == "2026-11-21T10:00:00Z"
    assert flipped["conditions"][0]["lastTransitionTime"] == "2026-11-21T11:00:00Z"


def test_only_changed_status_fields_are_written() -> None:
    current = {"observedGeneration": 1, "partitions": 6, "config": {"a": "1"}, "topicId": "x"}
    desired = {"observedGeneration": 2, "partitions": 6, "config": {"a": "1"}}

    assert status_changes(current, desired) == {"observedGeneration": 2, "topicId": None}
    assert status_changes(desired, desired) == {}


def test_every_refusal_is_in_the_condition_and_the_first_names_it() -> None:
    condition = ready_condition(
        result(Refusal("PartitionsCannotShrink", "p"), Refusal("BrokerCannotAlterConfigs", "c")),
        adopted=False,
    )

    assert condition == Condition("False", "PartitionsCannotShrink", "p c")


def test_a_topic_in_sync_keeps_the_condition_it_has() -> None:
    previous = {"type": "Ready", "status": "True", "reason": "Adopted", "message": "m"}

    assert ready_condition(result(), adopted=False, previous=previous) == Condition(
        "True", "Adopted", "m"
    )
    assert ready_condition(result(), adopted=False).reason == "InSync"


def test_only_topics_the_operator_deletes_get_a_finalizer() -> None:
    # Retain resources (the default) never wait for the operator when they, or their
    # namespace, are deleted: nothing can be left stuck in Terminating by them.
    assert needs_finalizer({"deletionPolicy": "Delete"}, {})
    assert not needs_finalizer({"deletionPolicy": "Retain"}, {})
    assert not needs_finalizer({}, {})
    assert not needs_finalizer({"deletionPolicy": "Delete"}, {"omnistock.io/unmanaged": "true"})


def test_kopf_puts_its_finalizer_only_on_topics_it_will_delete() -> None:
    # Asked of kopf's own registry with the handlers main.py registers (kopf internals:
    # the decision that keeps Retain resources, and their namespace, from ever waiting).
    import logging

    import kopf
    from kopf._cogs.structs import bodies, patches, references
    from kopf._core.intents.causes import ResourceCause

    import omnistock.topic_operator.main  # noqa: F401  (registers the handlers)

    registry = kopf.get_default_registry()
    resource = references.Resource(
        group="omnistock.io",
        version="v1alpha1",
        plural="kafkatopics",
        kind="KafkaTopic",
        namespaced=True,
    )

    def requires_finalizer(body: dict[str, object]) -> bool:
        cause = ResourceCause(
            logger=logging.getLogger(__name__),
            indices={},
            resource=resource,
            patch=patches.Patch(),
            memo=kopf.Memo(),
            body=bodies.Body(body),
        )
        return registry._changing.requires_finalizer(cause)

    unmanaged = {"omnistock.io/unmanaged": "true"}
    assert requires_finalizer(kafka_topic("t", deletion_policy="Delete"))
    assert not requires_finalizer(kafka_topic("t", deletion_policy="Retain"))
    assert not requires_finalizer(kafka_topic("t", deletion_policy="Delete", annotations=unmanaged))
