"""The replenishment folds on their own: the quantity formula, once-only requests, the
lifecycle through receipts in parts, determinism, and what the stock watch sees."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from omnistock.events.catalogue import (
    LowStockDetected,
    PosLineApplied,
    ReorderRuleSet,
    ReplenishmentDispatched,
    ReplenishmentReceived,
    ReplenishmentRequested,
    StockObserved,
    StockReceived,
    TransferDispatched,
)
from omnistock.events.envelope import Envelope, Event, Position
from omnistock.events.fold import Fold
from omnistock.replenishment.domain.planner import ReplenishmentBook, order_quantity
from omnistock.replenishment.domain.suggestions import suggest
from omnistock.replenishment.domain.watch import StockWatch

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
STORE, WH, SKU = "store-1", "wh-1", "SKU-1"


def rule(reorder_point: int = 5, order_up_to: int = 20, pack_size: int = 1) -> ReorderRuleSet:
    return ReorderRuleSet(
        location_id=STORE,
        sku=SKU,
        reorder_point=reorder_point,
        order_up_to=order_up_to,
        lead_time_hours=24,
        source_location_id=WH,
        pack_size=pack_size,
    )


def observed(available: int, offset: int, inbound: int = 0, velocity: float = 2.0) -> StockObserved:
    return StockObserved(
        location_id=STORE,
        sku=SKU,
        available=available,
        inbound=inbound,
        velocity_per_day=velocity,
        stock_partition=3,
        stock_offset=offset,
    )


class Log:
    """A partition of replenishment.events, folded as it is written (duplicates by id dropped)."""

    def __init__(self, topic: str = "replenishment.events") -> None:
        self.topic = topic
        self.fold = Fold(ReplenishmentBook())
        self.entries: list[Envelope[Event]] = []
        self.written: list[tuple[Event, str]] = []

    @property
    def book(self) -> ReplenishmentBook:
        return self.fold.projection

    def write(self, event: Event, event_id: str | None = None, minutes: int = 0) -> Any:
        context: dict[str, Any] = {"id": event_id} if event_id else {}
        envelope = Envelope(
            event=event, source="/test", time=T0 + timedelta(minutes=minutes), **context
        ).at(Position(self.topic, 0, len(self.entries)))
        self.entries.append(envelope)
        if not self.fold.admit(envelope):
            return None
        effects = self.book.apply(envelope)
        self.written.extend(effects.to_write)
        return effects

    def announce(self) -> None:
        """What the partition owner does: write the fold's announcements back to the log."""
        pending, self.written = self.written, []
        for event, event_id in pending:
            self.write(event, event_id)

    def requested(self) -> list[ReplenishmentRequested]:
        return [e.event for e in self.entries if isinstance(e.event, ReplenishmentRequested)]


@given(
    st.integers(0, 50),
    st.integers(0, 50),
    st.integers(0, 30),
    st.integers(0, 30),
    st.integers(1, 12),
)
def test_the_quantity_tops_up_to_order_up_to_in_whole_packs(
    reorder_point: int, extra: int, available: int, inbound: int, pack: int
) -> None:
    r = rule(reorder_point, reorder_point + extra + 1, pack)
    quantity = order_quantity(r, available, inbound)
    if available + inbound > reorder_point:
        assert quantity == 0
    else:
        needed = r.order_up_to - available - inbound
        assert quantity % pack == 0
        assert needed <= quantity < needed + pack


def test_order_up_to_minus_available_minus_inbound() -> None:
    assert order_quantity(rule(5, 20), 3, 0) == 17
    assert order_quantity(rule(5, 20), 2, 3) == 15
    assert order_quantity(rule(5, 20, pack_size=6), 3, 0) == 18
    assert order_quantity(rule(5, 20), 6, 0) == 0


def test_one_request_per_dip_through_its_whole_lifecycle() -> None:
    log = Log()
    log.write(rule(5, 20))
    log.write(observed(8, offset=10))
    assert log.book.requests == {}
    log.write(observed(5, offset=11))  # at the reorder point: due
    log.announce()
    [request] = log.book.requests.values()
    assert (request.quantity, request.status, request.days_of_cover) == (15, "requested", 2.5)
    assert [type(e.event) for e in log.entries[-2:]] == [LowStockDetected, ReplenishmentRequested]
    # Further sales while it is open, and the announcements read back, add nothing.
    log.write(observed(2, offset=12))
    log.write(observed(0, offset=13))
    log.announce()
    assert len(log.book.requests) == 1
    assert len(log.requested()) == 1
    rid = request.replenishment_id
    log.write(
        ReplenishmentDispatched(
            location_id=STORE, replenishment_id=rid, sku=SKU, source_location_id=WH, quantity=15
        )
    )
    assert request.status == "dispatched"
    log.write(observed(0, offset=14, inbound=15))
    # Received in two parts: open after the first.
    log.write(
        ReplenishmentReceived(
            location_id=STORE, replenishment_id=rid, sku=SKU, receipt_id="rc-1", quantity=10
        )
    )
    log.write(observed(10, offset=15, inbound=5))
    assert request.status == "dispatched"
    log.write(
        ReplenishmentReceived(
            location_id=STORE, replenishment_id=rid, sku=SKU, receipt_id="rc-2", quantity=5
        )
    )
    assert (request.status, request.received_quantity) == ("received", 15)
    log.write(observed(15, offset=16))
    log.announce()
    assert len(log.book.requests) == 1
    # The next dip opens the next request.
    log.write(observed(4, offset=17))
    log.announce()
    assert len(log.requested()) == 2
    assert log.requested()[-1].quantity == 16


def test_an_old_or_repeated_observation_changes_nothing() -> None:
    log = Log()
    log.write(rule(5, 20))
    log.write(observed(9, offset=20))
    # A watcher restarted behind, or a redelivery, reports older figures: ignored.
    assert log.write(observed(1, offset=19)).levels == []
    assert log.write(observed(1, offset=20)).levels == []
    assert log.book.requests == {}


def test_a_receipt_repeated_counts_once() -> None:
    log = Log()
    log.write(rule(5, 20))
    log.write(observed(0, offset=1))
    [rid] = log.book.requests
    receipt = ReplenishmentReceived(
        location_id=STORE, replenishment_id=rid, sku=SKU, receipt_id="rc-1", quantity=5
    )
    log.write(receipt)
    log.write(receipt)
    assert log.book.requests[rid].received_quantity == 5
    assert log.book.requests[rid].status == "requested"


def test_a_rule_set_on_a_low_pair_requests_at_once_and_a_closing_receipt_reconsiders() -> None:
    log = Log()
    log.write(observed(2, offset=1))
    assert log.book.requests == {}
    log.write(rule(5, 20))
    [rid] = log.book.requests
    log.write(
        ReplenishmentReceived(
            location_id=STORE, replenishment_id=rid, sku=SKU, receipt_id="rc-1", quantity=18
        )
    )
    # The stored figures (2) are still at the point: the closing receipt opens the next one
    # (the watcher's next observation will carry the received units; until then, 2 it is).
    assert len(log.book.requests) == 2


def test_a_dispatch_of_an_unknown_or_closed_request_is_ignored() -> None:
    log = Log()
    effects = log.write(
        ReplenishmentDispatched(
            location_id=STORE, replenishment_id="rpl-x", sku=SKU, source_location_id=WH, quantity=1
        )
    )
    assert effects.requests == []


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=1, max_size=30))
def test_replaying_the_log_makes_the_same_decisions(levels: list[int]) -> None:
    """A fold of the finished log from offset 0 (a restart, a rebuild) reaches the same state
    and decides nothing the log does not already announce."""
    log = Log()
    log.write(rule(5, 20))
    for offset, available in enumerate(levels):
        log.write(observed(available, offset=offset))
        log.announce()
        if log.book.open_requests() and available > 10:
            [open_request] = log.book.open_requests()
            log.write(
                ReplenishmentReceived(
                    location_id=STORE,
                    replenishment_id=open_request.replenishment_id,
                    sku=SKU,
                    receipt_id=f"rc-{offset}",
                    quantity=open_request.quantity,
                )
            )
            log.announce()
    again = Fold(ReplenishmentBook())
    for envelope in log.entries:
        if again.admit(envelope):
            for event, event_id in again.projection.apply(envelope).to_write:
                # Every announcement a replay would make is one the log already has.
                assert event_id in {e.id for e in log.entries}, event
    assert again.state_hash() == log.fold.state_hash()
    ids = [e.replenishment_id for e in log.requested()]
    assert len(ids) == len(set(ids)) == len(log.book.requests)
    assert len(log.book.open_requests()) <= 1


# --- the stock watch ------------------------------------------------------------------------


class StockLog:
    def __init__(self) -> None:
        self.watch = StockWatch(velocity_window_days=7)
        self.offset = 0

    def write(self, event: Event, day: int = 0) -> Any:
        envelope = Envelope(event=event, source="/test", time=T0 + timedelta(days=day)).at(
            Position("inventory.stock", 3, self.offset)
        )
        self.offset += 1
        return self.watch.apply(envelope)


def sale(n: int, quantity: int, location_id: str = STORE) -> PosLineApplied:
    return PosLineApplied(
        transaction_id=f"tx-{n}",
        line_number=0,
        kind="sale",
        sku=SKU,
        location_id=location_id,
        quantity_change=-quantity,
    )


def test_the_watch_sees_inventorys_figures_demand_and_receipts() -> None:
    log = StockLog()
    log.write(StockReceived(receipt_id="r0", sku=SKU, location_id=STORE, quantity=20))
    log.write(StockReceived(receipt_id="r1", sku=SKU, location_id=WH, quantity=100))
    effects = log.write(sale(1, 3), day=1)
    assert effects.touched == [(SKU, STORE)]
    assert [(d.units, d.day) for d in effects.demand] == [(3, (T0 + timedelta(days=1)).date())]
    assert log.write(sale(1, 3), day=1).touched == []  # the same POS line again: no effect
    log.write(sale(2, 5), day=2)
    log.write(
        TransferDispatched(
            replenishment_id="rpl-1", sku=SKU, location_id=WH, to_location_id=STORE, quantity=10
        ),
        day=2,
    )
    o = log.watch.observe(SKU, STORE, no_change_id="none")
    # 8 units over the 3 days since the first movement at the store.
    assert (o.available, o.inbound, o.velocity_per_day, o.stock_offset) == (12, 10, 2.6667, 5)
    effects = log.write(
        StockReceived(
            receipt_id="r2", sku=SKU, location_id=STORE, quantity=10, replenishment_id="rpl-1"
        ),
        day=3,
    )
    [receipt] = effects.receipts
    assert (receipt.replenishment_id, receipt.quantity) == ("rpl-1", 10)
    o = log.watch.observe(SKU, STORE, no_change_id="none")
    assert (o.available, o.inbound) == (22, 0)
    untouched = log.watch.observe("SKU-2", STORE, no_change_id="none")
    assert (untouched.available, untouched.stock_offset, untouched.cause_id) == (0, -1, "none")


def test_velocity_forgets_demand_older_than_the_window() -> None:
    log = StockLog()
    log.write(sale(1, 70), day=0)
    log.write(sale(2, 7), day=10)
    assert log.watch.observe(SKU, STORE, no_change_id="").velocity_per_day == 1.0


def test_suggestions_cover_the_lead_time_plus_safety_stock() -> None:
    s = suggest(SKU, 70, window_days=7, lead_time_hours=48, safety_days=2, review_days=7)
    assert (s.velocity_per_day, s.reorder_point, s.safety_stock, s.order_up_to) == (
        10.0,
        20,
        20,
        90,
    )
    quiet = suggest(SKU, 0, window_days=7, lead_time_hours=48, safety_days=2, review_days=7)
    assert (quiet.reorder_point, quiet.order_up_to) == (0, 1)
