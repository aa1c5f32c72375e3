"""Where the pos-gateway meets Kafka and PostgreSQL.

* :class:`LedgerView`: every replica folds the whole of ``pos.transactions`` (no
  consumer group) into its :class:`PosLedger`: the de-duplication state, voidable
  transactions and terminal sequences, rebuilt from offset 0 at every start.
* :class:`SalesProjector`: a consumer-group member that folds the partitions it
  owns and adds each counted transaction to the per-minute sales read model,
  together with its position.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from sqlalchemy.ext.asyncio import AsyncEngine

from omnistock.events.consumer import ConsumerRunner
from omnistock.events.envelope import Envelope, Event, Position
from omnistock.events.fold import Fold
from omnistock.events.positions import load_positions, save_positions
from omnistock.events.producer import EventProducer
from omnistock.events.settings import KafkaSettings
from omnistock.events.tail import TailReader
from omnistock.events.topics import POS_TRANSACTIONS
from omnistock.pos_gateway import metrics
from omnistock.pos_gateway import projections as rm
from omnistock.pos_gateway.domain.ledger import PosLedger, SalesChange

log = logging.getLogger(__name__)

SALES_GROUP = "pos-gateway-sales"


class LedgerView:
    """This replica's fold of every POS transaction, and a way to wait until it has folded
    given positions (a write's answer depends on what the fold made of it)."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.fold = Fold(PosLedger())
        self.reader = TailReader(kafka, [POS_TRANSACTIONS], self._record, name="pos-ledger")
        self._next: dict[tuple[str, int], int] = {}
        self._moved = asyncio.Event()

    @property
    def ledger(self) -> PosLedger:
        return self.fold.projection

    def _record(self, record: ConsumerRecord[bytes, bytes]) -> None:
        position = Position(record.topic, record.partition, record.offset)
        self.fold.apply_record(record.value, record.headers or (), position, record.timestamp)
        self._next[record.topic, record.partition] = record.offset + 1
        metrics.MISSING_TRANSACTIONS.set(self.ledger.missing_total)
        metrics.TERMINALS_WITH_GAPS.set(self.ledger.terminals_with_gaps)
        self._moved.set()

    async def reached(self, positions: Iterable[Position]) -> None:
        """Return once every position in ``positions`` is folded (callers bound the wait)."""
        wanted: dict[tuple[str, int], int] = {}
        for p in positions:
            wanted[p.topic, p.partition] = max(wanted.get((p.topic, p.partition), 0), p.offset)
        while any(self._next.get(tp, 0) <= offset for tp, offset in wanted.items()):
            # No await between the check and clear(): no record can slip in unseen.
            self._moved.clear()
            await self._moved.wait()

    async def caught_up(self, timeout_s: float) -> None:
        """Fold everything already in the log (another replica's writes), within a bound."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.reader.caught_up()


@dataclass
class _SalesPartition:
    fold: Fold[PosLedger]
    #: Offsets below this are already in the read model.
    rows_from: int
    changes: list[SalesChange] = field(default_factory=list)


class SalesProjector:
    """Keeps ``pos_sales_minutes``: each owned partition is folded from offset 0 (the ledger
    says which records count), and rows are written only past the stored position."""

    def __init__(
        self, kafka: KafkaSettings, producer: EventProducer, engine: AsyncEngine, *, log_id: str
    ) -> None:
        self.engine = engine
        self.log_id = log_id
        self.parts: dict[TopicPartition, _SalesPartition] = {}
        self.runner = ConsumerRunner(
            kafka,
            group_id=SALES_GROUP,
            topics=[POS_TRANSACTIONS],
            handler=self.handle,
            producer=producer,
            batch_done=self.batch_done,
            batch_failed=self.batch_failed,
            on_assigned=self.assigned,
            on_revoked=self.revoked,
            client_id=producer.source,
        )

    async def assigned(self, partitions: set[TopicPartition]) -> dict[TopicPartition, int]:
        async with self.engine.connect() as connection:
            stored = await load_positions(connection, SALES_GROUP)
        for tp in partitions:
            self.parts[tp] = _SalesPartition(Fold(PosLedger()), stored.offsets.get(tp, 0))
        return {tp: 0 for tp in partitions}

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self.parts.pop(tp, None)

    async def batch_failed(self, tp: TopicPartition) -> int:
        # The fold took in part of a batch that comes again: fold the partition afresh.
        self.parts.pop(tp, None)
        return (await self.assigned({tp}))[tp]

    async def handle(self, envelope: Envelope[Event]) -> None:
        assert envelope.position is not None
        part = self.parts[TopicPartition(envelope.position.topic, envelope.position.partition)]
        if not part.fold.admit(envelope):
            return
        changes = part.fold.projection.apply(envelope)
        if changes and envelope.position.offset >= part.rows_from:
            part.changes.extend(changes)

    async def batch_done(self, next_offsets: Mapping[TopicPartition, int]) -> None:
        changes = []
        # Partitions still folding what the read model already holds write nothing.
        ahead = {tp: n for tp, n in next_offsets.items() if n > self.parts[tp].rows_from}
        for tp in next_offsets:
            part = self.parts[tp]
            changes.extend(part.changes)
            part.changes = []
        if not ahead:
            return
        async with self.engine.begin() as connection:
            await rm.add_sales(connection, changes)
            await save_positions(connection, SALES_GROUP, ahead, self.log_id)
        for tp, next_offset in ahead.items():
            self.parts[tp].rows_from = next_offset
