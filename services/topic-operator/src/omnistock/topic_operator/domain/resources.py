"""KafkaTopic resources as the operator reads them, and the status it writes back.

Pure: a reconciliation's outcome in, the status (and only its changed fields) out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from omnistock.events.admin import TopicReconciliation, TopicSpec

GROUP = "omnistock.io"
VERSION = "v1alpha1"
PLURAL = "kafkatopics"
KIND = "KafkaTopic"

#: "true" stops reconciliation of one resource (the topic is left as it is) until removed.
PAUSED = f"{GROUP}/paused"
#: "true" hands the topic back to people: never created, altered or deleted by the operator.
UNMANAGED = f"{GROUP}/unmanaged"

DeletionPolicy = Literal["Retain", "Delete"]
ConditionStatus = Literal["True", "False", "Unknown"]


def flag(annotations: Mapping[str, str], name: str) -> bool:
    return str(annotations.get(name, "")).lower() == "true"


@dataclass(frozen=True, slots=True)
class ResourceRef:
    """One KafkaTopic resource, as the claims index keeps it."""

    namespace: str
    name: str
    uid: str
    created: str  # RFC 3339 creationTimestamp: sorts in time order as text

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class KafkaTopic:
    ref: ResourceRef
    generation: int
    spec: TopicSpec
    deletion_policy: DeletionPolicy
    paused: bool
    unmanaged: bool
    status: Mapping[str, Any]

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> KafkaTopic:
        meta = body.get("metadata", {})
        spec = body.get("spec", {})
        annotations = meta.get("annotations") or {}
        return cls(
            ref=ResourceRef(
                meta.get("namespace", ""),
                meta.get("name", ""),
                meta.get("uid", ""),
                str(meta.get("creationTimestamp", "")),
            ),
            generation=int(meta.get("generation", 0)),
            spec=TopicSpec(
                name=spec["topicName"],
                partitions=int(spec["partitions"]),
                replication_factor=int(spec.get("replicationFactor", 1)),
                config={str(k): str(v) for k, v in (spec.get("config") or {}).items()},
            ),
            deletion_policy="Delete" if spec.get("deletionPolicy") == "Delete" else "Retain",
            paused=flag(annotations, PAUSED),
            unmanaged=flag(annotations, UNMANAGED),
            status=body.get("status") or {},
        )

    @property
    def ready(self) -> Mapping[str, Any]:
        """The Ready condition last written, or {}."""
        conditions = self.status.get("conditions") or []
        return next((c for c in conditions if c.get("type") == "Ready"), {})

    @property
    def known_on_broker(self) -> bool:
        """Whether an earlier reconciliation saw the topic on the broker."""
        return bool(self.status.get("partitions"))


def owner(claimants: Iterable[ResourceRef]) -> ResourceRef | None:
    """Of several resources naming one topic, the oldest owns it (uid breaks a tie)."""
    return min(claimants, key=lambda ref: (ref.created, ref.uid), default=None)


@dataclass(frozen=True, slots=True)
class Condition:
    status: ConditionStatus
    reason: str
    message: str


def ready_condition(
    result: TopicReconciliation, *, adopted: bool, previous: Mapping[str, Any] | None = None
) -> Condition:
    """The Ready condition after ``result``; an unchanged topic keeps its Ready=True
    condition as it was (how it became ready), so nothing is rewritten."""
    if result.refusals:
        return Condition(
            "False",
            result.refusals[0].reason,
            " ".join(refusal.message for refusal in result.refusals),
        )
    if result.created:
        return Condition("True", "Created", f"created topic {result.name}")
    if adopted:
        return Condition("True", "Adopted", f"adopted existing topic {result.name}")
    if result.repaired:
        return Condition("True", "Reconciled", "repaired: " + "; ".join(result.repaired))
    previous = previous or {}
    if previous.get("status") == "True":
        return Condition("True", previous.get("reason", ""), previous.get("message", ""))
    return Condition("True", "InSync", f"topic {result.name} matches its declaration")


def desired_status(
    resource: KafkaTopic,
    condition: Condition,
    *,
    result: TopicReconciliation | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The whole status after a reconciliation; the Ready condition's transition time
    moves only when its status changes."""
    previous = resource.ready
    transition = previous.get("lastTransitionTime")
    if previous.get("status") != condition.status or not transition:
        transition = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    status: dict[str, Any] = {
        "observedGeneration": resource.generation,
        "conditions": [
            {
                "type": "Ready",
                "status": condition.status,
                "reason": condition.reason,
                "message": condition.message,
                "lastTransitionTime": transition,
                "observedGeneration": resource.generation,
            }
        ],
    }
    if result is not None and result.observed.partitions:
        status["partitions"] = result.observed.partitions
        status["replicationFactor"] = result.observed.replication_factor
        status["config"] = result.observed.owned_config(resource.spec.config)
    elif resource.status.get("partitions"):
        # Not looked at this time (paused, conflict): keep the last facts seen.
        for key in ("partitions", "replicationFactor", "config", "topicId"):
            if key in resource.status:
                status[key] = resource.status[key]
    return status


def status_changes(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of ``desired`` that differ from ``current`` (a merge patch; fields
    ``desired`` drops become None). Empty when nothing changed, so nothing is written."""
    changes: dict[str, Any] = {
        key: value for key, value in desired.items() if current.get(key) != value
    }
    changes.update({key: None for key in current if key not in desired and key in STATUS_FIELDS})
    return changes


STATUS_FIELDS = frozenset(
    {"observedGeneration", "conditions", "partitions", "replicationFactor", "config", "topicId"}
)
