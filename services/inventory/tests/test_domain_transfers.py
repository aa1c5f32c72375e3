"""Replenishment transfers in the stock fold: a dispatch moves units from the warehouse's
on_hand into the store's incoming, the receipt naming the replenishment moves them into
the store's on_hand. Units are never created or lost on the way."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from omnistock.events.catalogue import StockReceived, TransferDispatched
from omnistock.events.envelope import Envelope, Event, Position
from omnistock.inventory.domain.stock import StockBook

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
SKU = "SKU-1"


def fold(events: list[Event]) -> StockBook:
    book = StockBook()
    for offset, event in enumerate(events):
        book.apply(
            Envelope(event=event, source="/test", time=T0).at(
                Position("inventory.stock", 0, offset)
            )
        )
    return book


def units(book: StockBook) -> int:
    """Every unit of the chain: on shelves and on the road."""
    return sum(level.on_hand + level.incoming for level in book.levels.values())


def test_a_dispatch_and_its_receipt_move_units_without_creating_any() -> None:
    events: list[Event] = [
        StockReceived(receipt_id="r0", sku=SKU, location_id="wh", quantity=100),
        TransferDispatched(
            replenishment_id="rp-1", sku=SKU, location_id="wh", to_location_id="s1", quantity=30
        ),
    ]
    book = fold(events)
    assert (book.level(SKU, "wh").on_hand, book.level(SKU, "s1").incoming) == (70, 30)
    assert book.level(SKU, "s1").on_hand == 0
    assert units(book) == 100
    book = fold(
        [
            *events,
            StockReceived(
                receipt_id="r1", sku=SKU, location_id="s1", quantity=30, replenishment_id="rp-1"
            ),
        ]
    )
    assert (book.level(SKU, "s1").on_hand, book.level(SKU, "s1").incoming) == (30, 0)
    assert units(book) == 100


def test_a_repeated_dispatch_or_receipt_moves_the_units_once() -> None:
    dispatch = TransferDispatched(
        replenishment_id="rp-1", sku=SKU, location_id="wh", to_location_id="s1", quantity=30
    )
    receipt = StockReceived(
        receipt_id="r1", sku=SKU, location_id="s1", quantity=30, replenishment_id="rp-1"
    )
    start = StockReceived(receipt_id="r0", sku=SKU, location_id="wh", quantity=100)
    book = fold([start, dispatch, dispatch, receipt, receipt])
    assert book.level(SKU, "wh").on_hand == 70
    assert (book.level(SKU, "s1").on_hand, book.level(SKU, "s1").incoming) == (30, 0)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 50), st.lists(st.integers(1, 50), min_size=1, max_size=4)),
        min_size=1,
        max_size=8,
    ),
    st.randoms(use_true_random=False),
)
def test_units_are_conserved_through_dispatches_and_receipts_in_parts(
    transfers: list[tuple[int, list[int]]], rnd: random.Random
) -> None:
    """Any interleaving of dispatches and their receipts, in parts that add up to at most the
    dispatched quantity, keeps the chain's total; once all has arrived nothing is in transit."""
    start = StockReceived(receipt_id="r0", sku=SKU, location_id="wh", quantity=1_000)
    pending: list[list[Event]] = []
    expected_store = 0
    for n, (quantity, parts) in enumerate(transfers):
        steps: list[Event] = [
            TransferDispatched(
                replenishment_id=f"rp-{n}",
                sku=SKU,
                location_id="wh",
                to_location_id="s1",
                quantity=quantity,
            )
        ]
        remaining = quantity
        for p, part in enumerate(parts):
            if remaining == 0:
                break
            arrived = min(part, remaining)
            remaining -= arrived
            steps.append(
                StockReceived(
                    receipt_id=f"rc-{n}-{p}",
                    sku=SKU,
                    location_id="s1",
                    quantity=arrived,
                    replenishment_id=f"rp-{n}",
                )
            )
        expected_store += quantity - remaining
        pending.append(steps)
    # Interleave the transfers, each one's steps in its own order.
    events: list[Event] = [start]
    while pending:
        steps = rnd.choice(pending)
        events.append(steps.pop(0))
        if not steps:
            pending.remove(steps)
        assert units(fold(events)) == 1_000
    book = fold(events)
    dispatched = sum(q for q, _ in transfers)
    assert book.level(SKU, "wh").on_hand == 1_000 - dispatched
    assert book.level(SKU, "s1").on_hand == expected_store
    assert book.level(SKU, "s1").incoming == dispatched - expected_store


def test_a_receipt_applied_before_its_dispatch_leaves_nothing_in_transit() -> None:
    """The store's receipt reached the stock partition before the dispatch did (the
    translator that turns the warehouse's dispatch into a transfer was behind): once both
    are in, nothing is on the road and no unit was made up."""
    start = StockReceived(receipt_id="r0", sku=SKU, location_id="wh", quantity=100)
    receipt = StockReceived(
        receipt_id="r1", sku=SKU, location_id="s1", quantity=30, replenishment_id="rp-1"
    )
    dispatch = TransferDispatched(
        replenishment_id="rp-1", sku=SKU, location_id="wh", to_location_id="s1", quantity=30
    )
    early = fold([start, receipt])
    assert (early.level(SKU, "s1").on_hand, early.level(SKU, "s1").incoming) == (30, 0)
    book = fold([start, receipt, dispatch])
    assert (book.level(SKU, "wh").on_hand, book.level(SKU, "s1").on_hand) == (70, 30)
    assert book.level(SKU, "s1").incoming == 0
    assert units(book) == 100
    assert not book.in_transit
    # A snapshot in between restores the same state.
    restored = StockBook.from_canonical(early.canonical())
    restored.apply(Envelope(event=dispatch, source="/test", time=T0).at(Position("x", 0, 9)))
    assert restored.canonical() == book.canonical()
