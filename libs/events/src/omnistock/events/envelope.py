"""The event base class and the CloudEvents envelope around it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from omnistock.events.topics import Topic


class Event(BaseModel):
    """A fact in the log. Subclasses declare their CloudEvents type, version, topic and key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: CloudEvents ``type``; stable across schema versions.
    event_type: ClassVar[str]
    #: Version of this model's schema; older versions are upcast on read.
    schema_version: ClassVar[int] = 1
    #: Where the event is written; None for markers written to their writer's own partition.
    topic: ClassVar[Topic | None]
    #: The field whose value is the Kafka key (and the CloudEvents subject).
    key_field: ClassVar[str | None]

    def key(self) -> str | None:
        return None if self.key_field is None else str(getattr(self, self.key_field))


E = TypeVar("E", bound=Event)


@dataclass(frozen=True, slots=True)
class Position:
    """Where a record sits in the log (physical topic name)."""

    topic: str
    partition: int
    offset: int

    def token(self) -> str:
        """Opaque form handed to API clients for read-your-writes (``consistent_with``)."""
        return f"{self.topic}:{self.partition}:{self.offset}"

    @classmethod
    def from_token(cls, token: str) -> Position:
        topic, partition, offset = token.rsplit(":", 2)
        return cls(topic, int(partition), int(offset))


def new_id() -> str:
    return str(uuid.uuid4())


_DERIVED = uuid.UUID("6f0c2d1e-3b7a-4f5e-9c1d-0a8b7e6d5c4b")


def derived_id(cause_id: str, *parts: object) -> str:
    """The id of an event written because of ``cause_id``: the same on every redelivery,
    so a translated event written twice is recognised as one by the fold."""
    return str(uuid.uuid5(_DERIVED, "/".join([cause_id, *map(str, parts)])))


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Envelope(Generic[E]):
    """An event with its CloudEvents context attributes and, once read, its log position."""

    event: E
    source: str
    id: str = field(default_factory=new_id)
    time: datetime = field(default_factory=utcnow)
    correlation_id: str | None = None
    causation_id: str | None = None
    #: Ownership epoch of the partition owner that decided this event (rule 5 fencing).
    epoch: int | None = None
    traceparent: str | None = None
    tracestate: str | None = None
    position: Position | None = None
    #: Kafka timestamp of the record, when read from the log.
    log_time: datetime | None = None

    @property
    def type(self) -> str:
        return self.event.event_type

    @property
    def subject(self) -> str | None:
        return self.event.key()

    def at(self, position: Position) -> Envelope[E]:
        return replace(self, position=position)

    def caused(self, event: Event, source: str, **kwargs: Any) -> Envelope[Event]:
        """An envelope for an event this one caused: same correlation, causation = this id."""
        return Envelope(
            event=event,
            source=source,
            correlation_id=self.correlation_id or self.id,
            causation_id=self.id,
            traceparent=self.traceparent,
            tracestate=self.tracestate,
            **kwargs,
        )
