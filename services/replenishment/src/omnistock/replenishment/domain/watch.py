"""What replenishment learns from one ``inventory.stock`` partition: the stock figures and
recent demand of every (sku, location) in it.

The figures come from inventory's own stock fold (:class:`StockBook`), run here over
the same log: the one deterministic fold every reader runs (rule 5), so replenishment
sees exactly the available and incoming that inventory advertises, without asking
inventory anything (rule 1). Demand is what left the shelf for a customer: POS sales
net of returns and voids, and order shipments. Days are UTC days of the event time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from omnistock.events.catalogue import PosLineApplied, StockReceived, StockShipped
from omnistock.events.envelope import Envelope, Event
from omnistock.inventory.domain.stock import StockBook

Pair = tuple[str, str]  # (sku, location_id)


@dataclass(frozen=True, slots=True)
class Change:
    """The last stock event that changed a pair's figures."""

    offset: int
    event_id: str
    day: date


@dataclass(frozen=True, slots=True)
class Observation:
    sku: str
    location_id: str
    available: int
    inbound: int
    velocity_per_day: float
    #: Offset of the last stock event that changed the figures; -1 when none ever did.
    stock_offset: int
    #: Id of that event (what the observation's own id is derived from).
    cause_id: str


@dataclass(frozen=True, slots=True)
class Receipt:
    replenishment_id: str
    sku: str
    location_id: str
    receipt_id: str
    quantity: int


@dataclass(frozen=True, slots=True)
class Demand:
    sku: str
    location_id: str
    day: date
    units: int


@dataclass(slots=True)
class WatchEffects:
    touched: list[Pair] = field(default_factory=list)
    receipts: list[Receipt] = field(default_factory=list)
    demand: list[Demand] = field(default_factory=list)


class StockWatch:
    """``apply`` is state + event → state, returning what the event changed."""

    def __init__(self, velocity_window_days: int = 7) -> None:
        self.window = velocity_window_days
        self.book = StockBook()
        self.changes: dict[Pair, Change] = {}
        self.first_day: dict[Pair, date] = {}
        #: Units demanded per day, for the last ``window`` days of each pair's activity.
        self.demand: dict[Pair, dict[date, int]] = {}

    def apply(self, envelope: Envelope[Event]) -> WatchEffects:
        assert envelope.position is not None
        stock = self.book.apply(envelope)
        effects = WatchEffects()
        if not stock.movements:
            return effects  # a duplicate, a refusal or a marker: nothing changed
        day = envelope.time.date()
        for pair in dict.fromkeys((m.sku, m.location_id) for m in stock.movements):
            self.changes[pair] = Change(envelope.position.offset, envelope.id, day)
            self.first_day.setdefault(pair, day)
            effects.touched.append(pair)
        e = envelope.event
        if isinstance(e, PosLineApplied | StockShipped):
            # A sale takes units off the shelf, a return brings some back; a shipment is sold.
            units = -e.quantity_change if isinstance(e, PosLineApplied) else e.quantity
            self._add_demand((e.sku, e.location_id), day, units)
            effects.demand.append(Demand(e.sku, e.location_id, day, units))
        if isinstance(e, StockReceived) and e.replenishment_id is not None:
            effects.receipts.append(
                Receipt(e.replenishment_id, e.sku, e.location_id, e.receipt_id, e.quantity)
            )
        return effects

    def _add_demand(self, pair: Pair, day: date, units: int) -> None:
        days = self.demand.setdefault(pair, {})
        days[day] = days.get(day, 0) + units
        for old in [d for d in days if (day - d).days >= self.window]:
            del days[old]

    def velocity(self, pair: Pair, today: date) -> float:
        """Units per day over the last ``window`` days up to ``today`` (fewer when the pair
        is younger, but at least one day), never negative."""
        first = self.first_day.get(pair)
        if first is None:
            return 0.0
        days = self.demand.get(pair, {})
        units = sum(u for d, u in days.items() if 0 <= (today - d).days < self.window)
        span = max(1, min(self.window, (today - first).days + 1))
        return round(max(0, units) / span, 4)

    def observe(self, sku: str, location_id: str, *, no_change_id: str) -> Observation:
        """The pair's figures as of its last change (``no_change_id`` names the cause when no
        stock event ever touched it)."""
        pair = (sku, location_id)
        level = self.book.level(sku, location_id)
        change = self.changes.get(pair)
        return Observation(
            sku=sku,
            location_id=location_id,
            available=level.available,
            inbound=max(0, level.incoming),
            velocity_per_day=self.velocity(pair, change.day) if change else 0.0,
            stock_offset=change.offset if change else -1,
            cause_id=change.event_id if change else no_change_id,
        )

    def canonical(self) -> Any:
        return {
            "book": self.book.canonical(),
            "changes": sorted(
                [s, loc, c.offset, c.event_id, c.day.isoformat()]
                for (s, loc), c in self.changes.items()
            ),
            "demand": sorted(
                [s, loc, d.isoformat(), u]
                for (s, loc), days in self.demand.items()
                for d, u in days.items()
            ),
        }
