"""Topic provisioning, and facts about the log a reader must check.

The dev stack and the topic operator both provision topics through
:func:`reconcile_topic`, so there is one code path from a declaration (the registry,
or a KafkaTopic resource) to the broker. A declaration owns the topic's whole
configuration: what the broker has that was not declared is drift, and so is a
declared value the broker does not have.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import IncompatibleBrokerVersion, KafkaError, UnsupportedVersionError

from omnistock.events.producer import BrokerUnavailable
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import Topic

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36
UNKNOWN_TOPIC_OR_PARTITION = 3
#: DescribeConfigs' config_source for a value set on the topic itself (not a default).
DYNAMIC_TOPIC_CONFIG = 1

# Refusal reasons; the operator uses them verbatim as its Ready condition's reason.
PARTITIONS_CANNOT_SHRINK = "PartitionsCannotShrink"
REPLICATION_FACTOR_FIXED = "ReplicationFactorCannotChange"
BROKER_CANNOT_CREATE_PARTITIONS = "BrokerCannotCreatePartitions"
BROKER_CANNOT_ALTER_CONFIGS = "BrokerCannotAlterConfigs"
CREATE_FAILED = "CreateTopicFailed"
CREATE_PARTITIONS_FAILED = "CreatePartitionsFailed"
ALTER_CONFIGS_FAILED = "AlterConfigsFailed"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A physical topic as it must be on the broker, its whole configuration included."""

    name: str
    partitions: int
    replication_factor: int = 1
    config: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        topic: Topic,
        prefix: str = "",
        *,
        replication_factor: int = 1,
        config: Mapping[str, str] | None = None,
    ) -> TopicSpec:
        """The registry's ``topic`` under ``prefix``, with installation-wide ``config`` added
        (e.g. ``min.insync.replicas`` in production)."""
        return cls(
            topic.physical(prefix),
            topic.partitions,
            replication_factor,
            {**(config or {}), **topic.config()},
        )


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a declaration could not be (entirely) applied; ``reason`` is CamelCase."""

    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class ObservedTopic:
    partitions: int
    replication_factor: int
    #: Effective values of the topic's configs, defaults included where the broker lists them.
    config: dict[str, str]
    #: Names of the configs set on the topic itself rather than inherited.
    overrides: frozenset[str] = frozenset()

    def owned_config(self, declared: Mapping[str, str]) -> dict[str, str]:
        """The values a declaration of ``declared`` owns: its own keys and every override."""
        return {k: v for k, v in self.config.items() if k in declared or k in self.overrides}


@dataclass(frozen=True, slots=True)
class TopicReconciliation:
    """What :func:`reconcile_topic` found and did."""

    name: str
    #: False when the topic was already there (the declaration adopted it).
    created: bool
    #: Differences found between the declaration and the broker, before repairs.
    drift: tuple[str, ...]
    #: Differences repaired on the broker.
    repaired: tuple[str, ...]
    #: Differences left because the broker or Kafka itself cannot change them.
    refusals: tuple[Refusal, ...]
    #: The topic as the broker has it now.
    observed: ObservedTopic

    @property
    def in_sync(self) -> bool:
        return not self.refusals


def admin_client(kafka: KafkaSettings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**kafka.client_options())


async def observe_topic(admin: AIOKafkaAdminClient, name: str) -> ObservedTopic | None:
    """The broker's view of ``name``, or None if it does not exist."""
    if name not in await admin.list_topics():
        return None
    [described] = await admin.describe_topics([name])
    partitions = described["partitions"]
    resources = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    entries = [
        entry for response in resources for resource in response.resources for entry in resource[4]
    ]
    return ObservedTopic(
        partitions=len(partitions),
        replication_factor=len(partitions[0]["replicas"]) if partitions else 0,
        config={str(e[0]): str(e[1]) for e in entries if e[1] is not None},
        overrides=frozenset(str(e[0]) for e in entries if e[3] == DYNAMIC_TOPIC_CONFIG),
    )


def config_drift(declared: Mapping[str, str], found: ObservedTopic) -> list[str]:
    """Every way ``found`` differs from ``declared``, which owns the whole config: a declared
    value the broker does not have, and a value set on the topic that was not declared."""
    drift = [
        f"{key}: declared {value!r}, broker has {found.config.get(key)!r}"
        for key, value in sorted(declared.items())
        if found.config.get(key) != value
    ]
    drift.extend(
        f"{key}: not declared, set on the broker to {found.config.get(key)!r}"
        for key in sorted(found.overrides)
        if key not in declared
    )
    return drift


async def reconcile_topic(
    admin: AIOKafkaAdminClient, spec: TopicSpec, *, repair: bool = True
) -> TopicReconciliation:
    """Make the broker's ``spec.name`` what ``spec`` declares, as far as Kafka allows.

    Creates a missing topic; on an existing one, grows partitions and replaces the topic's
    config with the declared one (``repair=False`` only reports). Partitions never shrink
    and the replication factor is not changed here: those come back as refusals, as does
    anything the broker rejects or cannot do. Connection failures raise (retry later).
    """
    found = await observe_topic(admin, spec.name)
    if found is None:
        return await _create(admin, spec)
    drift: list[str] = []
    repaired: list[str] = []
    refusals: list[Refusal] = []
    partitions, config = found.partitions, found.owned_config(spec.config)

    if spec.replication_factor != found.replication_factor:
        difference = (
            f"replication factor: declared {spec.replication_factor}, "
            f"broker has {found.replication_factor}"
        )
        drift.append(difference)
        refusals.append(
            Refusal(
                REPLICATION_FACTOR_FIXED,
                f"{difference}; changing it needs a partition reassignment, done outside omnistock",
            )
        )

    if spec.partitions != found.partitions:
        difference = f"partitions: declared {spec.partitions}, broker has {found.partitions}"
        drift.append(difference)
        if spec.partitions < found.partitions:
            refusals.append(
                Refusal(
                    PARTITIONS_CANNOT_SHRINK,
                    f"{difference}; Kafka cannot remove partitions (keys would move "
                    "and per-key order would break)",
                )
            )
        elif repair:
            refusal = await _grow(admin, spec)
            if refusal:
                refusals.append(refusal)
            else:
                repaired.append(difference)
                partitions = spec.partitions

    differences = config_drift(spec.config, found)
    drift.extend(differences)
    if differences and repair:
        refusal = await _replace_config(admin, spec, differences)
        if refusal:
            refusals.append(refusal)
        else:
            repaired.extend(differences)
            config = dict(spec.config)
    if drift:
        log.warning("topic %s differs from its declaration: %s", spec.name, "; ".join(drift))
    return TopicReconciliation(
        spec.name,
        created=False,
        drift=tuple(drift),
        repaired=tuple(repaired),
        refusals=tuple(refusals),
        observed=ObservedTopic(partitions, found.replication_factor, config),
    )


async def _create(admin: AIOKafkaAdminClient, spec: TopicSpec) -> TopicReconciliation:
    response = await admin.create_topics(
        [
            NewTopic(
                spec.name,
                spec.partitions,
                spec.replication_factor,
                topic_configs=dict(spec.config),
            )
        ]
    )
    errors = [e for e in response.topic_errors if e[1] not in (0, TOPIC_ALREADY_EXISTS)]
    if errors:
        [(_, code, message)] = errors
        return TopicReconciliation(
            spec.name,
            created=False,
            drift=(),
            repaired=(),
            refusals=(Refusal(CREATE_FAILED, f"the broker refused it: {message} (error {code})"),),
            observed=ObservedTopic(0, 0, {}),
        )
    if any(e[1] == TOPIC_ALREADY_EXISTS for e in response.topic_errors):
        # Created by someone else between our look and our request: reconcile what is there.
        return await reconcile_topic(admin, spec)
    log.info("created topic %s (%d partitions)", spec.name, spec.partitions)
    return TopicReconciliation(
        spec.name,
        created=True,
        drift=(),
        repaired=(),
        refusals=(),
        observed=ObservedTopic(spec.partitions, spec.replication_factor, dict(spec.config)),
    )


async def _grow(admin: AIOKafkaAdminClient, spec: TopicSpec) -> Refusal | None:
    try:
        await admin.create_partitions({spec.name: NewPartitions(total_count=spec.partitions)})
    except (IncompatibleBrokerVersion, UnsupportedVersionError) as exc:
        return Refusal(
            BROKER_CANNOT_CREATE_PARTITIONS,
            f"partitions: declared {spec.partitions}; the broker does not support "
            f"CreatePartitions ({exc})",
        )
    except KafkaError as exc:
        if not exc.retriable:
            return Refusal(CREATE_PARTITIONS_FAILED, f"the broker refused new partitions: {exc}")
        raise
    log.info("grew topic %s to %d partitions", spec.name, spec.partitions)
    return None


async def _replace_config(
    admin: AIOKafkaAdminClient, spec: TopicSpec, differences: list[str]
) -> Refusal | None:
    # AlterConfigs (not the incremental kind) replaces the topic's whole set of values, which
    # is exactly "the declaration owns the config": undeclared values fall back to defaults.
    resource = ConfigResource(ConfigResourceType.TOPIC, spec.name, configs=dict(spec.config))
    try:
        responses = await admin.alter_configs([resource])
    except (IncompatibleBrokerVersion, UnsupportedVersionError) as exc:
        return Refusal(
            BROKER_CANNOT_ALTER_CONFIGS,
            f"{'; '.join(differences)}; the broker does not support AlterConfigs ({exc})",
        )
    failures = [
        f"{message or 'error'} (error {code})"
        for response in responses
        for code, message, *_ in response.resources
        if code
    ]
    if failures:
        return Refusal(ALTER_CONFIGS_FAILED, f"the broker refused the config: {failures[0]}")
    log.info("replaced the config of topic %s: %s", spec.name, "; ".join(differences))
    return None


async def delete_topic(admin: AIOKafkaAdminClient, name: str) -> bool:
    """Delete ``name``; False if it was already gone."""
    response = await admin.delete_topics([name])
    [(_, code, *_)] = response.topic_error_codes
    if code == UNKNOWN_TOPIC_OR_PARTITION:
        return False
    if code:
        raise RuntimeError(f"deleting topic {name} failed (error {code})")
    log.info("deleted topic %s", name)
    return True


async def ensure_topics(
    kafka: KafkaSettings, topics: Iterable[Topic], *, replication_factor: int = 1
) -> list[TopicReconciliation]:
    """Provision every topic of ``topics`` (physical names carry the settings' prefix)."""
    admin = admin_client(kafka)
    try:
        await admin.start()
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot reach Kafka at {kafka.bootstrap_servers}") from exc
    try:
        results = []
        for topic in topics:
            spec = TopicSpec.of(topic, kafka.topic_prefix, replication_factor=replication_factor)
            result = await reconcile_topic(admin, spec)
            if any(r.reason == CREATE_FAILED for r in result.refusals):
                raise RuntimeError(f"topic {spec.name}: {result.refusals[0].message}")
            for refusal in result.refusals:
                log.warning("topic %s: %s", spec.name, refusal.message)
            results.append(result)
        return results
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
