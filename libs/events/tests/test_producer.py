"""EventProducer under bursts: a bounded number of sends inside the Kafka client, none lost.

aiokafka wakes every send parked on a full batch each time a batch leaves, so thousands
of concurrent sends (a flash sale through the API) made it crawl until sends timed out.
The producer lets at most ``produce_max_in_flight`` sends into the client at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from omnistock.events.admin import ensure_topics
from omnistock.events.producer import BrokerUnavailable, EventProducer
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import INVENTORY_STOCK

pytestmark = pytest.mark.integration

#: One key, so every send goes to the same partition: the hot SKU of a flash sale.
HOT_KEY = b"FLASH-SKU"


async def topic(kafka: KafkaSettings) -> str:
    await ensure_topics(kafka, [INVENTORY_STOCK])
    return INVENTORY_STOCK.physical(kafka.topic_prefix)


def count_inside(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count sends between entering aiokafka's ``send`` and their delivery, and the most
    at any moment."""
    seen = {"inside": 0, "most": 0}
    original: Callable[..., Awaitable[asyncio.Future[Any]]] = AIOKafkaProducer.send

    def left(_: asyncio.Future[Any]) -> None:
        seen["inside"] -= 1

    async def send(self: AIOKafkaProducer, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        seen["inside"] += 1
        seen["most"] = max(seen["most"], seen["inside"])
        try:
            delivery = await original(self, *args, **kwargs)
        except BaseException:
            seen["inside"] -= 1
            raise
        # Runs before the sender resumes and frees its slot for the next one.
        delivery.add_done_callback(left)
        return delivery

    monkeypatch.setattr(AIOKafkaProducer, "send", send)
    return seen


async def test_sends_inside_the_client_are_bounded(
    kafka_settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    kafka = kafka_settings.model_copy(update={"produce_max_in_flight": 4})
    name = await topic(kafka)
    seen = count_inside(monkeypatch)

    async with EventProducer(kafka, source="/omnistock/test") as producer:
        positions = await asyncio.gather(
            *(producer.send_raw(name, HOT_KEY, str(i).encode(), ()) for i in range(200))
        )

    assert seen["most"] <= 4
    assert seen["inside"] == 0
    assert len({p.offset for p in positions}) == 200


async def test_a_burst_to_one_partition_lands_once_each(kafka_settings: KafkaSettings) -> None:
    name = await topic(kafka_settings)
    burst = 2_000

    async with EventProducer(kafka_settings, source="/omnistock/test") as producer:
        positions = await asyncio.gather(
            *(producer.send_raw(name, HOT_KEY, str(i).encode(), ()) for i in range(burst))
        )

    [partition] = {p.partition for p in positions}
    values = await read_values(kafka_settings, TopicPartition(name, partition), burst)
    assert sorted(values, key=int) == [str(i).encode() for i in range(burst)]


async def test_waiting_for_a_slot_counts_against_the_delivery_timeout(
    kafka_settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    kafka = kafka_settings.model_copy(update={"produce_max_in_flight": 1, "produce_retries": 0})
    name = await topic(kafka)
    never: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    entered = asyncio.Event()
    calls = 0

    async def never_delivered(self: AIOKafkaProducer, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        entered.set()
        return never

    async with EventProducer(kafka, source="/omnistock/test", delivery_timeout_s=60) as producer:
        monkeypatch.setattr(AIOKafkaProducer, "send", never_delivered)
        holder = asyncio.create_task(producer.send_raw(name, HOT_KEY, b"first", ()))
        await entered.wait()
        # The holder keeps the only slot (its deadline is 60 s); the next send has 0.5 s.
        producer.delivery_timeout_s = 0.5
        with pytest.raises(BrokerUnavailable):
            await producer.send_raw(name, HOT_KEY, b"second", ())
        holder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await holder

    # The second send gave up waiting for a slot: it never got into the client.
    assert calls == 1


async def test_one_deadline_covers_every_retry_of_a_write(
    kafka_settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frozen broker (SIGSTOP) never answers: the API must say 503 within the delivery
    timeout, not after each of the retries has waited a full timeout of its own."""
    kafka = kafka_settings.model_copy(update={"produce_retries": 3})
    name = await topic(kafka)
    never: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    calls = 0

    async def never_delivered(self: AIOKafkaProducer, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return never

    async with EventProducer(kafka, source="/omnistock/test", delivery_timeout_s=0.5) as producer:
        monkeypatch.setattr(AIOKafkaProducer, "send", never_delivered)
        with pytest.raises(BrokerUnavailable):
            await producer.send_raw(name, HOT_KEY, b"lost in a frozen broker", ())

    # The first try used up the write's deadline: no retry started a deadline of its own.
    assert calls == 1


async def read_values(kafka: KafkaSettings, tp: TopicPartition, count: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(**kafka.client_options(), group_id=None, enable_auto_commit=False)
    await consumer.start()
    values: list[bytes] = []
    try:
        consumer.assign([tp])
        consumer.seek(tp, 0)
        async with asyncio.timeout(60):
            while len(values) < count:
                batches = await consumer.getmany(tp, timeout_ms=500)
                values.extend(record.value for record in batches.get(tp, ()))
    finally:
        await consumer.stop()
    return values
