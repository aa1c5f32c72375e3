"""libs/events through the real broker: envelopes, upcasting, dead letters, replay, fencing."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from omnistock.devstack.waiting import eventually
from omnistock.events import codec
from omnistock.events.admin import ensure_topics
from omnistock.events.catalogue import (
    EVENT_TYPES,
    LocationRegistered,
    OwnershipClaimed,
    StockReceived,
)
from omnistock.events.consumer import ConsumerRunner
from omnistock.events.envelope import Envelope, Event
from omnistock.events.examples import EXAMPLES
from omnistock.events.fold import Fold
from omnistock.events.producer import BrokerUnavailable, EventProducer
from omnistock.events.replay import replay
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import INVENTORY_LOCATIONS, INVENTORY_STOCK, Topic

pytestmark = pytest.mark.integration


async def read_all(kafka: KafkaSettings, topic: str, expected: int) -> list[Any]:
    """Every record of ``topic`` once ``expected`` of them are there."""
    consumer = AIOKafkaConsumer(
        topic, **kafka.client_options(), group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    records: list[Any] = []
    try:

        async def fetched() -> bool:
            for batch in (await consumer.getmany(timeout_ms=100)).values():
                records.extend(batch)
            return len(records) >= expected

        await eventually(fetched, message=f"{expected} records on {topic}")
    finally:
        await consumer.stop()
    return records


class Collector:
    """A handler that remembers what it was given."""

    def __init__(self) -> None:
        self.seen: list[Envelope[Event]] = []

    async def __call__(self, envelope: Envelope[Event]) -> None:
        self.seen.append(envelope)


def runner(
    kafka: KafkaSettings, producer: EventProducer, topics: list[Topic], handler: Any, **kw: Any
) -> ConsumerRunner:
    return ConsumerRunner(
        kafka, group_id="test-group", topics=topics, handler=handler, producer=producer, **kw
    )


async def test_every_event_type_round_trips_through_the_broker(
    topics: KafkaSettings, producer: EventProducer
) -> None:
    sent = await producer.send_many(
        [
            producer.envelope(EXAMPLES[model], correlation_id="corr", causation_id="cause")
            for model in EVENT_TYPES
            if model.topic is not None
        ]
    )
    marker = await producer.publish(
        EXAMPLES[OwnershipClaimed], topic=INVENTORY_STOCK, partition=3, epoch=None
    )
    by_topic = Counter(e.position.topic for e in [*sent, marker] if e.position)
    received: dict[str, Envelope[Event]] = {}
    for topic, count in by_topic.items():
        for record in await read_all(topics, topic, count):
            envelope = codec.decode(record.value, record.headers, None, record.timestamp)
            received[envelope.id] = envelope
            assert record.key == (envelope.event.key() or "").encode() or record.key is None
    for envelope in [*sent, marker]:
        got = received[envelope.id]
        assert got.event == envelope.event
        assert (got.type, got.source, got.time) == (envelope.type, envelope.source, envelope.time)
        assert (got.correlation_id, got.causation_id) == (
            envelope.correlation_id,
            envelope.causation_id,
        )
    assert len(received) == len(EVENT_TYPES)


async def test_a_version_one_event_is_upcast_when_consumed(
    topics: KafkaSettings, producer: EventProducer
) -> None:
    v1_body = orjson.dumps(
        {
            "location_id": "store-1",
            "name": "Old Town",
            "type": "store",
            "region": "DE-BE",
            "latitude": 52.5,
            "longitude": 13.4,
        }
    )
    template = codec.encode(Envelope(event=EXAMPLES[LocationRegistered], source="/legacy"))
    headers = [(k, b"1" if k == "ce_schemaversion" else v) for k, v in template.headers]
    await producer.send_raw(
        INVENTORY_LOCATIONS.physical(topics.topic_prefix), b"store-1", v1_body, headers
    )
    seen = Collector()
    async with runner(topics, producer, [INVENTORY_LOCATIONS], seen):
        await eventually(lambda: seen.seen, message="the v1 event is handled")
    event = seen.seen[0].event
    assert isinstance(event, LocationRegistered)
    assert (event.kind, event.fulfils_online) == ("store", False)


async def test_poison_goes_to_the_dlq_with_its_reason_and_consumption_continues(
    topics: KafkaSettings, producer: EventProducer
) -> None:
    stock = INVENTORY_STOCK.physical(topics.topic_prefix)
    good = codec.encode(Envelope(event=EXAMPLES[StockReceived], source="/t"))

    def with_header(name: str, value: bytes | None) -> list[tuple[str, bytes]]:
        kept = [(k, v) for k, v in good.headers if k != name]
        return kept if value is None else [*kept, (name, value)]

    first = await producer.publish(EXAMPLES[StockReceived])
    await producer.send_raw(stock, good.key, b'{"quantity": "lots"', good.headers)
    await producer.send_raw(stock, good.key, good.value, with_header("ce_type", b"io.x.Nope"))
    await producer.send_raw(stock, good.key, good.value, with_header("ce_id", None))
    last = await producer.publish(EXAMPLES[StockReceived])

    seen = Collector()
    async with runner(topics, producer, [INVENTORY_STOCK], seen) as consumer:
        await eventually(lambda: len(seen.seen) == 2, message="both good events handled")
        dead = await read_all(topics, f"{stock}.dlq", 3)
        assert consumer._task is not None
        assert not consumer._task.done(), "the consumer is still running"
    assert [e.id for e in seen.seen] == [first.id, last.id]
    reasons = sorted(dict(r.headers)["dlq_reason"].decode() for r in dead)
    assert reasons == ["malformed_event", "missing_header", "unknown_event_type"]
    for record in dead:
        headers = dict(record.headers)
        assert headers["dlq_topic"].decode() == stock
        assert int(headers["dlq_offset"]) in range(1, 4)
        assert headers["dlq_error"]
        assert headers["dlq_group"] == b"test-group"
        assert record.key == good.key


async def test_a_failing_handler_is_retried_and_nothing_is_skipped(
    topics: KafkaSettings, producer: EventProducer
) -> None:
    sent = [await producer.publish(EXAMPLES[StockReceived]) for _ in range(3)]
    seen: list[str] = []
    failures = {"left": 2}

    async def flaky(envelope: Envelope[Event]) -> None:
        if envelope.id == sent[1].id and failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("database restarting")
        seen.append(envelope.id)

    async with runner(topics, producer, [INVENTORY_STOCK], flaky, retry_backoff_s=0.01):
        await eventually(lambda: len(set(seen)) == 3, message="all three handled")
    # At-least-once: the first may be redelivered with its batch, none is lost or reordered.
    assert [i for i in dict.fromkeys(seen)] == [e.id for e in sent]


async def test_a_partition_whose_state_cannot_be_restored_is_parked_until_it_can(
    topics: KafkaSettings, producer: EventProducer
) -> None:
    """The database behind batch_done and batch_failed is down for a while: the consumer
    keeps the partition, retries the restore, and handles everything once it is back."""
    sent = [await producer.publish(EXAMPLES[StockReceived]) for _ in range(3)]
    database = {"up": False, "restores": 0, "failed_restores": 0}
    done: list[str] = []
    pending: list[str] = []

    async def handle(envelope: Envelope[Event]) -> None:
        pending.append(envelope.id)

    async def batch_done(_: Any) -> None:
        if not database["up"]:
            raise ConnectionRefusedError("database down")
        done.extend(pending)
        pending.clear()

    async def batch_failed(_: Any) -> None:
        pending.clear()
        if not database["up"]:
            database["failed_restores"] += 1
            raise ConnectionRefusedError("database down")
        database["restores"] += 1

    consumer = runner(
        topics,
        producer,
        [INVENTORY_STOCK],
        handle,
        batch_done=batch_done,
        batch_failed=batch_failed,
        retry_backoff_s=0.01,
        max_retry_backoff_s=0.05,
    )
    async with consumer:
        await eventually(lambda: database["failed_restores"] >= 3, message="restores retried")
        assert not done
        database["up"] = True
        await eventually(lambda: set(done) >= {e.id for e in sent}, message="all handled")
        assert database["restores"] >= 1
        # Still consuming: what comes after the outage is handled too.
        later = await producer.publish(EXAMPLES[StockReceived])
        await eventually(lambda: later.id in done, message="the consumer is alive")
    assert list(dict.fromkeys(done))[:3] == [e.id for e in sent]


async def test_a_failed_assignment_is_retried_before_anything_is_handled(
    topics: KafkaSettings, producer: EventProducer
) -> None:
    sent = await producer.publish(EXAMPLES[StockReceived])
    starts: dict[str, Any] = {"tries": 0}
    seen: list[str] = []

    async def on_assigned(partitions: set[Any]) -> dict[Any, int]:
        starts["tries"] += 1
        if starts["tries"] < 3:
            raise ConnectionRefusedError("database down")
        starts["ready"] = True
        return {tp: 0 for tp in partitions}

    async def handle(envelope: Envelope[Event]) -> None:
        assert starts.get("ready"), "handled before its start position was known"
        seen.append(envelope.id)

    consumer = runner(
        topics, producer, [INVENTORY_STOCK], handle, on_assigned=on_assigned, retry_backoff_s=0.01
    )
    async with consumer:
        await eventually(lambda: sent.id in seen, message="handled after the retries")


class OnHand:
    def __init__(self) -> None:
        self.on_hand: Counter[str] = Counter()

    def apply(self, envelope: Envelope[Event]) -> None:
        if isinstance(envelope.event, StockReceived):
            self.on_hand[f"{envelope.event.sku}@{envelope.event.location_id}"] += (
                envelope.event.quantity
            )

    def canonical(self) -> Any:
        return dict(self.on_hand)


async def test_replay_from_offset_zero_gives_the_live_state_hash(
    topics: KafkaSettings, producer: EventProducer
) -> None:
    receipts = [
        producer.envelope(
            StockReceived(
                receipt_id=f"r{i}", sku=f"SKU-{i % 37}", location_id=f"s{i % 3}", quantity=1 + i % 5
            )
        )
        for i in range(400)
    ]
    await producer.send_many(receipts)
    live = Fold(OnHand())

    async def handle(envelope: Envelope[Event]) -> None:
        live.apply(envelope)

    async with runner(topics, producer, [INVENTORY_STOCK], handle):
        await eventually(lambda: live.stats.applied == 400, message="live fold caught up")
    rebuilt = Fold(OnHand())
    report = await replay(topics, [INVENTORY_STOCK], rebuilt, name="test", progress=False)
    assert report.events == 400
    assert report.state_hash == live.state_hash()
    assert sum(rebuilt.projection.on_hand.values()) == sum(1 + i % 5 for i in range(400))


async def test_a_paused_stale_writer_is_fenced_by_the_fold(topics: KafkaSettings) -> None:
    """Owner A claims partition 0 and is paused; B claims it; A wakes and writes: ignored."""
    partition = 0

    def receipt(n: int) -> StockReceived:
        return StockReceived(receipt_id=f"r{n}", sku="SKU-1", location_id="s1", quantity=n)

    def claim(epoch: int, owner: str) -> OwnershipClaimed:
        return OwnershipClaimed(
            partition=partition, epoch=epoch, owner=owner, claimed_at=datetime.now(UTC)
        )

    async with (
        EventProducer(topics, source="/owner-a") as a,
        EventProducer(topics, source="/owner-b") as b,
    ):
        await a.publish(claim(1, "a"), topic=INVENTORY_STOCK, partition=partition)
        await a.publish(receipt(1), partition=partition, epoch=1)
        # A stalls here (GC pause, network partition); B takes the partition over.
        await b.publish(claim(2, "b"), topic=INVENTORY_STOCK, partition=partition)
        await b.publish(receipt(10), partition=partition, epoch=2)
        # A resumes and writes what it decided before noticing: void for every reader.
        await asyncio.gather(
            a.publish(receipt(100), partition=partition, epoch=1),
            a.publish(claim(1, "a"), topic=INVENTORY_STOCK, partition=partition),
        )
        await b.publish(receipt(1000), partition=partition, epoch=2)
    fold = Fold(OnHand())
    await replay(topics, [INVENTORY_STOCK], fold, name="fence", progress=False)
    assert fold.projection.on_hand["SKU-1@s1"] == 1 + 10 + 1000
    assert fold.stats.fenced == 2
    assert fold.owners[(INVENTORY_STOCK.physical(topics.topic_prefix), partition)] == "/owner-b"


async def test_an_unreachable_broker_is_a_typed_error_not_a_hang(embedded_broker: Any) -> None:
    # Shutdown flushes unacknowledged sends until request_timeout_ms: keep the test short.
    kafka = KafkaSettings(
        bootstrap_servers=embedded_broker.bootstrap_servers,
        produce_retries=1,
        produce_retry_backoff_ms=10,
        request_timeout_ms=1_000,
    )
    await ensure_topics(kafka, [INVENTORY_STOCK])
    async with EventProducer(kafka, source="/t", delivery_timeout_s=0.5) as producer:
        await producer.publish(EXAMPLES[StockReceived])
        embedded_broker.kill()
        with pytest.raises(BrokerUnavailable):
            await producer.publish(EXAMPLES[StockReceived])
