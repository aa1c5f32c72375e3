"""Where the inventory domain meets Kafka and PostgreSQL.

* :class:`StockOwner`: the consumer-group member owning some ``inventory.stock``
  partitions. It folds them (the fold decides holds), keeps the read model and
  its position in one atomic statement, relays each decision to
  ``inventory.reservations``, and writes the time-driven events (expiries) under
  its ownership epoch.
* :class:`ReservationCoordinator`: owns ``inventory.reservations`` partitions and
  drives each reservation saga from the log.
* :class:`Translator`: turns other contexts' facts (POS, orders, replenishment)
  into stock events. Stateless: the fold makes its repeats harmless.
* :class:`LocationsView`: what every replica's API reads (outcomes come from
  :class:`omnistock.events.outcomes.Outcomes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from omnistock.events import sqlbatch, tracing
from omnistock.events.catalogue import (
    CommitmentCancelled,
    HoldExpired,
    HoldOutcome,
    LocatedLine,
    OrderCancelled,
    OrderFulfilled,
    OrderPlaced,
    OwnershipClaimed,
    PosLineApplied,
    PosTransactionRecorded,
    ReorderRuleSet,
    ReplenishmentDispatched,
    ReservationCommitRequested,
    SafetyStockSet,
    StockDiscrepancyRecorded,
    StockShipped,
    TransferDispatched,
)
from omnistock.events.consumer import ConsumerRunner
from omnistock.events.envelope import Envelope, Event, derived_id
from omnistock.events.fold import Fold
from omnistock.events.locations import LocationsView as SharedLocationsView
from omnistock.events.offsets import end_offsets
from omnistock.events.positions import claim_positions
from omnistock.events.producer import EventProducer
from omnistock.events.relay import Relay
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import (
    INVENTORY_RESERVATIONS,
    INVENTORY_STOCK,
    ORDERS,
    POS_TRANSACTIONS,
    REPLENISHMENT,
)
from omnistock.inventory import metrics
from omnistock.inventory import projections as rm
from omnistock.inventory.domain.reservations import Saga, SagaCoordinator
from omnistock.inventory.domain.stock import Decision, Effects, StockBook

log = logging.getLogger(__name__)

#: Saga statuses that are an outcome of a reservation (counted by the metrics).
OUTCOMES = frozenset({"held", "rejected", "expired", "committed", "released"})

STOCK_GROUP = "inventory-stock"
RESERVATIONS_GROUP = "inventory-reservations"
TRANSLATOR_GROUP = "inventory-translator"


async def log_ends(
    kafka: KafkaSettings, partitions: Iterable[TopicPartition]
) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(**kafka.client_options(), group_id=None)
    await consumer.start()
    try:
        wanted = list(partitions)
        consumer.assign(wanted)
        return await end_offsets(consumer, wanted)
    finally:
        await consumer.stop()


# --- partition ownership of inventory.stock ------------------------------------------------


@dataclass
class _StockPartition:
    tp: TopicPartition
    fold: Fold[StockBook]
    #: Offsets below these were already written to the read model / relayed.
    rows_from: int
    relay_from: int
    #: End of the log when the partition was assigned: caught up once past it.
    end_at_assignment: int
    next_offset: int
    since_snapshot: int = 0
    #: The epoch of our own claim once the fold accepted it; None until then.
    epoch: int | None = None
    claimed_epoch: int | None = None
    levels: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    movements: list[dict[str, Any]] = field(default_factory=list)
    sends: list[asyncio.Task[Any]] = field(default_factory=list)
    last_event_at: datetime | None = None

    @property
    def caught_up(self) -> bool:
        """The read model holds everything up to where the log ended at assignment, and our
        ownership claim stands."""
        end = self.end_at_assignment
        return self.next_offset >= end and self.rows_from >= end and self.epoch is not None


class StockOwner:
    def __init__(
        self,
        kafka: KafkaSettings,
        producer: EventProducer,
        engine: AsyncEngine,
        *,
        log_id: str,
        snapshot_every: int,
        expiry_interval_s: float,
        clock: Callable[[], datetime],
    ) -> None:
        self.kafka = kafka
        self.producer = producer
        self.engine = engine
        self.autocommit = sqlbatch.autocommit(engine)
        self.log_id = log_id
        self.snapshot_every = snapshot_every
        self.expiry_interval_s = expiry_interval_s
        self.clock = clock
        self.parts: dict[TopicPartition, _StockPartition] = {}
        #: Set once every assigned partition has caught up with the log end seen at assignment.
        self.ready = asyncio.Event()
        self.runner = ConsumerRunner(
            kafka,
            group_id=STOCK_GROUP,
            topics=[INVENTORY_STOCK],
            handler=self.handle,
            producer=producer,
            batch_done=self.batch_done,
            batch_failed=self.batch_failed,
            on_assigned=self.assigned,
            on_revoked=self.revoked,
            client_id=producer.source,
        )
        self._expiry_task: asyncio.Task[None] | None = None

    @property
    def caught_up(self) -> bool:
        return bool(self.parts) and all(p.caught_up for p in self.parts.values())

    async def start(self) -> None:
        await self.runner.start()
        self._expiry_task = asyncio.create_task(self._expire_loop(), name="inventory-expiry")

    async def stop(self) -> None:
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry_task
        await self.runner.stop()

    async def _load(self, tp: TopicPartition) -> tuple[Fold[StockBook], int]:
        async with self.engine.connect() as connection:
            snapshot = await rm.load_snapshot(connection, STOCK_GROUP, tp, self.log_id)
        if snapshot is None:
            return Fold(StockBook()), 0
        next_offset, state = snapshot
        book = StockBook.from_canonical(state["projection"])
        return Fold.restore(state, book), next_offset

    async def assigned(self, partitions: set[TopicPartition]) -> dict[TopicPartition, int]:
        rows = await claim_positions(self.engine, STOCK_GROUP, partitions, self.log_id)
        ends = await log_ends(self.kafka, partitions)
        starts: dict[TopicPartition, int] = {}
        for tp in sorted(partitions):
            fold, start = await self._load(tp)
            relay_from = await self.runner.committed(tp)
            self.parts[tp] = _StockPartition(
                tp=tp,
                fold=fold,
                rows_from=rows[tp],
                relay_from=relay_from,
                end_at_assignment=ends[tp],
                next_offset=start,
            )
            starts[tp] = start
            await self._claim(self.parts[tp])
        self._note_progress()
        return starts

    def _note_progress(self) -> None:
        if self.caught_up:
            self.ready.set()

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self.parts.pop(tp, None)

    async def _claim(self, part: _StockPartition) -> None:
        # Milliseconds since 1970 rise with every claim; a claimant whose clock lags is fenced
        # and claims again above the epoch it then knows.
        epoch = max(
            int(time.time() * 1000), part.fold.current_epoch(part.tp.topic, part.tp.partition) + 1
        )
        part.claimed_epoch = epoch
        await self.producer.publish(
            OwnershipClaimed(
                partition=part.tp.partition,
                epoch=epoch,
                owner=self.producer.source,
                claimed_at=self.clock(),
            ),
            topic=INVENTORY_STOCK,
            partition=part.tp.partition,
        )

    async def handle(self, envelope: Envelope[Event]) -> None:
        assert envelope.position is not None
        tp = TopicPartition(envelope.position.topic, envelope.position.partition)
        part = self.parts[tp]
        offset = envelope.position.offset
        part.next_offset = offset + 1
        part.last_event_at = envelope.time
        if isinstance(envelope.event, OwnershipClaimed):
            part.fold.admit(envelope)
            self._after_claim(part, envelope)
            return
        if not part.fold.admit(envelope):
            return
        book = part.fold.projection
        effects = book.apply(envelope)
        part.fold.stats.applied += 1
        part.since_snapshot += 1
        if offset >= part.rows_from:
            self._collect_rows(part, envelope, effects)
        if offset >= part.relay_from:
            if effects.decision is not None:
                part.sends.append(asyncio.create_task(self._relay(envelope, effects.decision)))
            # Also while catching up, before our claim is confirmed: the record is derived
            # from the log alone (same id from any replica), and a shortfall whose offset is
            # committed without it would stay hidden for good.
            if effects.discrepancies:
                for sku, location_id in effects.discrepancies:
                    level = book.level(sku, location_id)
                    part.sends.append(
                        asyncio.create_task(
                            self.producer.publish(
                                StockDiscrepancyRecorded(
                                    sku=sku,
                                    location_id=location_id,
                                    cause_event_id=envelope.id,
                                    on_hand=level.on_hand,
                                    held=level.held,
                                    committed=level.committed,
                                ),
                                id=derived_id(envelope.id, "discrepancy", sku, location_id),
                                epoch=part.epoch,
                                partition=tp.partition,
                            )
                        )
                    )

    def _after_claim(self, part: _StockPartition, envelope: Envelope[Event]) -> None:
        tp = part.tp
        current = part.fold.current_epoch(tp.topic, tp.partition)
        mine = part.fold.owners.get((tp.topic, tp.partition)) == self.producer.source
        if mine and current == part.claimed_epoch:
            part.epoch = current
            log.info("owner of %s at epoch %d", tp, current)
        elif envelope.source == self.producer.source and envelope.epoch is None:
            if not mine and part.claimed_epoch is not None and part.claimed_epoch <= current:
                # Our claim lost (a clock behind another owner's): claim above it.
                part.sends.append(asyncio.create_task(self._claim(part)))
        elif not mine:
            part.epoch = None  # someone else took the partition over

    def _collect_rows(
        self, part: _StockPartition, envelope: Envelope[Event], effects: Effects
    ) -> None:
        assert envelope.position is not None
        book = part.fold.projection
        for seq, movement in enumerate(effects.movements):
            level = book.level(movement.sku, movement.location_id)
            part.movements.append(
                {
                    "partition": part.tp.partition,
                    "offset": envelope.position.offset,
                    "seq": seq,
                    "sku": movement.sku,
                    "location_id": movement.location_id,
                    "kind": movement.kind,
                    "document_type": movement.document_type,
                    "document_id": movement.document_id,
                    "reason": movement.reason,
                    "on_hand_change": movement.on_hand_change,
                    "held_change": movement.held_change,
                    "committed_change": movement.committed_change,
                    "unsellable_change": movement.unsellable_change,
                    "incoming_change": movement.incoming_change,
                    "on_hand": level.on_hand,
                    "held": level.held,
                    "committed": level.committed,
                    "available": level.available,
                    "event_id": envelope.id,
                    "event_type": envelope.type.rsplit(".", 1)[-1],
                    "occurred_at": envelope.time,
                }
            )
            part.levels[movement.sku, movement.location_id] = rm.level_row(
                movement.sku,
                movement.location_id,
                level.figures(),
                part.tp.partition,
                envelope.time,
            )

    async def _relay(self, envelope: Envelope[Event], decision: Decision) -> None:
        assert envelope.position is not None
        await self.producer.publish(
            HoldOutcome(
                reservation_id=decision.reservation_id,
                sku=decision.sku,
                request=decision.request,
                outcome=decision.outcome,
                allocations=[
                    LocatedLine(sku=decision.sku, quantity=q, location_id=loc)
                    for loc, q in decision.allocations
                ],
                requested=decision.requested,
                available=decision.available,
                expires_at=decision.expires_at,
                order_id=decision.order_id,
                stock_position=envelope.position.token(),
                decided_event_id=envelope.id,
                request_fingerprint=decision.request_fingerprint,
            ),
            id=derived_id(envelope.id, "outcome"),
            correlation_id=envelope.correlation_id,
            causation_id=envelope.id,
        )

    async def batch_done(self, next_offsets: Mapping[TopicPartition, int]) -> None:
        parts = [(self.parts[tp], next_offset) for tp, next_offset in next_offsets.items()]
        sends = [task for part, _ in parts for task in part.sends]
        for part, _ in parts:
            part.sends = []
        # A position must never pass an event whose follow-ups could still be lost.
        await asyncio.gather(*sends)
        # Partitions still folding what the read model already holds write nothing.
        ahead = {part.tp: n for part, n in parts if n > part.rows_from}
        if ahead:
            now = datetime.now(UTC)

            def rows(partitions: Collection[TopicPartition]) -> dict[Table, list[Any]]:
                written = [self.parts[tp] for tp in partitions]
                return {
                    rm.stock_levels: [row for p in written for row in p.levels.values()],
                    rm.stock_movements: [row for p in written for row in p.movements],
                    rm.stock_progress: [
                        rm.progress_row(p.tp.partition, ahead[p.tp], p.last_event_at, now)
                        for p in written
                    ],
                }

            await rm.STOCK_WRITE.execute(
                self.autocommit,
                consumer=STOCK_GROUP,
                log_id=self.log_id,
                next_offsets=ahead,
                rows=rows,
            )
        for part, _ in parts:
            part.levels, part.movements = {}, []
        due = [(part, n) for part, n in parts if part.since_snapshot >= self.snapshot_every]
        if due:
            # Apart from the rows: a snapshot only shortens a restart, whichever it is.
            async with self.engine.begin() as connection:
                for part, next_offset in due:
                    await rm.save_snapshot(
                        connection,
                        consumer=STOCK_GROUP,
                        tp=part.tp,
                        next_offset=next_offset,
                        log_id=self.log_id,
                        state=part.fold.snapshot(),
                    )
        for part, next_offset in parts:
            part.rows_from = max(part.rows_from, next_offset)
            part.relay_from = max(part.relay_from, next_offset)
        for part, _ in due:
            part.since_snapshot = 0
        self._note_progress()

    async def batch_failed(self, tp: TopicPartition) -> int:
        # The fold already took in part of a batch that will be redelivered: start the
        # partition again from its snapshot, exactly as after a restart.
        part = self.parts.pop(tp, None)
        if part is not None:
            for task in part.sends:
                task.cancel()
        return (await self.assigned({tp}))[tp]

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(self.expiry_interval_s)  # a timer: expiry is time-driven
            now = self.clock()
            for part in list(self.parts.values()):
                if part.epoch is None or not part.caught_up:
                    continue
                for hold in part.fold.projection.due_expiries(now):
                    try:
                        await self.producer.publish(
                            HoldExpired(reservation_id=hold.reservation_id, sku=hold.sku),
                            # The fold judges an expiry by the owner's clock at writing.
                            time=now,
                            epoch=part.epoch,
                            partition=part.tp.partition,
                        )
                    except Exception:
                        log.exception(
                            "could not expire %s/%s; will retry", hold.reservation_id, hold.sku
                        )
                        part.fold.projection.requeue_expiry(hold)


# --- reservation sagas ---------------------------------------------------------------------


@dataclass
class _SagaPartition:
    tp: TopicPartition
    fold: Fold[Any]
    coordinator: SagaCoordinator
    rows_from: int
    emit_from: int
    end_at_assignment: int
    next_offset: int = 0
    #: Sagas this batch moved, with the time of the last event that moved each.
    touched: dict[str, datetime] = field(default_factory=dict)
    #: Trace context of the event that last moved each touched saga (while tracing is on).
    traces: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    resumed: bool = False

    @property
    def caught_up(self) -> bool:
        """Folded, and written to the read model, up to where the log ended at assignment."""
        end = self.end_at_assignment
        return self.next_offset >= end and self.rows_from >= end


class ReservationCoordinator:
    def __init__(
        self,
        kafka: KafkaSettings,
        producer: EventProducer,
        engine: AsyncEngine,
        *,
        log_id: str,
        held_verdict_margin: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        self.kafka = kafka
        self.producer = producer
        self.engine = engine
        self.autocommit = sqlbatch.autocommit(engine)
        self.log_id = log_id
        self.held_verdict_margin = held_verdict_margin
        self.clock = clock
        self.parts: dict[TopicPartition, _SagaPartition] = {}
        self.ready = asyncio.Event()
        self.runner = ConsumerRunner(
            kafka,
            group_id=RESERVATIONS_GROUP,
            topics=[INVENTORY_RESERVATIONS],
            handler=self.handle,
            producer=producer,
            batch_done=self.batch_done,
            batch_failed=self.batch_failed,
            on_assigned=self.assigned,
            on_revoked=self.revoked,
            client_id=producer.source,
        )

    @property
    def caught_up(self) -> bool:
        return bool(self.parts) and all(p.caught_up for p in self.parts.values())

    async def assigned(self, partitions: set[TopicPartition]) -> dict[TopicPartition, int]:
        rows = await claim_positions(self.engine, RESERVATIONS_GROUP, partitions, self.log_id)
        ends = await log_ends(self.kafka, partitions)
        for tp in partitions:
            coordinator = SagaCoordinator()
            self.parts[tp] = _SagaPartition(
                tp=tp,
                fold=Fold(coordinator.book),
                coordinator=coordinator,
                rows_from=rows[tp],
                emit_from=await self.runner.committed(tp),
                end_at_assignment=ends[tp],
            )
        if self.caught_up:
            self.ready.set()
        # Sagas are folded from the beginning: their state is the log.
        return {tp: 0 for tp in partitions}

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self.parts.pop(tp, None)

    async def batch_failed(self, tp: TopicPartition) -> int:
        self.parts.pop(tp, None)
        return (await self.assigned({tp}))[tp]

    async def handle(self, envelope: Envelope[Event]) -> None:
        assert envelope.position is not None
        part = self.parts[TopicPartition(envelope.position.topic, envelope.position.partition)]
        part.next_offset = envelope.position.offset + 1
        if not part.fold.admit(envelope):
            return
        rid = getattr(envelope.event, "reservation_id", None)
        known = part.coordinator.book.sagas.get(rid) if rid is not None else None
        status = known.status if known is not None else None
        saga = part.coordinator.fold(envelope)
        if saga is not None and (
            envelope.position.offset >= part.rows_from or envelope.position.offset >= part.emit_from
        ):
            part.touched[saga.reservation_id] = envelope.time
            if tracing.enabled():
                # Follow-ups are written after the batch: they continue this event's trace.
                part.traces[saga.reservation_id] = tracing.current_trace_context()
        if (
            saga is not None
            and saga.status != status
            and saga.status in OUTCOMES
            and envelope.position.offset >= part.emit_from
        ):
            metrics.RESERVATIONS.labels(saga.status).inc()

    async def _write_follow_ups(self, part: _SagaPartition, sagas: Iterable[Saga]) -> None:
        writes: list[Awaitable[Envelope[Event]]] = []
        done: list[tuple[Saga, list[Event]]] = []
        held_until = self.clock() + self.held_verdict_margin
        for saga in sagas:
            follow_ups = part.coordinator.to_write(saga, held_until)
            if not follow_ups:
                continue
            traceparent, tracestate = part.traces.get(saga.reservation_id, (None, None))
            writes.extend(
                self.producer.publish(
                    event,
                    id=event_id,
                    correlation_id=saga.reservation_id,
                    traceparent=traceparent,
                    tracestate=tracestate,
                )
                for event, event_id in follow_ups
            )
            done.append((saga, [event for event, _ in follow_ups]))
        await asyncio.gather(*writes)
        for saga, events in done:
            part.coordinator.written(saga, events)

    async def batch_done(self, next_offsets: Mapping[TopicPartition, int]) -> None:
        rows: dict[TopicPartition, list[dict[str, Any]]] = {}
        follow_ups: list[Awaitable[None]] = []
        for tp, next_offset in next_offsets.items():
            part = self.parts[tp]
            moved_at = part.touched
            touched = [part.coordinator.book.sagas[rid] for rid in sorted(moved_at)]
            part.touched = {}
            if next_offset > part.emit_from:
                # The first live batch resumes every saga (a crash may have left any
                # unsettled); after that only the sagas this batch moved can have something
                # new to write.
                live = touched if part.resumed else list(part.coordinator.book.sagas.values())
                part.resumed = True
                follow_ups.append(self._write_follow_ups(part, live))
            rows[tp] = [
                self._row(saga, moved_at[saga.reservation_id])
                for saga in touched
                if saga.request is not None
            ]
        # Rows first: an API that hears a saga's verdict must find the saga's row when the
        # same request comes again (it answers a repeat from the row's request). The
        # follow-ups do not depend on the rows: the group's offset, committed after both,
        # is what makes them be written again after a crash.
        ahead = {tp: n for tp, n in next_offsets.items() if n > self.parts[tp].rows_from}
        if ahead:
            await rm.RESERVATIONS_WRITE.execute(
                self.autocommit,
                consumer=RESERVATIONS_GROUP,
                log_id=self.log_id,
                next_offsets=ahead,
                rows=lambda partitions: {
                    rm.reservations: [row for tp in partitions for row in rows[tp]]
                },
            )
        await asyncio.gather(*follow_ups)
        for tp in next_offsets:
            self.parts[tp].traces.clear()
        for tp, next_offset in next_offsets.items():
            part = self.parts[tp]
            part.rows_from = max(part.rows_from, next_offset)
            part.emit_from = max(part.emit_from, next_offset)
        if self.caught_up:
            self.ready.set()

    @staticmethod
    def _row(saga: Saga, updated_at: datetime) -> dict[str, Any]:
        request = saga.request
        assert request is not None
        return {
            "reservation_id": saga.reservation_id,
            "status": saga.status,
            "channel": request.channel,
            "lines": [line.model_dump() for line in saga.lines()],
            "requested_lines": [line.model_dump() for line in request.lines],
            "expires_at": saga.expires_at,
            "order_id": saga.order_id,
            "request_fingerprint": request.request_fingerprint,
            # The time of the event, not of writing the row: a rebuild gives the same row.
            "updated_at": updated_at,
        }


# --- other contexts' facts into stock events ------------------------------------------------


def translate(envelope: Envelope[Event]) -> list[Event]:  # noqa: PLR0911 - one per source
    """The stock events another context's fact implies (pure)."""
    e = envelope.event
    if isinstance(e, PosTransactionRecorded):
        # A void is keyed on the transaction it voids, so two different voids of one
        # sale (racing through two gateway replicas) reverse it once.
        document = e.transaction_id
        if e.type == "void":
            kind, sign = ("void_return", -1) if e.voided_type == "return" else ("void_sale", 1)
            document = e.voids_transaction_id or e.transaction_id
        else:
            kind, sign = (e.type, -1 if e.type == "sale" else 1)
        return [
            PosLineApplied(
                transaction_id=document,
                line_number=n,
                kind=kind,
                sku=line.sku,
                location_id=e.store_id,
                quantity_change=sign * line.quantity,
            )
            for n, line in enumerate(e.lines)
        ]
    if isinstance(e, OrderPlaced):
        return [
            ReservationCommitRequested(
                reservation_id=e.reservation_id,
                order_id=e.order_id,
                lines=e.lines,
                requested_at=envelope.time,
            )
        ]
    if isinstance(e, OrderCancelled):
        return [
            CommitmentCancelled(reservation_id=e.reservation_id, sku=sku, order_id=e.order_id)
            for sku in sorted({line.sku for line in e.lines})
        ]
    if isinstance(e, OrderFulfilled):
        return [
            StockShipped(
                reservation_id=e.reservation_id,
                order_id=e.order_id,
                shipment_id=e.shipment_id,
                sku=line.sku,
                location_id=e.location_id,
                quantity=line.quantity,
            )
            for line in e.lines
        ]
    if isinstance(e, ReplenishmentDispatched):
        return [
            TransferDispatched(
                replenishment_id=e.replenishment_id,
                sku=e.sku,
                location_id=e.source_location_id,
                to_location_id=e.location_id,
                quantity=e.quantity,
            )
        ]
    if isinstance(e, ReorderRuleSet):
        return [SafetyStockSet(sku=e.sku, location_id=e.location_id, safety_stock=e.safety_stock)]
    return []


class Translator(Relay):
    def __init__(self, kafka: KafkaSettings, producer: EventProducer) -> None:
        super().__init__(
            kafka,
            producer,
            group_id=TRANSLATOR_GROUP,
            topics=[POS_TRANSACTIONS, ORDERS, REPLENISHMENT],
            translate=translate,
        )


# --- what every replica's API reads ---------------------------------------------------------


class LocationsView(SharedLocationsView):
    """Every registered location (the shared view), and the order inventory fills lines in.
    In memory on each replica: a retailer has hundreds."""

    def online_order(self) -> list[str]:
        """Where lines without a location are held: warehouses first, then stores that ship
        online; by id within each, so every request sees the same order."""
        shipping = [loc for loc in self.locations.values() if loc.fulfils_online]
        return [
            loc.location_id
            for loc in sorted(shipping, key=lambda x: (x.kind != "warehouse", x.location_id))
        ]
