"""The order saga: an order's lifecycle as a deterministic fold of ``orders.events``.

placed → confirmed | rejected; confirmed → fulfilled (possibly in parts) | cancelled.

The inventory service settles each order through events only: it answers an
``OrderPlaced`` on ``inventory.reservations`` (keyed by reservation id), and
:func:`answer` turns that answer into ``OrderConfirmed``/``OrderRejected`` on
``orders.events`` (keyed by order id), so the order's whole state is one
partition's fold. Whatever reaches the log, :meth:`Order.apply` accepts only
legal transitions, first one wins: two writers racing, a duplicate or a stale
answer cannot confirm an order twice or move it backwards, for every reader alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

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
from omnistock.events.envelope import Envelope, Event

OrderStatus = Literal[
    "placed", "confirmed", "rejected", "partially_fulfilled", "fulfilled", "cancelled"
]
Action = Literal["cancel", "fulfil"]
RejectReason = Literal[
    "reservation_expired",
    "reservation_released",
    "reservation_not_held",
    "reservation_unknown",
    "lines_mismatch",
]

#: Which statuses each action may start from.
ALLOWED_FROM: dict[Action, tuple[OrderStatus, ...]] = {
    "cancel": ("confirmed", "partially_fulfilled"),
    "fulfil": ("confirmed", "partially_fulfilled"),
}
_REASONS: dict[str, RejectReason] = {
    "expired": "reservation_expired",
    "released": "reservation_released",
    "not_held": "reservation_not_held",
    "unknown_reservation": "reservation_unknown",
    "mismatch": "lines_mismatch",
}


def answer(envelope: Envelope[Event]) -> list[Event]:
    """The order event an inventory answer implies (pure; the fold drops what is stale)."""
    e = envelope.event
    if isinstance(e, ReservationCommitted):
        return [OrderConfirmed(order_id=e.order_id)]
    if isinstance(e, ReservationCommitRejected):
        return [OrderRejected(order_id=e.order_id, reason=_REASONS[e.reason])]
    return []


def quantities(lines: list[Line]) -> dict[str, int]:
    total: dict[str, int] = {}
    for line in lines:
        total[line.sku] = total.get(line.sku, 0) + line.quantity
    return total


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


@dataclass(slots=True)
class Order:
    placed: OrderPlaced
    placed_at: datetime
    status: OrderStatus = "placed"
    reject_reason: str | None = None
    cancel_reason: str | None = None
    #: Units shipped so far, per SKU.
    shipped: dict[str, int] = field(default_factory=dict)
    shipments: list[str] = field(default_factory=list)
    #: Every event that moved this order: type, time, event id, status after it.
    timeline: list[dict[str, Any]] = field(default_factory=list)
    updated_at: datetime | None = None

    @property
    def order_id(self) -> str:
        return self.placed.order_id

    def remaining(self) -> dict[str, int]:
        """Units not yet shipped, per SKU."""
        return {
            sku: quantity - self.shipped.get(sku, 0)
            for sku, quantity in quantities(self.placed.lines).items()
            if quantity > self.shipped.get(sku, 0)
        }

    def allows(self, action: Action) -> bool:
        return self.status in ALLOWED_FROM[action]

    def apply(self, envelope: Envelope[Event]) -> bool:
        """Take in one event about this order; False when it is not a legal next step."""
        e = envelope.event
        if isinstance(e, OrderConfirmed | OrderRejected):
            if self.status != "placed":
                return False
            if isinstance(e, OrderRejected):
                self.status, self.reject_reason = "rejected", e.reason
            else:
                self.status = "confirmed"
        elif isinstance(e, OrderCancelled):
            if not self.allows("cancel"):
                return False
            self.status, self.cancel_reason = "cancelled", e.reason
        elif isinstance(e, OrderFulfilled):
            if not self.allows("fulfil") or e.shipment_id in self.shipments:
                return False
            remaining = self.remaining()
            if any(q > remaining.get(sku, 0) for sku, q in quantities(e.lines).items()):
                return False  # more than is left to ship: not a step this order can take
            for sku, quantity in quantities(e.lines).items():
                self.shipped[sku] = self.shipped.get(sku, 0) + quantity
            self.shipments.append(e.shipment_id)
            self.status = "partially_fulfilled" if self.remaining() else "fulfilled"
        else:
            return False
        self._record(envelope)
        return True

    def _record(self, envelope: Envelope[Event]) -> None:
        e = envelope.event
        step: dict[str, Any] = {
            "event": e.event_type.rsplit(".", 1)[-1],
            "at": _iso(envelope.time),
            "event_id": envelope.id,
            "status": self.status,
        }
        if isinstance(e, OrderRejected) or (isinstance(e, OrderCancelled) and e.reason):
            step["reason"] = e.reason
        elif isinstance(e, OrderFulfilled):
            step["shipment_id"] = e.shipment_id
            step["location_id"] = e.location_id
            step["lines"] = [line.model_dump() for line in e.lines]
        self.timeline.append(step)
        self.updated_at = envelope.time

    def row(self) -> dict[str, Any]:
        """The read-model row, JSON-able and derived from the log alone (its time included),
        so a rebuilt read model is identical to the one it replaces."""
        p = self.placed
        return {
            "order_id": p.order_id,
            "status": self.status,
            "reservation_id": p.reservation_id,
            "customer_id": p.customer_id,
            "payment_reference": p.payment_reference,
            "lines": [line.model_dump() for line in p.lines],
            "shipped": dict(sorted(self.shipped.items())),
            "reject_reason": self.reject_reason,
            "cancel_reason": self.cancel_reason,
            "timeline": self.timeline,
            "placed_at": _iso(self.placed_at),
            "updated_at": _iso(self.updated_at or self.placed_at),
        }


class OrderBook:
    """Every order of the ``orders.events`` partitions one fold covers."""

    def __init__(self) -> None:
        self.orders: dict[str, Order] = {}

    def apply(self, envelope: Envelope[Event]) -> Order | None:
        """The order ``envelope`` moved, or None when it changed nothing."""
        e = envelope.event
        if isinstance(e, OrderPlaced):
            if e.order_id in self.orders:
                return None  # a repeat: the first placement of an order id is the order
            placed = self.orders[e.order_id] = Order(placed=e, placed_at=envelope.time)
            placed._record(envelope)
            return placed
        order_id = getattr(e, "order_id", None)
        order = self.orders.get(order_id) if isinstance(order_id, str) else None
        # An answer about an order never placed here (a commit made through the inventory
        # API directly) is nobody's: ignored.
        if order is None or not order.apply(envelope):
            return None
        return order

    def canonical(self) -> list[Any]:
        return [self.orders[order_id].row() for order_id in sorted(self.orders)]
