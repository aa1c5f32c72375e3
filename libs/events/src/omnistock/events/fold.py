"""The deterministic fold every reader runs: which records count, in what order, to what state.

A decision is a fact once it is in the log *and* this fold accepts it (rule 5).
Two things make a record not count:

* **Fencing.** A partition owner first writes :class:`OwnershipClaimed` with an
  epoch higher than any before it into the partition it takes over, and stamps
  its decisions with that epoch. Decisions stamped with any other epoch than
  the partition's current one come from a paused or partitioned old owner and
  are ignored, by every reader alike. So are decisions stamped with the current
  epoch by anyone but the writer whose claim won it (two claimants racing for
  the same epoch: the first in the log wins).
* **Duplicates.** Without an idempotent producer a retried send can land twice
  with the same CloudEvents id; the second copy is ignored. The window is
  counted in records, so it is a function of the log alone.

State must depend only on the order of records *within* each partition: that
is the only order Kafka defines, and replays read partitions interleaved.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import orjson

from omnistock.events.catalogue import OwnershipClaimed
from omnistock.events.codec import PoisonMessage, decode
from omnistock.events.envelope import Envelope, Event, Position


class Projection(Protocol):
    """State that evolves by events: ``apply`` is state + event → state."""

    def apply(self, envelope: Envelope[Event]) -> object: ...

    def canonical(self) -> Any:
        """The state as plain JSON-able data, identical for identical state."""
        ...


P = TypeVar("P", bound=Projection)


def canonical_json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def state_hash(value: Any) -> str:
    """SHA-256 of the canonical JSON of ``value``: equal hashes, equal state."""
    return hashlib.sha256(canonical_json(value)).hexdigest()


@dataclass(slots=True)
class _RecentIds:
    capacity: int
    order: deque[str] = field(default_factory=deque)
    members: set[str] = field(default_factory=set)

    def seen(self, event_id: str) -> bool:
        if event_id in self.members:
            return True
        self.order.append(event_id)
        self.members.add(event_id)
        if len(self.order) > self.capacity:
            self.members.discard(self.order.popleft())
        return False


@dataclass(slots=True)
class FoldStats:
    applied: int = 0
    claims: int = 0
    fenced: int = 0
    duplicates: int = 0
    poison: int = 0


class Fold(Generic[P]):
    """Applies records of any number of partitions, in log order per partition."""

    def __init__(self, projection: P, *, duplicate_window: int = 10_000) -> None:
        self.projection = projection
        self.duplicate_window = duplicate_window
        self.epochs: dict[tuple[str, int], int] = {}
        #: The source (writer identity) whose claim holds each partition.
        self.owners: dict[tuple[str, int], str] = {}
        self.stats = FoldStats()
        self._recent: dict[tuple[str, int], _RecentIds] = {}

    def current_epoch(self, topic: str, partition: int) -> int:
        return self.epochs.get((topic, partition), 0)

    def admit(self, envelope: Envelope[Event]) -> bool:
        """Whether ``envelope`` counts; takes in ownership claims on the way.

        For readers that run the projection themselves to see what it changed.
        """
        position = envelope.position
        if position is None:
            raise ValueError("only envelopes read from the log can be folded")
        partition = (position.topic, position.partition)
        recent = self._recent.get(partition)
        if recent is None:
            recent = self._recent[partition] = _RecentIds(self.duplicate_window)
        if recent.seen(envelope.id):
            self.stats.duplicates += 1
            return False
        event = envelope.event
        if isinstance(event, OwnershipClaimed):
            self._claim(partition, envelope.source, event)
            return False
        if envelope.epoch is not None and (
            envelope.epoch != self.epochs.get(partition, 0)
            or envelope.source != self.owners.get(partition)
        ):
            # An old owner, or a rival that lost the race to claim this epoch.
            self.stats.fenced += 1
            return False
        return True

    def apply(self, envelope: Envelope[Event]) -> bool:
        """Fold one envelope read from the log; True when it changed the projection's input."""
        if not self.admit(envelope):
            return False
        self.projection.apply(envelope)
        self.stats.applied += 1
        return True

    def _claim(self, partition: tuple[str, int], source: str, claim: OwnershipClaimed) -> None:
        # A claim for another partition, or not above the current epoch, is a stale writer's.
        if claim.partition != partition[1] or claim.epoch <= self.epochs.get(partition, 0):
            self.stats.fenced += 1
            return
        self.epochs[partition] = claim.epoch
        self.owners[partition] = source
        self.stats.claims += 1

    def apply_record(
        self,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]],
        position: Position,
        timestamp_ms: int | None = None,
    ) -> bool:
        """Decode and fold a raw record. Poison is skipped here exactly as the live consumer
        dead-letters it, so a replay and the live fold agree."""
        try:
            envelope = decode(value, headers, position, timestamp_ms)
        except PoisonMessage:
            self.stats.poison += 1
            return False
        return self.apply(envelope)

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to continue folding exactly as if from offset 0."""
        return {
            "projection": self.projection.canonical(),
            "epochs": [[t, p, e, self.owners[t, p]] for (t, p), e in self.epochs.items()],
            "recent": [[t, p, list(ids.order)] for (t, p), ids in self._recent.items()],
        }

    @classmethod
    def restore(
        cls, data: dict[str, Any], projection: P, *, duplicate_window: int = 10_000
    ) -> Fold[P]:
        """A fold continuing from :meth:`snapshot`; ``projection`` is rebuilt by the caller."""
        fold = cls(projection, duplicate_window=duplicate_window)
        for topic, partition, epoch, owner in data["epochs"]:
            fold.epochs[topic, partition] = epoch
            fold.owners[topic, partition] = owner
        for topic, partition, ids in data["recent"]:
            recent = fold._recent[topic, partition] = _RecentIds(duplicate_window)
            for event_id in ids:
                recent.seen(event_id)
        return fold

    def canonical(self) -> Any:
        return {
            "state": self.projection.canonical(),
            "epochs": sorted([t, p, e, self.owners[t, p]] for (t, p), e in self.epochs.items()),
        }

    def state_hash(self) -> str:
        return state_hash(self.canonical())
