"""Envelope encoding and decoding without a broker: every event, every failure mode."""

from __future__ import annotations

import orjson
import pytest

from omnistock.events import codec
from omnistock.events.catalogue import CATALOGUE, EVENT_TYPES, LocationRegistered, StockReceived
from omnistock.events.envelope import Envelope, Position
from omnistock.events.examples import EXAMPLES


def test_every_event_type_has_an_example_and_a_unique_type() -> None:
    assert set(EXAMPLES) == set(EVENT_TYPES)
    assert len(CATALOGUE) == len(EVENT_TYPES)


@pytest.mark.parametrize("model", EVENT_TYPES, ids=lambda m: m.__name__)
def test_round_trip_keeps_event_and_context(model: type) -> None:
    envelope = Envelope(
        event=EXAMPLES[model],
        source="/omnistock/test",
        correlation_id="corr-1",
        causation_id="cause-1",
        epoch=3,
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    record = codec.encode(envelope)
    headers = dict(record.headers)
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_type"] == model.event_type.encode()
    assert headers["content-type"] == b"application/json"
    decoded = codec.decode(record.value, record.headers, Position("t", 0, 7))
    assert decoded.event == envelope.event
    assert decoded.id == envelope.id
    assert decoded.time == envelope.time
    assert (decoded.correlation_id, decoded.causation_id, decoded.epoch) == ("corr-1", "cause-1", 3)
    assert decoded.traceparent == envelope.traceparent
    assert decoded.position == Position("t", 0, 7)
    expected_key = envelope.event.key()
    assert record.key == (expected_key.encode() if expected_key else None)


def _stock_record() -> codec.Record:
    return codec.encode(Envelope(event=EXAMPLES[StockReceived], source="/test"))


def test_missing_header_is_poison() -> None:
    record = _stock_record()
    headers = [(k, v) for k, v in record.headers if k != "ce_type"]
    with pytest.raises(codec.MissingHeader, match="ce_type"):
        codec.decode(record.value, headers)


def test_unknown_type_is_poison() -> None:
    record = _stock_record()
    headers = [(k, b"io.omnistock.Nope" if k == "ce_type" else v) for k, v in record.headers]
    with pytest.raises(codec.UnknownEventType, match=r"io\.omnistock\.Nope"):
        codec.decode(record.value, headers)


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"receipt_id": "r"}', b"[]", orjson.dumps({"quantity": -5})],
)
def test_malformed_body_is_poison(body: bytes) -> None:
    with pytest.raises(codec.MalformedEvent):
        codec.decode(body, _stock_record().headers)


def test_newer_version_than_reader_is_poison() -> None:
    record = _stock_record()
    headers = [(k, b"9" if k == "ce_schemaversion" else v) for k, v in record.headers]
    with pytest.raises(codec.UnsupportedVersion, match="newer"):
        codec.decode(record.value, headers)


def test_version_one_location_is_upcast() -> None:
    v1 = {
        "location_id": "wh-1",
        "name": "Hamburg DC",
        "type": "warehouse",
        "region": "DE-HH",
        "latitude": 53.55,
        "longitude": 9.99,
    }
    record = codec.encode(Envelope(event=EXAMPLES[LocationRegistered], source="/test"))
    headers = [(k, b"1" if k == "ce_schemaversion" else v) for k, v in record.headers]
    event = codec.decode(orjson.dumps(v1), headers).event
    assert isinstance(event, LocationRegistered)
    assert event.kind == "warehouse"
    assert event.fulfils_online is True


def test_header_that_is_not_utf8_is_poison() -> None:
    record = _stock_record()
    with pytest.raises(codec.MalformedEvent):
        codec.decode(record.value, [*record.headers, ("ce_subject", b"\xff\xfe")])
