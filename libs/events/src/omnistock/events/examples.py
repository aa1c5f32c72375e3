"""One realistic example of every event: documentation in the AsyncAPI document and the
fixture of the round-trip tests, so neither can drift from the catalogue."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from omnistock.events import catalogue as c
from omnistock.events.envelope import Event

_AT = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)
_LATER = datetime(2026, 11, 21, 9, 45, tzinfo=UTC)

EXAMPLES: dict[type[Event], Event] = {
    e.__class__: e
    for e in (
        c.LocationRegistered(
            location_id="store-berlin-mitte",
            name="Berlin Mitte",
            kind="store",
            region="DE-BE",
            latitude=52.5219,
            longitude=13.4132,
            fulfils_online=True,
        ),
        c.StockReceived(
            receipt_id="rcpt-000123",
            sku="SKU-000042",
            location_id="wh-hamburg",
            quantity=120,
            replenishment_id="repl-77",
        ),
        c.StockAdjusted(
            adjustment_id="adj-9",
            sku="SKU-000042",
            location_id="store-berlin-mitte",
            counted_quantity=14,
            reason="cycle_count",
        ),
        c.SafetyStockSet(sku="SKU-000042", location_id="store-berlin-mitte", safety_stock=4),
        c.HoldRequested(
            reservation_id="res-5f1c",
            sku="SKU-000042",
            lines=[c.HoldLine(quantity=2)],
            online_locations=["wh-hamburg", "store-berlin-mitte"],
            expires_at=_LATER,
            requested_at=_AT,
            request_fingerprint="3b5d5c3712955042212316173ccf37be",
        ),
        c.HoldReleaseRequested(reservation_id="res-5f1c", sku="SKU-000042", reason="released"),
        c.HoldExtensionRequested(
            reservation_id="res-5f1c", sku="SKU-000042", expires_at=_LATER, requested_at=_AT
        ),
        c.HoldCommitRequested(
            reservation_id="res-5f1c",
            sku="SKU-000042",
            order_id="ord-1001",
            quantity=2,
            requested_at=_AT,
        ),
        c.HoldExpired(reservation_id="res-5f1c", sku="SKU-000042"),
        c.CommitmentCancelled(reservation_id="res-5f1c", sku="SKU-000042", order_id="ord-1001"),
        c.StockShipped(
            reservation_id="res-5f1c",
            order_id="ord-1001",
            shipment_id="shp-1",
            sku="SKU-000042",
            location_id="wh-hamburg",
            quantity=2,
        ),
        c.PosLineApplied(
            transaction_id="pos-store-berlin-mitte-t1-000881",
            line_number=0,
            kind="sale",
            sku="SKU-000042",
            location_id="store-berlin-mitte",
            quantity_change=-1,
        ),
        c.StockDiscrepancyRecorded(
            sku="SKU-000042",
            location_id="store-berlin-mitte",
            cause_event_id="8d0c5a52-4a1e-4c1e-9a57-5ad1e5b1c0de",
            on_hand=-1,
            held=0,
            committed=0,
        ),
        c.TransferDispatched(
            replenishment_id="repl-77",
            sku="SKU-000042",
            location_id="wh-hamburg",
            to_location_id="store-berlin-mitte",
            quantity=24,
        ),
        c.ReservationRequested(
            reservation_id="res-5f1c",
            lines=[c.RequestedLine(sku="SKU-000042", quantity=2)],
            ttl_seconds=900,
            channel="web",
            expires_at=_LATER,
            request_fingerprint="3b5d5c3712955042212316173ccf37be",
        ),
        c.HoldOutcome(
            reservation_id="res-5f1c",
            sku="SKU-000042",
            request="hold",
            outcome="held",
            allocations=[c.LocatedLine(sku="SKU-000042", quantity=2, location_id="wh-hamburg")],
            requested=2,
            available=118,
            expires_at=_LATER,
            stock_position="inventory.stock:7:1042",
            decided_event_id="0b9f7f4e-2f7a-4d8e-9a57-5ad1e5b1c0de",
        ),
        c.ReservationHeld(
            reservation_id="res-5f1c",
            lines=[c.LocatedLine(sku="SKU-000042", quantity=2, location_id="wh-hamburg")],
            expires_at=_LATER,
        ),
        c.ReservationRejected(
            reservation_id="res-5f1d",
            reason="insufficient_stock",
            lines=[c.RejectedLine(sku="SKU-000042", requested=3, available=1)],
        ),
        c.ReservationExtensionRequested(
            reservation_id="res-5f1c", expires_at=_LATER, requested_at=_AT
        ),
        c.ReservationExtended(reservation_id="res-5f1c", expires_at=_LATER),
        c.ReservationCommitRequested(
            reservation_id="res-5f1c",
            order_id="ord-1001",
            lines=[c.Line(sku="SKU-000042", quantity=2)],
            requested_at=_AT,
        ),
        c.ReservationCommitted(reservation_id="res-5f1c", order_id="ord-1001"),
        c.ReservationCommitRejected(
            reservation_id="res-5f1d", order_id="ord-1002", reason="expired"
        ),
        c.ReservationChangeRefused(
            reservation_id="res-5f1c", request="release", status="committed"
        ),
        c.ReservationReleaseRequested(reservation_id="res-5f1c"),
        c.ReservationReleased(reservation_id="res-5f1c", reason="released"),
        c.OrderPlaced(
            order_id="ord-1001",
            reservation_id="res-5f1c",
            customer_id="cust-31",
            lines=[c.Line(sku="SKU-000042", quantity=2)],
            payment_reference="psp-8841",
        ),
        c.OrderConfirmed(order_id="ord-1001"),
        c.OrderRejected(order_id="ord-1002", reason="reservation_expired"),
        c.OrderCancelled(
            order_id="ord-1001",
            reservation_id="res-5f1c",
            lines=[c.Line(sku="SKU-000042", quantity=2)],
            reason="customer request",
        ),
        c.OrderFulfilled(
            order_id="ord-1001",
            reservation_id="res-5f1c",
            shipment_id="shp-1",
            location_id="wh-hamburg",
            lines=[c.Line(sku="SKU-000042", quantity=2)],
        ),
        c.PosTransactionRecorded(
            transaction_id="pos-store-berlin-mitte-t1-000881",
            store_id="store-berlin-mitte",
            terminal_id="t1",
            sequence=881,
            occurred_at=_AT,
            type="sale",
            lines=[
                c.PosLine(sku="SKU-000042", quantity=1, unit_price=Decimal("19.99"), currency="EUR")
            ],
        ),
        c.ReorderRuleSet(
            location_id="store-berlin-mitte",
            sku="SKU-000042",
            reorder_point=10,
            order_up_to=40,
            lead_time_hours=24,
            source_location_id="wh-hamburg",
            safety_stock=4,
            pack_size=6,
        ),
        c.StockObserved(
            location_id="store-berlin-mitte",
            sku="SKU-000042",
            available=9,
            inbound=0,
            velocity_per_day=6.5,
            stock_partition=4,
            stock_offset=1812,
        ),
        c.LowStockDetected(
            location_id="store-berlin-mitte",
            sku="SKU-000042",
            available=9,
            inbound=0,
            reorder_point=10,
            replenishment_id="repl-77",
        ),
        c.ReplenishmentRequested(
            replenishment_id="repl-77",
            location_id="store-berlin-mitte",
            sku="SKU-000042",
            source_location_id="wh-hamburg",
            quantity=36,
            available=9,
            inbound=0,
            velocity_per_day=6.5,
            days_of_cover=1.4,
        ),
        c.ReplenishmentDispatched(
            replenishment_id="repl-77",
            location_id="store-berlin-mitte",
            sku="SKU-000042",
            source_location_id="wh-hamburg",
            quantity=36,
        ),
        c.ReplenishmentReceived(
            replenishment_id="repl-77",
            location_id="store-berlin-mitte",
            sku="SKU-000042",
            receipt_id="rcpt-000124",
            quantity=36,
        ),
        c.OwnershipClaimed(partition=3, epoch=7, owner="inventory-0", claimed_at=_AT),
    )
}
