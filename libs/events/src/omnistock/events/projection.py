"""The partition-owning projection: a consumer-group member folding the partitions it owns.

Each owned partition is folded from offset 0 by a fresh :class:`Fold` (the log
says what counts), so the state is the same after a restart, a rebalance or a
lost database. Two positions keep the effects exactly-once:

* ``rows_from``, the position stored with the read model in PostgreSQL: rows are
  written only for records at or past it, in the same statement as the new
  position, and only while no other member has stored a position as far
  (:class:`~omnistock.events.positions.PositionedWrite`);
* ``emit_from``, the group's committed offset in Kafka: events the fold implies
  are written only for records at or past it, and the offset is committed only
  once they are in the log. Ids derived from the causing record make a repeat
  after a crash a duplicate that every reader's fold drops.

Subclasses say what a fold is (:meth:`new_projection`), what to collect from
each folded record (:meth:`folded`), which tables they write (:attr:`writes`) and
the rows of a unit of work (:meth:`rows`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from aiokafka import TopicPartition
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from omnistock.events import sqlbatch
from omnistock.events.consumer import ConsumerRunner
from omnistock.events.envelope import Envelope, Event
from omnistock.events.fold import Fold, Projection
from omnistock.events.positions import PositionedWrite, claim_positions, log_end_offsets
from omnistock.events.producer import EventProducer
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import Topic

P = TypeVar("P", bound=Projection)


@dataclass
class OwnedPartition(Generic[P]):
    tp: TopicPartition
    fold: Fold[P]
    #: Offsets below this are already in the read model.
    rows_from: int
    #: Offsets below this had their follow-up events written (the group's committed offset).
    emit_from: int
    #: End of the log when the partition was assigned: caught up once past it.
    end_at_assignment: int
    next_offset: int = 0
    #: What :meth:`PartitionedProjection.folded` collected for the next :meth:`rows`.
    pending: list[Any] = field(default_factory=list)
    #: Follow-up writes in flight; the batch is committed only once they are in the log.
    sends: list[asyncio.Task[Any]] = field(default_factory=list)
    #: Whether :meth:`PartitionedProjection.caught_up_with` was called for this assignment.
    announced: bool = False

    @property
    def caught_up(self) -> bool:
        """Folded, and written to the read model, up to where the log ended at assignment."""
        end = self.end_at_assignment
        return self.next_offset >= end and self.rows_from >= end

    def live(self, envelope: Envelope[Event]) -> bool:
        """Whether ``envelope``'s follow-ups are still to be written (not a replay)."""
        assert envelope.position is not None
        return envelope.position.offset >= self.emit_from

    def new_row(self, envelope: Envelope[Event]) -> bool:
        """Whether ``envelope``'s effect on the read model is not stored yet."""
        assert envelope.position is not None
        return envelope.position.offset >= self.rows_from


class PartitionedProjection(Generic[P]):
    """Folds the partitions of ``topics`` this member owns; see the module docstring."""

    #: The read-model tables a unit of work writes, one :class:`sqlbatch.Write` each.
    writes: ClassVar[tuple[sqlbatch.Write, ...]] = ()

    def __init__(
        self,
        kafka: KafkaSettings,
        producer: EventProducer,
        engine: AsyncEngine,
        *,
        group_id: str,
        topics: Sequence[Topic],
        log_id: str,
    ) -> None:
        self.kafka = kafka
        self.producer = producer
        self.engine = engine
        self._autocommit = sqlbatch.autocommit(engine)
        self._write = PositionedWrite.of(*self.writes)
        self.group_id = group_id
        self.log_id = log_id
        self.parts: dict[TopicPartition, OwnedPartition[P]] = {}
        #: Set once every assigned partition has caught up with the log end seen at assignment.
        self.ready = asyncio.Event()
        self._progress = asyncio.Condition()
        self.runner = ConsumerRunner(
            kafka,
            group_id=group_id,
            topics=topics,
            handler=self.handle,
            producer=producer,
            batch_done=self.batch_done,
            batch_failed=self.batch_failed,
            on_assigned=self.assigned,
            on_revoked=self.revoked,
            client_id=producer.source,
        )

    # -- what a subclass says ----------------------------------------------------------------

    def new_projection(self) -> P:
        raise NotImplementedError

    def folded(self, part: OwnedPartition[P], envelope: Envelope[Event], result: Any) -> None:
        """Collect into ``part.pending`` / ``part.sends`` what the fold of ``envelope`` (which
        returned ``result``) means for the read model and the log."""

    def rows(self, parts: Sequence[OwnedPartition[P]]) -> Mapping[Table, sqlbatch.Rows]:
        """The rows that the ``pending`` of ``parts`` mean, per table of :attr:`writes`
        (each row once: they go in one statement, with the new positions)."""
        return {}

    async def caught_up_with(self, part: OwnedPartition[P]) -> None:
        """Called once per assignment when ``part`` first catches up (the place to reconcile
        what a replay cannot tell)."""

    # -- the consumer-group member -----------------------------------------------------------

    @property
    def caught_up(self) -> bool:
        return bool(self.parts) and all(p.caught_up for p in self.parts.values())

    async def _note_progress(self, part: OwnedPartition[P]) -> None:
        if part.caught_up and not part.announced:
            part.announced = True
            await self.caught_up_with(part)
        if self.caught_up:
            self.ready.set()

    async def assigned(self, partitions: set[TopicPartition]) -> dict[TopicPartition, int]:
        stored = await claim_positions(self.engine, self.group_id, partitions, self.log_id)
        ordered = sorted(partitions)
        ends = await log_end_offsets(self.kafka, ordered)
        committed = await asyncio.gather(*(self.runner.committed(tp) for tp in ordered))
        for tp, emit_from in zip(ordered, committed, strict=True):
            self.parts[tp] = OwnedPartition(
                tp=tp,
                fold=Fold(self.new_projection()),
                rows_from=stored[tp],
                emit_from=emit_from,
                end_at_assignment=ends.get(tp, 0),
            )
        for tp in ordered:
            await self._note_progress(self.parts[tp])
        return {tp: 0 for tp in partitions}

    async def reached(self, tp: TopicPartition, offset: int) -> bool:
        """Wait until ``tp`` is folded up to ``offset`` (callers bound the wait); False when
        this member no longer owns it."""

        def done() -> bool:
            part = self.parts.get(tp)
            return part is None or part.next_offset >= offset

        async with self._progress:
            await self._progress.wait_for(done)
        return tp in self.parts

    async def _moved(self) -> None:
        async with self._progress:
            self._progress.notify_all()

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            part = self.parts.pop(tp, None)
            if part is not None:
                for task in part.sends:
                    task.cancel()
        await self._moved()

    async def batch_failed(self, tp: TopicPartition) -> int:
        # The fold took in part of a batch that comes again: fold the partition afresh.
        await self.revoked({tp})
        return (await self.assigned({tp}))[tp]

    async def handle(self, envelope: Envelope[Event]) -> None:
        assert envelope.position is not None
        part = self.parts[TopicPartition(envelope.position.topic, envelope.position.partition)]
        part.next_offset = envelope.position.offset + 1
        if not part.fold.admit(envelope):
            return
        result = part.fold.projection.apply(envelope)
        part.fold.stats.applied += 1
        self.folded(part, envelope, result)

    async def batch_done(self, next_offsets: Mapping[TopicPartition, int]) -> None:
        """One poll's unit of work: the follow-ups of every partition in the log, then the
        rows of those ahead of the read model with their positions in one statement."""
        parts = [(self.parts[tp], next_offset) for tp, next_offset in next_offsets.items()]
        sends = [task for part, _ in parts for task in part.sends]
        for part, _ in parts:
            part.sends = []
        await asyncio.gather(*sends)
        # Partitions still folding what the read model already holds write nothing.
        ahead = {part.tp: n for part, n in parts if n > part.rows_from}
        if ahead:
            await self._write.execute(
                self._autocommit,
                consumer=self.group_id,
                log_id=self.log_id,
                next_offsets=ahead,
                rows=lambda tps: self.rows([self.parts[tp] for tp in tps]),
            )
        for part, next_offset in parts:
            part.rows_from = max(part.rows_from, next_offset)
            part.pending = []
            part.emit_from = max(part.emit_from, next_offset)
            await self._note_progress(part)
        await self._moved()
