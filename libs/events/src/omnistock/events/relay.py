"""A stateless consumer that writes the events another context's facts imply.

``translate`` is pure, so a redelivered or replayed fact yields the same events
with the same ids (:func:`derived_id`): every reader's fold treats the repeat
as a duplicate. Nothing is committed before the derived events are in the log.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiokafka import TopicPartition

from omnistock.events.consumer import ConsumerRunner
from omnistock.events.envelope import Envelope, Event, derived_id
from omnistock.events.producer import EventProducer
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import Topic

Translate = Callable[[Envelope[Event]], Sequence[Event]]


class Relay:
    def __init__(
        self,
        kafka: KafkaSettings,
        producer: EventProducer,
        *,
        group_id: str,
        topics: Sequence[Topic],
        translate: Translate,
    ) -> None:
        self.producer = producer
        self.translate = translate
        self._sends: dict[TopicPartition, list[asyncio.Task[Any]]] = defaultdict(list)
        self.runner = ConsumerRunner(
            kafka,
            group_id=group_id,
            topics=topics,
            handler=self.handle,
            producer=producer,
            batch_done=self.batch_done,
            batch_failed=self.batch_failed,
            client_id=producer.source,
        )

    async def handle(self, envelope: Envelope[Event]) -> None:
        assert envelope.position is not None
        tp = TopicPartition(envelope.position.topic, envelope.position.partition)
        for n, event in enumerate(self.translate(envelope)):
            self._sends[tp].append(
                asyncio.create_task(
                    self.producer.publish(
                        event,
                        id=derived_id(envelope.id, n),
                        correlation_id=envelope.correlation_id or envelope.id,
                        causation_id=envelope.id,
                    )
                )
            )

    async def batch_done(self, next_offsets: Mapping[TopicPartition, int]) -> None:
        await asyncio.gather(*(task for tp in next_offsets for task in self._sends.pop(tp, [])))

    async def batch_failed(self, tp: TopicPartition) -> None:
        # Stateless: the failed batch is simply read again.
        for task in self._sends.pop(tp, []):
            task.cancel()
