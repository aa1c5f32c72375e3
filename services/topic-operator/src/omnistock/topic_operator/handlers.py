"""What each operator handler does with the broker, as plain async functions.

kopf (see main.py) only wires these to resource events; tests call them directly with a
resource body and an admin client on a real broker. A handler never raises for what the
broker refuses: that is a Ready=False condition the timer looks at again later. Only an
unreachable broker raises (:class:`BrokerUnreachable`), for kopf to retry with backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError, NodeNotReadyError

from omnistock.events.admin import admin_client, delete_topic, reconcile_topic
from omnistock.events.settings import KafkaSettings
from omnistock.topic_operator.domain.resources import (
    Condition,
    KafkaTopic,
    ResourceRef,
    desired_status,
    owner,
    ready_condition,
    status_changes,
)

log = logging.getLogger(__name__)

EventType = Literal["Normal", "Warning"]
_UNREACHABLE = (KafkaConnectionError, KafkaTimeoutError, NodeNotReadyError, OSError, TimeoutError)


class BrokerUnreachable(Exception):
    """The broker did not answer; the handler is retried later, nothing was decided."""


@dataclass(frozen=True, slots=True)
class Event:
    """A Kubernetes event to post on the resource."""

    type: EventType
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Outcome:
    ready: bool
    #: Status fields to write (empty: the status is already right, nothing is written).
    status: dict[str, Any] = field(default_factory=dict)
    events: tuple[Event, ...] = ()


class Broker:
    """One admin client for the operator's lifetime, (re)connected on demand so that an
    unreachable broker at start-up is a retried handler, not a crashed operator."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self._kafka = kafka
        self._admin: AIOKafkaAdminClient | None = None
        self._lock = asyncio.Lock()

    async def admin(self) -> AIOKafkaAdminClient:
        async with self._lock:
            if self._admin is None:
                admin = admin_client(self._kafka)
                try:
                    await admin.start()
                except (KafkaError, *_UNREACHABLE) as exc:
                    await admin.close()
                    raise BrokerUnreachable(
                        f"cannot reach Kafka at {self._kafka.bootstrap_servers}: {exc}"
                    ) from exc
                self._admin = admin
            return self._admin

    async def forget(self) -> None:
        async with self._lock:
            if self._admin is not None:
                admin, self._admin = self._admin, None
                await admin.close()

    async def close(self) -> None:
        await self.forget()


def _held_back(resource: KafkaTopic, claimants: Iterable[ResourceRef]) -> Condition | None:
    """Why this resource must not touch its topic now, if it must not."""
    if resource.unmanaged:
        return Condition(
            "Unknown",
            "Unmanaged",
            "omnistock.io/unmanaged is set: the operator leaves the "
            "topic alone, and deleting this resource never deletes it",
        )
    if resource.paused:
        return Condition(
            "Unknown",
            "Paused",
            "omnistock.io/paused is set: reconciliation resumes when it is removed",
        )
    winner = owner([*claimants, resource.ref])
    if winner is not None and winner.uid != resource.ref.uid:
        return Condition(
            "False",
            "Conflict",
            f"topic {resource.spec.name} is declared by {winner.key}, which is older; "
            "this resource is ignored until that one is gone or names another topic",
        )
    return None


async def reconcile(
    admin: AIOKafkaAdminClient,
    body: Mapping[str, Any],
    *,
    claimants: Iterable[ResourceRef] = (),
    drift_check: bool = False,
    now: datetime | None = None,
) -> Outcome:
    """Create, adopt or repair the resource's topic (create, update, resume and the drift
    timer all come here: it is idempotent). ``claimants``: every resource naming the same
    topic, this one included or not."""
    resource = KafkaTopic.from_body(body)
    held = _held_back(resource, claimants)
    if held is not None:
        status = desired_status(resource, held, now=now)
        return Outcome(ready=held.status == "True", status=status_changes(resource.status, status))
    try:
        result = await reconcile_topic(admin, resource.spec)
    except _UNREACHABLE as exc:
        raise BrokerUnreachable(f"reconciling {resource.spec.name}: {exc!r}") from exc
    adopted = not result.created and not resource.known_on_broker and not result.refusals
    condition = ready_condition(result, adopted=adopted, previous=resource.ready)
    status = desired_status(resource, condition, result=result, now=now)
    changes = status_changes(resource.status, status)
    return Outcome(
        ready=condition.status == "True",
        status=changes,
        events=tuple(
            _events(
                resource,
                result.created,
                adopted,
                result.repaired,
                condition,
                reason_changed="conditions" in changes,
                drift_check=drift_check,
            )
        ),
    )


def _events(
    resource: KafkaTopic,
    created: bool,
    adopted: bool,
    repaired: tuple[str, ...],
    condition: Condition,
    *,
    reason_changed: bool,
    drift_check: bool,
) -> Iterable[Event]:
    name = resource.spec.name
    if created and resource.known_on_broker:
        yield Event(
            "Warning",
            "TopicRecreated",
            f"topic {name} was deleted outside the operator; re-created it empty",
        )
    elif created:
        yield Event("Normal", "Created", f"created topic {name}")
    if adopted:
        yield Event("Normal", "Adopted", f"adopted existing topic {name}")
    if repaired:
        yield Event(
            "Warning" if drift_check else "Normal",
            "DriftReverted" if drift_check else "Updated",
            f"topic {name}: " + "; ".join(repaired),
        )
    # A refusal is reported once when it appears, not at every timer tick.
    if condition.status == "False" and reason_changed:
        yield Event("Warning", condition.reason, condition.message)


async def release(
    admin: AIOKafkaAdminClient,
    body: Mapping[str, Any],
    *,
    claimants: Iterable[ResourceRef] = (),
) -> Outcome:
    """The resource is being deleted: delete its topic if its deletionPolicy says so."""
    resource = KafkaTopic.from_body(body)
    name = resource.spec.name
    others = [ref for ref in claimants if ref.uid != resource.ref.uid]
    if resource.unmanaged or resource.deletion_policy == "Retain":
        return Outcome(True, events=(Event("Normal", "Retained", f"kept topic {name}"),))
    winner = owner([*others, resource.ref])
    if winner is not None and winner.uid != resource.ref.uid:
        return Outcome(
            True, events=(Event("Normal", "Retained", f"topic {name} belongs to {winner.key}"),)
        )
    if others:
        # The older resource is gone and a younger one declares the topic: it is theirs now.
        return Outcome(
            True,
            events=(Event("Normal", "Retained", f"topic {name} is declared by {others[0].key}"),),
        )
    try:
        deleted = await delete_topic(admin, name)
    except _UNREACHABLE as exc:
        raise BrokerUnreachable(f"deleting {name}: {exc!r}") from exc
    message = f"deleted topic {name}" if deleted else f"topic {name} was already gone"
    return Outcome(True, events=(Event("Normal", "Deleted", message),))
