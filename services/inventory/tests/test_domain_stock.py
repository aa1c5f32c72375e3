"""The stock fold on its own: allocation order, idempotency, discrepancies, snapshots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from omnistock.events.catalogue import (
    CommitmentCancelled,
    HoldCommitRequested,
    HoldExpired,
    HoldLine,
    HoldReleaseRequested,
    HoldRequested,
    PosLineApplied,
    StockAdjusted,
    StockReceived,
    StockShipped,
)
from omnistock.events.envelope import Envelope, Event, Position
from omnistock.inventory.domain.stock import StockBook

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
TTL = timedelta(minutes=15)


class Log:
    """A partition: envelopes in order, folded into a book as they are appended."""

    def __init__(self) -> None:
        self.book = StockBook()
        self.entries: list[Envelope[Event]] = []

    def write(self, event: Event, time: datetime = T0) -> Any:
        envelope = Envelope(event=event, source="/test", time=time).at(
            Position("inventory.stock", 0, len(self.entries))
        )
        self.entries.append(envelope)
        return self.book.apply(envelope)


def hold(
    rid: str,
    sku: str,
    *lines: tuple[int, str | None],
    online: list[str] | None = None,
    at: datetime = T0,
    fingerprint: str = "f",
) -> HoldRequested:
    return HoldRequested(
        reservation_id=rid,
        sku=sku,
        lines=[HoldLine(quantity=q, location_id=loc) for q, loc in lines],
        online_locations=online if online is not None else ["wh", "s1"],
        expires_at=at + TTL,
        requested_at=at,
        request_fingerprint=fingerprint,
    )


def receive(sku: str, loc: str, qty: int, receipt: str | None = None) -> StockReceived:
    return StockReceived(
        receipt_id=receipt or f"r-{sku}-{loc}-{qty}", sku=sku, location_id=loc, quantity=qty
    )


def test_a_line_is_held_whole_at_the_first_location_that_can_fill_it() -> None:
    log = Log()
    log.write(receive("A", "wh", 2))
    log.write(receive("A", "s1", 5))
    decision = log.write(hold("r1", "A", (3, None))).decision
    assert decision.outcome == "held"
    assert decision.allocations == (("s1", 3),)


def test_a_line_no_single_location_can_fill_is_split_in_preference_order() -> None:
    log = Log()
    log.write(receive("A", "wh", 2))
    log.write(receive("A", "s1", 2))
    decision = log.write(hold("r1", "A", (3, None))).decision
    assert decision.allocations == (("s1", 1), ("wh", 2))
    assert log.book.level("A", "wh").available == 0


def test_two_lines_of_one_sku_are_checked_against_their_sum() -> None:
    log = Log()
    log.write(receive("A", "wh", 3))
    decision = log.write(hold("r1", "A", (2, "wh"), (2, None), online=["wh"])).decision
    assert (decision.outcome, decision.requested, decision.available) == ("rejected", 4, 3)
    assert log.book.level("A", "wh").held == 0


def test_the_same_request_again_gets_the_same_answer_and_a_different_one_a_conflict() -> None:
    log = Log()
    log.write(receive("A", "wh", 1))
    assert log.write(hold("r1", "A", (1, None))).decision.outcome == "held"
    assert log.write(hold("r1", "A", (1, None))).decision.outcome == "held"
    assert log.write(hold("r1", "A", (1, None), fingerprint="g")).decision.outcome == "conflict"
    assert log.book.level("A", "wh").held == 1


def test_a_commit_after_expiry_is_refused_and_releases_the_hold() -> None:
    log = Log()
    log.write(receive("A", "wh", 1))
    log.write(hold("r1", "A", (1, None)))
    late = HoldCommitRequested(
        reservation_id="r1",
        sku="A",
        order_id="o1",
        quantity=1,
        requested_at=T0 + TTL + timedelta(seconds=1),
    )
    assert log.write(late).decision.outcome == "expired"
    assert log.book.level("A", "wh").figures()["available"] == 1


def test_an_owner_expiry_before_the_due_time_does_not_count() -> None:
    log = Log()
    log.write(receive("A", "wh", 1))
    log.write(hold("r1", "A", (1, None)))
    assert log.write(HoldExpired(reservation_id="r1", sku="A"), T0).decision is None
    assert log.book.level("A", "wh").held == 1
    effects = log.write(HoldExpired(reservation_id="r1", sku="A"), T0 + TTL)
    assert effects.decision.outcome == "expired"
    assert log.book.level("A", "wh").held == 0


def test_pos_sales_are_applied_below_zero_and_flagged_once() -> None:
    log = Log()
    log.write(receive("A", "s1", 1))
    first = log.write(
        PosLineApplied(
            transaction_id="t1",
            line_number=0,
            kind="sale",
            sku="A",
            location_id="s1",
            quantity_change=-2,
        )
    )
    again = log.write(
        PosLineApplied(
            transaction_id="t1",
            line_number=0,
            kind="sale",
            sku="A",
            location_id="s1",
            quantity_change=-2,
        )
    )
    assert log.book.level("A", "s1").on_hand == -1
    assert first.discrepancies == [("A", "s1")]
    assert again.movements == []


def test_a_count_sets_on_hand_to_what_was_counted() -> None:
    log = Log()
    log.write(receive("A", "s1", 10))
    effects = log.write(
        StockAdjusted(
            adjustment_id="c1", sku="A", location_id="s1", counted_quantity=7, reason="cycle_count"
        )
    )
    assert log.book.level("A", "s1").on_hand == 7
    assert effects.movements[0].on_hand_change == -3


def commit(rid: str, sku: str, order_id: str, quantity: int) -> HoldCommitRequested:
    return HoldCommitRequested(
        reservation_id=rid, sku=sku, order_id=order_id, quantity=quantity, requested_at=T0
    )


def ship(rid: str, sku: str, order_id: str, location_id: str, quantity: int) -> StockShipped:
    return StockShipped(
        reservation_id=rid,
        order_id=order_id,
        shipment_id=f"sh-{order_id}-{location_id}",
        sku=sku,
        location_id=location_id,
        quantity=quantity,
    )


def test_shipping_from_another_location_frees_the_commitment_where_it_was() -> None:
    log = Log()
    log.write(receive("A", "wh", 2))
    log.write(receive("A", "s1", 2))
    log.write(hold("r1", "A", (2, "wh")))
    log.write(commit("r1", "A", "o1", 2))
    log.write(ship("r1", "A", "o1", "s1", 2))
    assert log.book.level("A", "wh").figures()["committed"] == 0
    assert log.book.level("A", "wh").on_hand == 2
    assert log.book.level("A", "s1").on_hand == 0
    assert log.book.holds["r1", "A"].status == "shipped"


def test_a_shipment_after_the_order_was_cancelled_takes_nothing_off_the_shelf() -> None:
    """A cancel and a fulfil of one order raced; the orders log has the cancel first, so
    the orders fold ignored the shipment and answered its caller 409: nothing shipped."""
    log = Log()
    log.write(receive("A", "wh", 2))
    log.write(hold("r1", "A", (2, "wh")))
    log.write(commit("r1", "A", "o1", 2))
    log.write(CommitmentCancelled(reservation_id="r1", sku="A", order_id="o1"))
    log.write(ship("r1", "A", "o1", "wh", 2))
    figures = log.book.level("A", "wh").figures()
    assert (figures["on_hand"], figures["committed"], figures["available"]) == (2, 0, 2)
    assert log.book.holds["r1", "A"].status == "cancelled"


SKUS = ["A", "B"]
LOCATIONS = ["wh", "s1", "s2"]


@st.composite
def commands(draw: st.DrawFn) -> list[tuple[Event, datetime]]:
    out: list[tuple[Event, datetime]] = []
    for n in range(draw(st.integers(1, 60))):
        at = T0 + timedelta(minutes=draw(st.integers(0, 40)))
        sku = draw(st.sampled_from(SKUS))
        loc = draw(st.sampled_from(LOCATIONS))
        rid = f"r{draw(st.integers(0, 8))}"
        kind = draw(st.integers(0, 8))
        if kind == 0:
            out.append((receive(sku, loc, draw(st.integers(1, 5)), f"rc{n}"), at))
        elif kind in (1, 2):
            lines = draw(
                st.lists(
                    st.tuples(st.integers(1, 4), st.sampled_from([None, *LOCATIONS])),
                    min_size=1,
                    max_size=3,
                )
            )
            online = draw(st.permutations(LOCATIONS))
            out.append(
                (
                    hold(
                        rid,
                        sku,
                        *lines,
                        online=list(online),
                        at=at,
                        fingerprint=str(draw(st.integers(0, 1))),
                    ),
                    at,
                )
            )
        elif kind == 3:
            out.append((HoldReleaseRequested(reservation_id=rid, sku=sku, reason="released"), at))
        elif kind == 4:
            out.append((HoldExpired(reservation_id=rid, sku=sku), at))
        elif kind == 5:
            out.append(
                (
                    HoldCommitRequested(
                        reservation_id=rid,
                        sku=sku,
                        order_id=f"o{rid}",
                        quantity=draw(st.integers(1, 6)),
                        requested_at=at,
                    ),
                    at,
                )
            )
        elif kind == 6:
            out.append(
                (
                    PosLineApplied(
                        transaction_id=f"t{n}",
                        line_number=0,
                        kind="sale",
                        sku=sku,
                        location_id=loc,
                        quantity_change=-draw(st.integers(1, 3)),
                    ),
                    at,
                )
            )
        elif kind == 7:
            out.append(
                (
                    StockShipped(
                        reservation_id=rid,
                        order_id=f"o{rid}",
                        shipment_id=f"sh{n}",
                        sku=sku,
                        location_id=loc,
                        quantity=draw(st.integers(1, 3)),
                    ),
                    at,
                )
            )
        else:
            out.append((CommitmentCancelled(reservation_id=rid, sku=sku, order_id=f"o{rid}"), at))
    return out


def check_books_balance(book: StockBook) -> None:
    """held and committed at every location equal what the holds say they are."""
    held: dict[tuple[str, str], int] = {}
    committed: dict[tuple[str, str], int] = {}
    for h in book.holds.values():
        for loc, qty in h.allocations.items():
            if h.status == "held":
                held[h.sku, loc] = held.get((h.sku, loc), 0) + qty
            elif h.status == "committed":
                open_qty = qty - h.shipped.get(loc, 0)
                committed[h.sku, loc] = committed.get((h.sku, loc), 0) + open_qty
    for key, level in book.levels.items():
        assert level.held == held.get(key, 0), key
        assert level.committed == committed.get(key, 0), key
        assert level.held >= 0
        assert level.committed >= 0


@settings(max_examples=300, deadline=None)
@given(commands())
def test_no_interleaving_breaks_i1_and_replay_reproduces_the_state(
    script: list[tuple[Event, datetime]],
) -> None:
    log = Log()
    for event, at in script:
        effects = log.write(event, at)
        decision = effects.decision
        granted = any(m.kind == "hold" for m in effects.movements)
        if granted:
            assert decision is not None
            assert decision.outcome == "held"
            # I1: a hold granted now never promises more than is on hand.
            for loc, _ in decision.allocations:
                level = log.book.level(event.sku, loc)
                assert level.held + level.committed <= level.on_hand
                assert level.sellable >= 0
        check_books_balance(log.book)
    replayed = StockBook()
    for envelope in log.entries:
        replayed.apply(envelope)
    assert replayed.canonical() == log.book.canonical()
    restored = StockBook.from_canonical(log.book.canonical())
    assert restored.canonical() == log.book.canonical()
    assert [h.reservation_id for h in restored.due_expiries(T0 + timedelta(days=1))] == [
        h.reservation_id for h in log.book.due_expiries(T0 + timedelta(days=1))
    ]


def test_two_voids_of_one_sale_reverse_it_once() -> None:
    from omnistock.events.catalogue import PosLine, PosTransactionRecorded
    from omnistock.inventory.handlers import translate

    log = Log()
    log.write(receive("A", "s1", 5))
    sale = PosTransactionRecorded(
        transaction_id="t1",
        store_id="s1",
        terminal_id="1",
        sequence=1,
        occurred_at=T0,
        type="sale",
        lines=[PosLine(sku="A", quantity=2, unit_price=1, currency="EUR")],
    )
    for event in translate(Envelope(event=sale, source="/pos")):
        log.write(event)
    for n, void_id in enumerate(("v1", "v2")):
        void = sale.model_copy(
            update={
                "transaction_id": void_id,
                "sequence": 2 + n,
                "type": "void",
                "voids_transaction_id": "t1",
                "voided_type": "sale",
            }
        )
        for event in translate(Envelope(event=void, source="/pos")):
            log.write(event)
    assert log.book.level("A", "s1").on_hand == 5
