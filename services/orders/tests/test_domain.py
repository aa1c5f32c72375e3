"""The order fold on its own: legal transitions only, first one wins, any repeat harmless."""

from __future__ import annotations

from datetime import UTC, datetime

from omnistock.events.catalogue import (
    Line,
    OrderCancelled,
    OrderConfirmed,
    OrderFulfilled,
    OrderPlaced,
    OrderRejected,
    ReservationCommitRejected,
    ReservationCommitted,
)
from omnistock.events.envelope import Envelope, Event, Position
from omnistock.events.fold import Fold
from omnistock.orders.domain.orders import OrderBook, answer

AT = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
LINES = [Line(sku="A", quantity=3), Line(sku="B", quantity=1)]


def fold(*events: Event) -> Fold[OrderBook]:
    f = Fold(OrderBook())
    for offset, event in enumerate(events):
        f.apply(Envelope(event=event, source="test", time=AT).at(Position("o", 0, offset)))
    return f


def placed(order_id: str = "o-1", **changes: object) -> OrderPlaced:
    values: dict[str, object] = {
        "order_id": order_id,
        "reservation_id": "r-1",
        "customer_id": "c-1",
        "lines": LINES,
        "payment_reference": "p-1",
        **changes,
    }
    return OrderPlaced.model_validate(values)


def shipment(shipment_id: str, *lines: Line) -> OrderFulfilled:
    return OrderFulfilled(
        order_id="o-1",
        reservation_id="r-1",
        shipment_id=shipment_id,
        location_id="wh",
        lines=list(lines),
    )


def test_the_first_answer_decides_and_later_ones_change_nothing() -> None:
    book = fold(
        placed(),
        OrderRejected(order_id="o-1", reason="reservation_expired"),
        OrderConfirmed(order_id="o-1"),
        placed(customer_id="c-2"),
    ).projection
    order = book.orders["o-1"]
    assert (order.status, order.reject_reason, order.placed.customer_id) == (
        "rejected",
        "reservation_expired",
        "c-1",
    )
    assert [step["event"] for step in order.timeline] == ["OrderPlaced", "OrderRejected"]


def test_an_answer_for_an_order_never_placed_is_ignored() -> None:
    assert fold(OrderConfirmed(order_id="o-9")).projection.orders == {}


def test_fulfilment_in_parts_then_nothing_more() -> None:
    cancel = OrderCancelled(order_id="o-1", reservation_id="r-1", lines=LINES)
    book = fold(
        placed(),
        OrderConfirmed(order_id="o-1"),
        shipment("s-1", Line(sku="A", quantity=2)),
        shipment("s-1", Line(sku="A", quantity=1)),  # the same shipment again: once only
        shipment("s-2", Line(sku="A", quantity=2)),  # more than is left: not a legal step
        shipment("s-3", Line(sku="A", quantity=1), Line(sku="B", quantity=1)),
        cancel,
    ).projection
    order = book.orders["o-1"]
    assert order.status == "fulfilled"
    assert order.shipped == {"A": 3, "B": 1}
    assert order.shipments == ["s-1", "s-3"]


def test_fulfil_after_cancel_does_not_count() -> None:
    cancel = OrderCancelled(order_id="o-1", reservation_id="r-1", lines=LINES, reason="x")
    order = fold(
        placed(), OrderConfirmed(order_id="o-1"), cancel, shipment("s-1", *LINES)
    ).projection.orders["o-1"]
    assert (order.status, order.shipped, order.cancel_reason) == ("cancelled", {}, "x")


def test_inventory_answers_in_the_orders_words() -> None:
    def of(event: Event) -> list[Event]:
        return answer(Envelope(event=event, source="inventory"))

    assert of(ReservationCommitted(reservation_id="r-1", order_id="o-1")) == [
        OrderConfirmed(order_id="o-1")
    ]
    for reason, said in (
        ("expired", "reservation_expired"),
        ("released", "reservation_released"),
        ("not_held", "reservation_not_held"),
        ("unknown_reservation", "reservation_unknown"),
        ("mismatch", "lines_mismatch"),
    ):
        rejected = ReservationCommitRejected(reservation_id="r-1", order_id="o-1", reason=reason)
        assert of(rejected) == [OrderRejected(order_id="o-1", reason=said)]
    assert of(placed()) == []
