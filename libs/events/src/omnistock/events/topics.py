"""The topic registry: the one place topic names and their settings are declared.

The dev stack, the operator's KafkaTopic resources and the Helm values are all
rendered from :data:`TOPICS`; no other module spells a topic name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

CleanupPolicy = Literal["delete", "compact"]

# The log is the system of record, so domain topics keep every event forever.
RETAIN_FOREVER = -1
# Dead letters are kept long enough for a human to look at them after a weekend.
DLQ_RETENTION_MS = 14 * 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class Topic:
    """A logical topic and how it must be provisioned."""

    name: str
    partitions: int
    key: str
    owner: str
    description: str
    consumers: tuple[str, ...] = ()
    retention_ms: int = RETAIN_FOREVER
    cleanup_policy: CleanupPolicy = "delete"
    extra_config: tuple[tuple[str, str], ...] = field(default=())

    def physical(self, prefix: str = "") -> str:
        return f"{prefix}{self.name}"

    def config(self) -> dict[str, str]:
        """Kafka topic configs, as CreateTopics and DescribeConfigs spell them."""
        return {
            "retention.ms": str(self.retention_ms),
            "cleanup.policy": self.cleanup_policy,
            **dict(self.extra_config),
        }

    @property
    def dlq(self) -> Topic:
        """Where consumers of this topic park messages they cannot handle."""
        return Topic(
            name=f"{self.name}.dlq",
            partitions=1,
            key=f"the original message's key ({self.key})",
            owner=self.owner,
            description=f"Dead letters of {self.name}: the original record plus dlq_* headers.",
            retention_ms=DLQ_RETENTION_MS,
        )


INVENTORY_LOCATIONS = Topic(
    name="inventory.locations",
    partitions=3,
    key="location_id",
    owner="inventory",
    description="Stores and warehouses: where they are, what they are, whether they ship online.",
    consumers=("inventory", "replenishment"),
)
INVENTORY_STOCK = Topic(
    name="inventory.stock",
    partitions=12,
    key="sku: every location of one SKU is decided by one partition owner",
    owner="inventory",
    description="Stock movements per (sku, location): receipts, holds, commits, shipments, "
    "adjustments, POS sales applied, discrepancies, and partition ownership epochs.",
    consumers=("inventory", "replenishment", "orders"),
)
INVENTORY_RESERVATIONS = Topic(
    name="inventory.reservations",
    partitions=12,
    key="reservation_id",
    owner="inventory",
    description="Reservation sagas: requested, held or rejected, extended, committed, released, "
    "expired.",
    consumers=("inventory", "orders"),
)
ORDERS = Topic(
    name="orders.events",
    partitions=6,
    key="order_id",
    owner="orders",
    description="Order lifecycle: placed, confirmed or rejected, fulfilled, cancelled.",
    consumers=("orders", "inventory"),
)
POS_TRANSACTIONS = Topic(
    name="pos.transactions",
    partitions=6,
    key="store_id: one store's transactions stay in order",
    owner="pos-gateway",
    description="Normalised store POS transactions: sales, returns, voids.",
    consumers=("pos-gateway", "inventory", "replenishment"),
)
REPLENISHMENT = Topic(
    name="replenishment.events",
    partitions=6,
    key="location_id",
    owner="replenishment",
    description="Reorder rules, low-stock detections and replenishment requests "
    "through to receipt.",
    consumers=("replenishment", "inventory"),
)

DOMAIN_TOPICS: tuple[Topic, ...] = (
    INVENTORY_LOCATIONS,
    INVENTORY_STOCK,
    INVENTORY_RESERVATIONS,
    ORDERS,
    POS_TRANSACTIONS,
    REPLENISHMENT,
)

#: Every topic an omnistock installation needs, dead-letter topics included.
TOPICS: tuple[Topic, ...] = DOMAIN_TOPICS + tuple(t.dlq for t in DOMAIN_TOPICS if t.consumers)


def registry_document() -> dict[str, object]:
    """The registry as data, for what is rendered from it outside Python (the Helm chart's
    KafkaTopic resources: ``omnistock-events topics --json``)."""
    return {
        "topics": [
            {
                "name": topic.name,
                "partitions": topic.partitions,
                "config": topic.config(),
                "owner": topic.owner,
                "description": topic.description,
            }
            for topic in TOPICS
        ]
    }


def topic_named(name: str) -> Topic:
    for topic in TOPICS:
        if topic.name == name:
            return topic
    raise KeyError(f"no topic named {name!r} in the registry")
