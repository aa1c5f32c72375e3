"""CloudEvents 1.0 in Kafka binary content mode: ``ce_*`` headers and a JSON body."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from omnistock.events.catalogue import CATALOGUE
from omnistock.events.envelope import Envelope, Event, Position
from omnistock.events.upcasting import MissingUpcaster, upcast

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"

H_SPECVERSION = "ce_specversion"
H_ID = "ce_id"
H_SOURCE = "ce_source"
H_TYPE = "ce_type"
H_TIME = "ce_time"
H_SUBJECT = "ce_subject"
H_SCHEMAVERSION = "ce_schemaversion"
H_CORRELATION = "ce_correlationid"
H_CAUSATION = "ce_causationid"
H_EPOCH = "ce_epoch"
H_CONTENT_TYPE = "content-type"
H_TRACEPARENT = "traceparent"
H_TRACESTATE = "tracestate"

REQUIRED_HEADERS = (H_SPECVERSION, H_ID, H_SOURCE, H_TYPE, H_SCHEMAVERSION)

Headers = Sequence[tuple[str, bytes]]


class PoisonMessage(Exception):
    """A record that can never be handled, however often it is retried: it goes to the DLQ."""

    reason = "poison"


class MalformedEvent(PoisonMessage):
    reason = "malformed_event"


class UnknownEventType(PoisonMessage):
    reason = "unknown_event_type"


class MissingHeader(PoisonMessage):
    reason = "missing_header"


class UnsupportedVersion(PoisonMessage):
    reason = "unsupported_version"


@dataclass(frozen=True, slots=True)
class Record:
    """What goes onto the wire for one envelope."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def encode(envelope: Envelope[Any]) -> Record:
    event: Event = envelope.event
    key = event.key()
    headers = [
        (H_SPECVERSION, SPEC_VERSION.encode()),
        (H_ID, envelope.id.encode()),
        (H_SOURCE, envelope.source.encode()),
        (H_TYPE, event.event_type.encode()),
        (H_TIME, _rfc3339(envelope.time).encode()),
        (H_SCHEMAVERSION, str(event.schema_version).encode()),
        (H_CONTENT_TYPE, CONTENT_TYPE.encode()),
    ]
    if key is not None:
        headers.append((H_SUBJECT, key.encode()))
    optional = (
        (H_CORRELATION, envelope.correlation_id),
        (H_CAUSATION, envelope.causation_id),
        (H_EPOCH, None if envelope.epoch is None else str(envelope.epoch)),
        (H_TRACEPARENT, envelope.traceparent),
        (H_TRACESTATE, envelope.tracestate),
    )
    headers.extend((name, value.encode()) for name, value in optional if value is not None)
    return Record(
        key=None if key is None else key.encode(),
        value=event.__pydantic_serializer__.to_json(event),
        headers=headers,
    )


def decode(
    value: bytes | None,
    headers: Headers,
    position: Position | None = None,
    timestamp_ms: int | None = None,
) -> Envelope[Event]:
    """Parse one record; raises a :class:`PoisonMessage` subclass saying what is wrong."""
    try:
        fields = {name: raw.decode() for name, raw in headers}
    except UnicodeDecodeError as exc:
        raise MalformedEvent(f"a header is not UTF-8: {exc}") from exc
    missing = [name for name in REQUIRED_HEADERS if name not in fields]
    if missing:
        raise MissingHeader(f"missing CloudEvents header(s): {', '.join(missing)}")
    if fields[H_SPECVERSION] != SPEC_VERSION:
        raise UnsupportedVersion(f"CloudEvents specversion {fields[H_SPECVERSION]!r} is not 1.0")
    event_type = fields[H_TYPE]
    model = CATALOGUE.get(event_type)
    if model is None:
        raise UnknownEventType(f"unknown event type {event_type!r}")
    try:
        version = int(fields[H_SCHEMAVERSION])
        epoch = int(fields[H_EPOCH]) if H_EPOCH in fields else None
        time = datetime.fromisoformat(fields[H_TIME]) if H_TIME in fields else None
    except ValueError as exc:
        raise MalformedEvent(f"bad header value: {exc}") from exc
    if value is None:
        raise MalformedEvent(f"{event_type} record has no body")
    try:
        if version == model.schema_version:
            event = model.model_validate_json(value)
        elif version < model.schema_version:
            data = upcast(event_type, version, model.schema_version, orjson.loads(value))
            event = model.model_validate(data)
        else:
            raise UnsupportedVersion(
                f"{event_type} v{version} is newer than this reader's v{model.schema_version}"
            )
    except MissingUpcaster as exc:
        raise UnsupportedVersion(str(exc)) from exc
    except (ValidationError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise MalformedEvent(f"{event_type} v{version} body does not validate: {exc}") from exc
    return Envelope(
        event=event,
        source=fields[H_SOURCE],
        id=fields[H_ID],
        time=time or datetime.fromtimestamp((timestamp_ms or 0) / 1000, UTC),
        correlation_id=fields.get(H_CORRELATION),
        causation_id=fields.get(H_CAUSATION),
        epoch=epoch,
        traceparent=fields.get(H_TRACEPARENT),
        tracestate=fields.get(H_TRACESTATE),
        position=position,
        log_time=None if timestamp_ms is None else datetime.fromtimestamp(timestamp_ms / 1000, UTC),
    )
