"""Lets an API request wait, for a bounded time, for what the log says about its key.

Every replica tails the topics from their end; a request registers interest in
a key *before* it writes, so no answer can slip past between the write and the
wait. Records whose key nobody waits for are skipped before decoding.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from aiokafka.structs import ConsumerRecord

from omnistock.events import codec, tracing
from omnistock.events.envelope import Event
from omnistock.events.settings import KafkaSettings
from omnistock.events.tail import TailReader
from omnistock.events.topics import Topic


class Inbox:
    """The events of one watched key, in log order per partition, as they arrive."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.changed = asyncio.Event()

    async def until(self, done: Callable[[list[Event]], Any], timeout_s: float) -> Any:
        """``done(events)`` once it is truthy; raises TimeoutError after ``timeout_s``."""
        async with asyncio.timeout(timeout_s):
            while True:
                result = done(self.events)
                if result:
                    return result
                self.changed.clear()
                await self.changed.wait()


class Outcomes:
    """Answers by key from the tail of ``topics`` (e.g. reservation outcomes, order events)."""

    def __init__(self, kafka: KafkaSettings, topics: Sequence[Topic], *, name: str) -> None:
        self._inboxes: dict[bytes, list[Inbox]] = defaultdict(list)
        self.reader = TailReader(kafka, topics, self._record, from_beginning=False, name=name)

    def _record(self, record: ConsumerRecord[bytes, bytes]) -> None:
        inboxes = self._inboxes.get(record.key or b"")
        if not inboxes:
            return
        try:
            envelope = codec.decode(record.value, record.headers or ())
        except codec.PoisonMessage:
            return
        # The answer's way back to the waiting request, as the last hop of its trace.
        with tracing.process_span(record, envelope, None):
            for inbox in inboxes:
                inbox.events.append(envelope.event)
                inbox.changed.set()

    @contextlib.asynccontextmanager
    async def watch(self, key: str) -> AsyncIterator[Inbox]:
        """Register interest before writing, so no answer can slip past."""
        raw = key.encode()
        inbox = Inbox()
        self._inboxes[raw].append(inbox)
        try:
            yield inbox
        finally:
            self._inboxes[raw].remove(inbox)
            if not self._inboxes[raw]:
                del self._inboxes[raw]
