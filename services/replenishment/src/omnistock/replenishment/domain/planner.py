"""Reorder rules and replenishment requests: the fold of one ``replenishment.events`` partition.

Every (sku, location) of a location lives in its location's partition, with its
rule, its last observed figures and its open request. The decision to request
stock is made *by this fold*, at the observation (or rule, or closing receipt) that
makes ``available + inbound <= reorder_point`` true while no request is open, so
every reader, every replay and every restart makes the same decision at the same
record (rule 5). The :class:`LowStockDetected` and :class:`ReplenishmentRequested`
events the partition owner then writes only announce it: their ids are derived
from the deciding record, and the fold changes nothing when it reads them.

Requests move requested → dispatched → received; receipts naming the request may
come in parts, and the request is received (closed) once they add up to what was
dispatched (what was requested, if it was never dispatched).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from omnistock.events.catalogue import (
    MAX_QUANTITY,
    LowStockDetected,
    ReorderRuleSet,
    ReplenishmentDispatched,
    ReplenishmentReceived,
    ReplenishmentRequested,
    StockObserved,
)
from omnistock.events.envelope import Envelope, Event, derived_id

RequestStatus = Literal["requested", "dispatched", "received"]
OPEN: tuple[RequestStatus, ...] = ("requested", "dispatched")
Key = tuple[str, str]  # (location_id, sku)


def order_quantity(rule: ReorderRuleSet, available: int, inbound: int) -> int:
    """order_up_to - available - inbound, rounded up to whole packs; 0 when above the point."""
    position = available + inbound
    if position > rule.reorder_point:
        return 0
    needed = rule.order_up_to - position
    if needed <= 0:
        return 0
    packs = math.ceil(needed / rule.pack_size)
    return min(packs * rule.pack_size, MAX_QUANTITY - MAX_QUANTITY % rule.pack_size)


def days_of_cover(available: int, velocity_per_day: float) -> float | None:
    return round(available / velocity_per_day, 2) if velocity_per_day > 0 else None


@dataclass(slots=True)
class Level:
    available: int
    inbound: int
    velocity_per_day: float
    stock_partition: int
    stock_offset: int
    observed_at: datetime


@dataclass(slots=True)
class Request:
    replenishment_id: str
    location_id: str
    sku: str
    source_location_id: str
    quantity: int
    available: int
    inbound: int
    reorder_point: int
    order_up_to: int
    velocity_per_day: float
    days_of_cover: float | None
    requested_at: datetime
    status: RequestStatus = "requested"
    dispatched_quantity: int = 0
    dispatched_at: datetime | None = None
    received_quantity: int = 0
    received_at: datetime | None = None
    receipts: dict[str, int] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        return self.status in OPEN

    def row(self) -> dict[str, Any]:
        return {
            "replenishment_id": self.replenishment_id,
            "location_id": self.location_id,
            "sku": self.sku,
            "source_location_id": self.source_location_id,
            "status": self.status,
            "quantity": self.quantity,
            "available": self.available,
            "inbound": self.inbound,
            "reorder_point": self.reorder_point,
            "order_up_to": self.order_up_to,
            "velocity_per_day": self.velocity_per_day,
            "days_of_cover": self.days_of_cover,
            "dispatched_quantity": self.dispatched_quantity,
            "received_quantity": self.received_quantity,
            "receipts": dict(sorted(self.receipts.items())),
            "requested_at": self.requested_at.isoformat(),
            "dispatched_at": _iso(self.dispatched_at),
            "received_at": _iso(self.received_at),
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@dataclass(slots=True)
class Cell:
    """One (sku, location): its rule, its last observed figures, its open request."""

    rule: ReorderRuleSet | None = None
    rule_set_at: datetime | None = None
    level: Level | None = None
    open_request: str | None = None

    @property
    def below_reorder_point(self) -> bool:
        return (
            self.rule is not None
            and self.level is not None
            and self.level.available + self.level.inbound <= self.rule.reorder_point
        )


@dataclass(slots=True)
class PlanEffects:
    #: Announcements to write, with their derived ids.
    to_write: list[tuple[Event, str]] = field(default_factory=list)
    rules: list[Key] = field(default_factory=list)
    levels: list[Key] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


class ReplenishmentBook:
    """``apply`` is state + event → state; see the module docstring."""

    def __init__(self) -> None:
        self.cells: dict[Key, Cell] = {}
        self.requests: dict[str, Request] = {}

    def cell(self, location_id: str, sku: str) -> Cell:
        key = (location_id, sku)
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = Cell()
        return cell

    def apply(self, envelope: Envelope[Event]) -> PlanEffects:
        e = envelope.event
        effects = PlanEffects()
        if isinstance(e, ReorderRuleSet):
            cell = self.cell(e.location_id, e.sku)
            cell.rule, cell.rule_set_at = e, envelope.time
            effects.rules.append((e.location_id, e.sku))
            self._evaluate(cell, envelope, e.location_id, e.sku, effects)
        elif isinstance(e, StockObserved):
            self._observed(envelope, e, effects)
        elif isinstance(e, ReplenishmentDispatched):
            request = self._request_of(e.replenishment_id, e.location_id, e.sku)
            if request is not None and request.status == "requested":
                request.status = "dispatched"
                request.dispatched_quantity = e.quantity
                request.dispatched_at = envelope.time
                effects.requests.append(request.replenishment_id)
        elif isinstance(e, ReplenishmentReceived):
            self._received(envelope, e, effects)
        # LowStockDetected and ReplenishmentRequested announce what this fold decided.
        return effects

    def _request_of(self, replenishment_id: str, location_id: str, sku: str) -> Request | None:
        request = self.requests.get(replenishment_id)
        if request is None or (request.location_id, request.sku) != (location_id, sku):
            return None
        return request

    def _observed(self, envelope: Envelope[Event], e: StockObserved, effects: PlanEffects) -> None:
        cell = self.cell(e.location_id, e.sku)
        last = cell.level
        if (
            last is not None
            and last.stock_partition == e.stock_partition
            and e.stock_offset <= last.stock_offset
        ):
            return  # already known: a redelivery, or a watcher that restarted behind
        cell.level = Level(
            e.available,
            e.inbound,
            e.velocity_per_day,
            e.stock_partition,
            e.stock_offset,
            envelope.time,
        )
        effects.levels.append((e.location_id, e.sku))
        self._evaluate(cell, envelope, e.location_id, e.sku, effects)

    def _received(
        self, envelope: Envelope[Event], e: ReplenishmentReceived, effects: PlanEffects
    ) -> None:
        request = self._request_of(e.replenishment_id, e.location_id, e.sku)
        if request is None or e.receipt_id in request.receipts:
            return
        request.receipts[e.receipt_id] = e.quantity
        request.received_quantity += e.quantity
        effects.requests.append(request.replenishment_id)
        expected = request.dispatched_quantity or request.quantity
        if request.open and request.received_quantity >= expected:
            request.status = "received"
            request.received_at = envelope.time
            cell = self.cell(request.location_id, request.sku)
            if cell.open_request == request.replenishment_id:
                cell.open_request = None
            # Sold down again while the goods were on their way: the next request is due now.
            self._evaluate(cell, envelope, request.location_id, request.sku, effects)

    def _evaluate(
        self,
        cell: Cell,
        envelope: Envelope[Event],
        location_id: str,
        sku: str,
        effects: PlanEffects,
    ) -> None:
        rule, level = cell.rule, cell.level
        if rule is None or level is None or cell.open_request is not None:
            return
        quantity = order_quantity(rule, level.available, level.inbound)
        if quantity == 0:
            return
        replenishment_id = "rpl-" + derived_id(envelope.id, "replenishment", location_id, sku)
        request = Request(
            replenishment_id=replenishment_id,
            location_id=location_id,
            sku=sku,
            source_location_id=rule.source_location_id,
            quantity=quantity,
            available=level.available,
            inbound=level.inbound,
            reorder_point=rule.reorder_point,
            order_up_to=rule.order_up_to,
            velocity_per_day=level.velocity_per_day,
            days_of_cover=days_of_cover(level.available, level.velocity_per_day),
            requested_at=envelope.time,
        )
        self.requests[replenishment_id] = request
        cell.open_request = replenishment_id
        effects.requests.append(replenishment_id)
        effects.to_write.append(
            (
                LowStockDetected(
                    location_id=location_id,
                    sku=sku,
                    available=level.available,
                    inbound=level.inbound,
                    reorder_point=rule.reorder_point,
                    replenishment_id=replenishment_id,
                ),
                derived_id(envelope.id, "low-stock", location_id, sku),
            )
        )
        effects.to_write.append(
            (
                ReplenishmentRequested(
                    location_id=location_id,
                    replenishment_id=replenishment_id,
                    sku=sku,
                    source_location_id=rule.source_location_id,
                    quantity=quantity,
                    available=level.available,
                    inbound=level.inbound,
                    velocity_per_day=level.velocity_per_day,
                    days_of_cover=request.days_of_cover,
                ),
                derived_id(envelope.id, "requested", location_id, sku),
            )
        )

    # -- reading -----------------------------------------------------------------------------

    def rule_row(self, key: Key) -> dict[str, Any]:
        cell = self.cells[key]
        assert cell.rule is not None
        assert cell.rule_set_at is not None
        return {
            **cell.rule.model_dump(mode="json"),
            "set_at": cell.rule_set_at.isoformat(),
        }

    def level_row(self, key: Key) -> dict[str, Any]:
        level = self.cells[key].level
        assert level is not None
        return {
            "location_id": key[0],
            "sku": key[1],
            "available": level.available,
            "inbound": level.inbound,
            "velocity_per_day": level.velocity_per_day,
            "stock_partition": level.stock_partition,
            "stock_offset": level.stock_offset,
            "observed_at": level.observed_at.isoformat(),
        }

    def rows(self) -> dict[str, list[dict[str, Any]]]:
        """The whole state as read-model rows, in key order (what the state hash covers)."""
        keys = sorted(self.cells)
        return {
            "rules": [self.rule_row(k) for k in keys if self.cells[k].rule is not None],
            "levels": [self.level_row(k) for k in keys if self.cells[k].level is not None],
            "replenishments": [self.requests[r].row() for r in sorted(self.requests)],
        }

    def canonical(self) -> Any:
        return self.rows()

    def open_requests(self) -> list[Request]:
        return [r for r in self.requests.values() if r.open]
