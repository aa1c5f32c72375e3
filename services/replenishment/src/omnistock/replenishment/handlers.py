"""Where the replenishment domain meets Kafka and PostgreSQL.

* :class:`RulesView`: every reorder rule, in memory on each replica (which
  (sku, location) pairs the stock watcher must report).
* :class:`StockWatcher`: owns ``inventory.stock`` partitions (its own consumer
  group), folds them with :class:`StockWatch`, and writes to
  ``replenishment.events`` what the planner needs: a :class:`StockObserved` for
  each change of a ruled pair's figures, and a :class:`ReplenishmentReceived`
  for each receipt naming a replenishment. It also adds up demand per day.
* :class:`Planner`: owns ``replenishment.events`` partitions; its fold
  (:class:`ReplenishmentBook`) decides requests, which it announces and keeps in
  the read model.

Both write only for records past the group's committed offset, with ids derived
from the causing record, so a restart or a redelivery writes duplicates at most,
which the planner's fold drops (and an observation older than the one it holds
is ignored whatever its id).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiokafka import TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import ConsumerRecord
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from omnistock.events import codec, sqlbatch
from omnistock.events.catalogue import ReorderRuleSet, ReplenishmentReceived, StockObserved
from omnistock.events.envelope import Envelope, Event, derived_id
from omnistock.events.positions import log_end_offsets
from omnistock.events.producer import EventProducer
from omnistock.events.projection import OwnedPartition, PartitionedProjection
from omnistock.events.settings import KafkaSettings
from omnistock.events.tail import TailReader
from omnistock.events.topics import INVENTORY_STOCK, REPLENISHMENT
from omnistock.replenishment import metrics
from omnistock.replenishment import projections as rm
from omnistock.replenishment.domain.planner import PlanEffects, ReplenishmentBook
from omnistock.replenishment.domain.watch import Observation, StockWatch, WatchEffects

log = logging.getLogger(__name__)

WATCHER_GROUP = "replenishment-stock"
PLANNER_GROUP = "replenishment-planner"
_RULE_TYPE = ReorderRuleSet.event_type.encode()
#: Pause before observing newly ruled pairs again after the log refused a write.
NEW_PAIR_RETRY_S = 1.0


class RulesView:
    """Which (sku, location) pairs have a reorder rule, read from the log by every replica."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.pairs: set[tuple[str, str]] = set()
        self.reader = TailReader(kafka, [REPLENISHMENT], self._record, name="rules")
        #: Told of each pair that gets its first rule (the watcher observes it at once).
        self.on_new_pair: Callable[[str, str], None] | None = None

    def _record(self, record: ConsumerRecord[bytes, bytes]) -> None:
        # Most of the topic is observations: look at the type before paying for decoding.
        if dict(record.headers or ()).get(codec.H_TYPE) != _RULE_TYPE:
            return
        try:
            event = codec.decode(record.value, record.headers or ()).event
        except codec.PoisonMessage:
            return
        assert isinstance(event, ReorderRuleSet)
        pair = (event.sku, event.location_id)
        if pair not in self.pairs:
            self.pairs.add(pair)
            if self.on_new_pair is not None:
                self.on_new_pair(*pair)


class StockWatcher(PartitionedProjection[StockWatch]):
    writes = (rm.ADD_DEMAND,)

    def __init__(
        self,
        kafka: KafkaSettings,
        producer: EventProducer,
        engine: AsyncEngine,
        rules: RulesView,
        *,
        log_id: str,
        velocity_window_days: int,
    ) -> None:
        super().__init__(
            kafka, producer, engine, group_id=WATCHER_GROUP, topics=[INVENTORY_STOCK], log_id=log_id
        )
        self.rules = rules
        self.window = velocity_window_days
        self.topic = INVENTORY_STOCK.physical(kafka.topic_prefix)
        self._partitioner = DefaultPartitioner()
        self._pending_pairs: dict[TopicPartition, set[tuple[str, str]]] = {}
        self._flushers: dict[TopicPartition, asyncio.Task[None]] = {}
        rules.on_new_pair = self._new_pair

    def new_projection(self) -> StockWatch:
        return StockWatch(self.window)

    def folded(
        self, part: OwnedPartition[StockWatch], envelope: Envelope[Event], result: Any
    ) -> None:
        assert isinstance(result, WatchEffects)
        if part.new_row(envelope):
            part.pending.extend(result.demand)
        if not part.live(envelope):
            return
        watch = part.fold.projection
        for sku, location_id in result.touched:
            if (sku, location_id) in self.rules.pairs:
                observation = watch.observe(sku, location_id, no_change_id="")
                part.sends.append(asyncio.create_task(self._observe(part.tp, observation)))
        for r in result.receipts:
            part.sends.append(
                asyncio.create_task(
                    self.producer.publish(
                        ReplenishmentReceived(
                            location_id=r.location_id,
                            replenishment_id=r.replenishment_id,
                            sku=r.sku,
                            receipt_id=r.receipt_id,
                            quantity=r.quantity,
                        ),
                        id=derived_id(envelope.id, "received", r.sku, r.location_id),
                        correlation_id=envelope.correlation_id or envelope.id,
                        causation_id=envelope.id,
                    )
                )
            )

    def rows(self, parts: Sequence[OwnedPartition[StockWatch]]) -> Mapping[Table, sqlbatch.Rows]:
        return {rm.demand_days: rm.demand_rows(d for part in parts for d in part.pending)}

    async def _observe(self, tp: TopicPartition, o: Observation) -> None:
        cause = o.cause_id or f"{tp.topic}:{tp.partition}:unchanged"
        await self.producer.publish(
            StockObserved(
                location_id=o.location_id,
                sku=o.sku,
                available=o.available,
                inbound=o.inbound,
                velocity_per_day=o.velocity_per_day,
                stock_partition=tp.partition,
                stock_offset=o.stock_offset,
            ),
            id=derived_id(cause, "observed", o.sku, o.location_id),
        )

    def partition_of(self, sku: str) -> TopicPartition:
        """The ``inventory.stock`` partition of ``sku`` (the producers' default partitioner)."""
        every = list(range(INVENTORY_STOCK.partitions))
        partition: Any = self._partitioner(sku.encode(), every, every)
        return TopicPartition(self.topic, int(partition))

    async def caught_up_with(self, part: OwnedPartition[StockWatch]) -> None:
        """Observe every ruled pair of the partition the planner does not hold at its latest
        figures: rules set while no watcher saw their SKU's stock change."""
        async with self.engine.connect() as connection:
            held = await rm.observed_offsets(connection, part.tp.partition)
        watch = part.fold.projection
        sends = []
        for sku, location_id in sorted(self.rules.pairs):
            if self.partition_of(sku) != part.tp:
                continue
            observation = watch.observe(sku, location_id, no_change_id="")
            if held.get((sku, location_id)) != observation.stock_offset:
                sends.append(self._observe(part.tp, observation))
        await asyncio.gather(*sends)
        if sends:
            log.info("observed %d ruled pairs of %s after catching up", len(sends), part.tp)

    def _new_pair(self, sku: str, location_id: str) -> None:
        """A rule for a pair seen for the first time: observe it soon, its stock may not change
        for a long while. (Before a partition has caught up, caught_up_with covers it.)"""
        tp = self.partition_of(sku)
        part = self.parts.get(tp)
        if part is None or not part.announced:
            return
        self._pending_pairs.setdefault(tp, set()).add((sku, location_id))
        self._flush(tp)

    def _flush(self, tp: TopicPartition) -> None:
        if tp in self._flushers or not self._pending_pairs.get(tp):
            return
        task = asyncio.create_task(self._observe_new_pairs(tp), name=f"observe-new:{tp}")
        self._flushers[tp] = task

        def done(_: asyncio.Task[None]) -> None:
            self._flushers.pop(tp, None)
            if not task.cancelled():
                self._flush(tp)  # pairs ruled while the last ones were being written

        task.add_done_callback(done)

    async def stop(self) -> None:
        for task in list(self._flushers.values()):
            task.cancel()
        await asyncio.gather(*self._flushers.values(), return_exceptions=True)
        await self.runner.stop()

    async def _observe_new_pairs(self, tp: TopicPartition) -> None:
        """Observe the newly ruled pairs of ``tp`` once the fold has read everything the
        stock log held when they were ruled: earlier figures (a watcher lagging behind a
        receipt) would be a true but stale observation that could open a request."""
        while pending := self._pending_pairs.pop(tp, set()):
            try:
                end = (await log_end_offsets(self.kafka, [tp]))[tp]
                part = self.parts.get(tp) if await self.reached(tp, end) else None
                if part is None:
                    return  # the partition moved: its new owner observes on catching up
                watch = part.fold.projection
                await asyncio.gather(
                    *(
                        self._observe(tp, watch.observe(sku, loc, no_change_id=""))
                        for sku, loc in sorted(pending)
                    )
                )
            except Exception:
                log.exception("could not observe %d newly ruled pairs of %s", len(pending), tp)
                self._pending_pairs.setdefault(tp, set()).update(pending)
                await asyncio.sleep(NEW_PAIR_RETRY_S)  # the log is struggling: back off


class Planner(PartitionedProjection[ReplenishmentBook]):
    writes = tuple(sqlbatch.replace_all(t) for t in (rm.rules, rm.levels, rm.replenishments))

    def __init__(
        self, kafka: KafkaSettings, producer: EventProducer, engine: AsyncEngine, *, log_id: str
    ) -> None:
        super().__init__(
            kafka, producer, engine, group_id=PLANNER_GROUP, topics=[REPLENISHMENT], log_id=log_id
        )
        #: Locations this replica set gauges for.
        self._reported: set[str] = set()

    def new_projection(self) -> ReplenishmentBook:
        return ReplenishmentBook()

    def folded(
        self, part: OwnedPartition[ReplenishmentBook], envelope: Envelope[Event], result: Any
    ) -> None:
        assert isinstance(result, PlanEffects)
        if part.new_row(envelope):
            part.pending.append(result)
        if part.live(envelope):
            for event, event_id in result.to_write:
                part.sends.append(
                    asyncio.create_task(
                        self.producer.publish(
                            event,
                            id=event_id,
                            correlation_id=envelope.correlation_id or envelope.id,
                            causation_id=envelope.id,
                        )
                    )
                )

    def rows(
        self, parts: Sequence[OwnedPartition[ReplenishmentBook]]
    ) -> Mapping[Table, sqlbatch.Rows]:
        written: dict[Table, list[dict[str, Any]]] = {
            rm.rules: [],
            rm.levels: [],
            rm.replenishments: [],
        }
        for part in parts:
            book = part.fold.projection
            rules: set[tuple[str, str]] = set()
            levels: set[tuple[str, str]] = set()
            requests: set[str] = set()
            for effects in part.pending:
                rules.update(effects.rules)
                levels.update(effects.levels)
                requests.update(effects.requests)
            written[rm.rules] += [book.rule_row(k) for k in sorted(rules)]
            written[rm.levels] += [book.level_row(k) for k in sorted(levels)]
            written[rm.replenishments] += [book.requests[r].row() for r in sorted(requests)]
        return written

    def refresh_metrics(self, now: float) -> None:
        """Set the gauges from the partitions this replica owns (``now``: epoch seconds)."""
        below: dict[str, int] = {}
        open_: dict[str, int] = {}
        oldest: float | None = None
        for part in list(self.parts.values()):
            book = part.fold.projection
            for (location_id, _), cell in book.cells.items():
                below.setdefault(location_id, 0)
                open_.setdefault(location_id, 0)
                if cell.below_reorder_point:
                    below[location_id] += 1
            for request in book.open_requests():
                below.setdefault(request.location_id, 0)
                open_[request.location_id] = open_.get(request.location_id, 0) + 1
                started = request.requested_at.timestamp()
                oldest = started if oldest is None else min(oldest, started)
        # A location whose partition moved to another replica is that replica's to report.
        for location_id in self._reported - below.keys():
            metrics.SKUS_BELOW_REORDER_POINT.remove(location_id)
            metrics.OPEN_REQUESTS.remove(location_id)
        for location_id, count in below.items():
            metrics.SKUS_BELOW_REORDER_POINT.labels(location_id).set(count)
            metrics.OPEN_REQUESTS.labels(location_id).set(open_[location_id])
        self._reported = set(below)
        metrics.OLDEST_OPEN_REQUEST_AGE.set(0 if oldest is None else max(0.0, now - oldest))
