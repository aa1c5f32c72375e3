"""The one way omnistock writes to Kafka: acks=all, keyed, CloudEvents headers, bounded retries."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from aiokafka.structs import RecordMetadata

from omnistock.events import metrics, tracing
from omnistock.events.codec import encode
from omnistock.events.envelope import Envelope, Event, Position
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import Topic

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)


class BrokerUnavailable(Exception):
    """The log could not confirm a write in time; nothing may be acknowledged to the caller.

    APIs turn this into 503 with ``Retry-After``; the caller retries with the same
    idempotency key, which is safe because every handler is idempotent.
    """

    def __init__(self, message: str, retry_after_seconds: int = 1) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, KafkaConnectionError | KafkaTimeoutError | asyncio.TimeoutError):
        return True
    return isinstance(exc, KafkaError) and bool(exc.retriable)


class EventProducer:
    """Writes envelopes; returns only once the broker holds them (acks=all).

    At most ``kafka.produce_max_in_flight`` sends are inside the Kafka client at once.
    aiokafka parks every send that does not fit its partition's open batch and wakes
    them all each time a batch leaves, so the cost of a drain grows with the number
    parked: with 5,000 concurrent API requests (10,000 sends, half of them to one hot
    partition) a 2-CPU VM wrote ~50 messages/s and every send gave up after its retries.
    Sends beyond the bound wait on a semaphore instead (woken one at a time, in
    order), and batches are large enough (``kafka.produce_batch_bytes``) for the
    bounded sends of a hot partition to share one produce request: the same burst then
    took ~4 s and none failed. Waiting for a slot counts against the delivery timeout,
    so an overloaded producer still answers with :class:`BrokerUnavailable` in bounded time.
    """

    def __init__(self, kafka: KafkaSettings, source: str, *, delivery_timeout_s: float = 5.0):
        self.kafka = kafka
        self.source = source
        self.delivery_timeout_s = delivery_timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._slots: asyncio.Semaphore | None = None

    async def start(self) -> None:
        producer = AIOKafkaProducer(
            **self.kafka.client_options(),
            acks="all",
            linger_ms=self.kafka.linger_ms,
            retry_backoff_ms=self.kafka.produce_retry_backoff_ms,
            max_batch_size=self.kafka.produce_batch_bytes,
            # Correctness never rests on the idempotent producer (the dev broker has none).
            enable_idempotence=False,
        )
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise BrokerUnavailable(
                f"cannot reach Kafka at {self.kafka.bootstrap_servers}"
            ) from exc
        self._slots = asyncio.Semaphore(self.kafka.produce_max_in_flight)
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def __aenter__(self) -> EventProducer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    def topic_name(self, topic: Topic) -> str:
        return topic.physical(self.kafka.topic_prefix)

    def envelope(self, event: E, **context: Any) -> Envelope[E]:
        """Wrap ``event`` with this producer's source and the current trace context."""
        traceparent, tracestate = tracing.current_trace_context()
        context.setdefault("traceparent", traceparent)
        context.setdefault("tracestate", tracestate)
        return Envelope(event=event, source=self.source, **context)

    async def publish(
        self,
        event: E,
        *,
        topic: Topic | None = None,
        partition: int | None = None,
        **context: Any,
    ) -> Envelope[E]:
        """Write one event and return its envelope with the position the log gave it."""
        return await self.send(self.envelope(event, **context), topic=topic, partition=partition)

    async def send(
        self, envelope: Envelope[E], *, topic: Topic | None = None, partition: int | None = None
    ) -> Envelope[E]:
        target = topic or envelope.event.topic
        if target is None:
            raise ValueError(f"{envelope.type} has no home topic: name one")
        name = self.topic_name(target)
        with tracing.send_span(name, envelope) as span:
            if span is not None:
                # The consumer's process span is parented on this send span.
                envelope = tracing.stamped(envelope)
            record = encode(envelope)
            position = await self.send_raw(
                name, record.key, record.value, record.headers, partition=partition
            )
            if span is not None:
                tracing.sent(span, position)
        metrics.EVENTS_PRODUCED.labels(name, envelope.type).inc()
        return envelope.at(position)

    async def send_many(self, envelopes: Sequence[Envelope[Any]]) -> list[Envelope[Any]]:
        """Write several events concurrently; all are in the log when this returns."""
        return list(await asyncio.gather(*(self.send(envelope) for envelope in envelopes)))

    async def send_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]],
        *,
        partition: int | None = None,
    ) -> Position:
        """Write bytes as they are (dead letters keep the original record intact)."""
        if self._producer is None:
            raise BrokerUnavailable("producer is not started")
        attempts = self.kafka.produce_retries + 1
        backoff = self.kafka.produce_retry_backoff_ms / 1000
        started = time.perf_counter()
        # One deadline for the whole write, retries included: a caller waiting on an API
        # answer hears 503 within delivery_timeout_s when the broker is gone, not after
        # every retry has waited its own full timeout (a frozen broker never answers).
        deadline = asyncio.get_running_loop().time() + self.delivery_timeout_s
        for attempt in range(attempts):
            try:
                # It covers waiting for a slot, for metadata and for the acknowledgement.
                # (asyncio.timeout, unlike wait_for, costs no extra task.)
                async with asyncio.timeout_at(deadline):
                    metadata = await self._send_once(topic, key, value, headers, partition)
            except Exception as exc:
                if not _is_transient(exc):
                    raise
                log.warning(
                    "write to %s failed (attempt %d/%d): %r", topic, attempt + 1, attempts, exc
                )
                if attempt + 1 == attempts or asyncio.get_running_loop().time() >= deadline:
                    break
                # Backing off between retries of a failed send, not waiting on a condition.
                await asyncio.sleep(backoff * 2**attempt)
                continue
            metrics.PRODUCE_SECONDS.labels(topic).observe(time.perf_counter() - started)
            return Position(topic, metadata.partition, metadata.offset)
        metrics.PRODUCE_FAILURES.labels(topic).inc()
        raise BrokerUnavailable(
            f"Kafka did not confirm a write to {topic} within {self.delivery_timeout_s:g}s"
        )

    async def _send_once(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]],
        partition: int | None,
    ) -> RecordMetadata:
        assert self._producer is not None
        assert self._slots is not None
        # Held until the broker acknowledges: the bound is on sends inside the client.
        async with self._slots:
            delivery = await self._producer.send(
                topic, value, key=key, headers=list(headers), partition=partition
            )
            return await delivery
