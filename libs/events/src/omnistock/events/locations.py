"""Every registered store and warehouse, in memory on each replica (a retailer has hundreds)."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka.structs import ConsumerRecord

from omnistock.events import codec
from omnistock.events.catalogue import LocationRegistered
from omnistock.events.settings import KafkaSettings
from omnistock.events.tail import TailReader
from omnistock.events.topics import INVENTORY_LOCATIONS


class LocationsView:
    """The latest :class:`LocationRegistered` of every location, read from the log."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.locations: dict[str, LocationRegistered] = {}
        self.reader = TailReader(kafka, [INVENTORY_LOCATIONS], self._record, name="locations")

    def _record(self, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            event = codec.decode(record.value, record.headers or ()).event
        except codec.PoisonMessage:
            return
        if isinstance(event, LocationRegistered):
            self.locations[event.location_id] = event

    async def known(self, location_id: str, wait_s: float = 1.0) -> bool:
        """Whether ``location_id`` is registered, waiting for this replica to catch up with
        the log first when it is not (a location registered a moment ago elsewhere)."""
        if location_id not in self.locations:
            await self.caught_up(wait_s)
        return location_id in self.locations

    async def caught_up(self, wait_s: float = 1.0) -> None:
        """Read what the log holds now, within ``wait_s`` (then go on with what is known)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                await self.reader.caught_up()
