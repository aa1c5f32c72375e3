"""Where the pos-gateway meets Kafka and PostgreSQL.

* :class:`LedgerView`: every replica folds the whole of ``pos.transactions`` (no
  consumer group) into its :class:`PosLedger`: the de-duplication state, voidable
  transactions and terminal sequences, rebuilt from offset 0 at every start.
* :class:`SalesProjector`: a consumer-group member (a :class:`PartitionedProjection`)
  that folds the partitions it owns and adds each counted transaction to the
  per-minute sales read model, together with its position.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from aiokafka.structs import ConsumerRecord
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from omnistock.events import sqlbatch
from omnistock.events.envelope import Envelope, Event, Position
from omnistock.events.fold import Fold
from omnistock.events.producer import EventProducer
from omnistock.events.projection import OwnedPartition, PartitionedProjection
from omnistock.events.settings import KafkaSettings
from omnistock.events.tail import TailReader
from omnistock.events.topics import POS_TRANSACTIONS
from omnistock.pos_gateway import metrics
from omnistock.pos_gateway import projections as rm
from omnistock.pos_gateway.domain.ledger import PosLedger

log = logging.getLogger(__name__)

SALES_GROUP = "pos-gateway-sales"


class LedgerView:
    """This replica's fold of every POS transaction, and a way to wait until it has folded
    given positions (a write's answer depends on what the fold made of it)."""

    def __init__(self, kafka: KafkaSettings, *, resend_window: timedelta) -> None:
        self.fold = Fold(PosLedger(resend_window))
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


class SalesProjector(PartitionedProjection[PosLedger]):
    """Keeps ``pos_sales_minutes``: each owned partition is folded from offset 0 (the ledger
    says which records count), and rows are written only past the stored position."""

    writes = (rm.ADD_SALES,)

    def __init__(
        self,
        kafka: KafkaSettings,
        producer: EventProducer,
        engine: AsyncEngine,
        *,
        log_id: str,
        resend_window: timedelta,
    ) -> None:
        super().__init__(
            kafka, producer, engine, group_id=SALES_GROUP, topics=[POS_TRANSACTIONS], log_id=log_id
        )
        self.resend_window = resend_window

    def new_projection(self) -> PosLedger:
        return PosLedger(self.resend_window)

    def folded(
        self, part: OwnedPartition[PosLedger], envelope: Envelope[Event], result: Any
    ) -> None:
        if result and part.new_row(envelope):
            part.pending.extend(result)

    def rows(self, parts: Sequence[OwnedPartition[PosLedger]]) -> Mapping[Table, sqlbatch.Rows]:
        return {rm.sales_minutes: rm.sales_rows(c for part in parts for c in part.pending)}
