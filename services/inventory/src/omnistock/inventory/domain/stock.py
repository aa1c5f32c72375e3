"""Stock per (sku, location) and the holds on it: the fold of one ``inventory.stock`` partition.

Every reader folds the same records in the same order and reaches the same
figures and the same hold decisions, so a decision is a fact of the log (rule 5).
Time enters only through values written in the events (``requested_at``,
``expires_at``, the owner's expiry event time), never through a clock read here.

Choice of location for a line without one (``online_locations`` is ordered by
the API: warehouses first, then stores that ship online, each by location id):
the first location that can fill the whole line; failing that, the line is
split across them in that order; failing that, the SKU is rejected.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from omnistock.events.catalogue import (
    CommitmentCancelled,
    HoldCommitRequested,
    HoldExpired,
    HoldExtensionRequested,
    HoldOutcomeKind,
    HoldReleaseRequested,
    HoldRequested,
    HoldRequestKind,
    PosLineApplied,
    SafetyStockSet,
    StockAdjusted,
    StockReceived,
    StockShipped,
    TransferDispatched,
)
from omnistock.events.envelope import Envelope, Event

HoldStatus = Literal["held", "rejected", "committed", "released", "expired", "cancelled", "shipped"]


@dataclass(slots=True)
class Level:
    """The figures of one SKU at one location."""

    on_hand: int = 0
    held: int = 0
    committed: int = 0
    unsellable: int = 0
    incoming: int = 0
    safety_stock: int = 0

    @property
    def sellable(self) -> int:
        """What a new hold may take; negative when the shelf is short of the books."""
        return self.on_hand - self.held - self.committed - self.unsellable - self.safety_stock

    @property
    def available(self) -> int:
        """What is advertised: never below zero."""
        return max(0, self.sellable)

    @property
    def short(self) -> bool:
        """on_hand below what is promised: a discrepancy to investigate (I1 is about grants)."""
        return self.on_hand < self.held + self.committed

    def figures(self) -> dict[str, int]:
        return {
            "on_hand": self.on_hand,
            "held": self.held,
            "committed": self.committed,
            "unsellable": self.unsellable,
            "incoming": self.incoming,
            "safety_stock": self.safety_stock,
            "available": self.available,
        }


@dataclass(slots=True)
class Hold:
    """One SKU's part of a reservation, as the fold decided it."""

    reservation_id: str
    sku: str
    fingerprint: str
    status: HoldStatus
    expires_at: datetime
    requested: int
    #: Units per location: held while ``held``, committed while ``committed``.
    allocations: dict[str, int] = field(default_factory=dict)
    #: Units per location already shipped out of the commitment.
    shipped: dict[str, int] = field(default_factory=dict)
    available_at_decision: int = 0
    order_id: str | None = None


@dataclass(frozen=True, slots=True)
class Movement:
    """One line of the stock ledger: what one event did to one location's figures."""

    sku: str
    location_id: str
    kind: str
    document_type: str
    document_id: str
    reason: str | None
    on_hand_change: int = 0
    held_change: int = 0
    committed_change: int = 0
    unsellable_change: int = 0
    incoming_change: int = 0


@dataclass(frozen=True, slots=True)
class Decision:
    """The fold's answer to a request about a hold, for the owner to relay."""

    reservation_id: str
    sku: str
    request: HoldRequestKind
    outcome: HoldOutcomeKind
    allocations: tuple[tuple[str, int], ...] = ()
    requested: int = 0
    available: int = 0
    expires_at: datetime | None = None
    order_id: str | None = None
    #: For a hold: the fingerprint of the request answered (not of the hold it met).
    request_fingerprint: str | None = None


@dataclass(slots=True)
class Effects:
    movements: list[Movement] = field(default_factory=list)
    decision: Decision | None = None
    #: (sku, location) whose on_hand fell below held + committed with this event.
    discrepancies: list[tuple[str, str]] = field(default_factory=list)


_NO_EFFECTS = Effects()


class StockBook:
    """Figures and holds of the SKUs of one partition. ``apply`` is state + event → state."""

    def __init__(self) -> None:
        self.levels: dict[tuple[str, str], Level] = {}
        self.holds: dict[tuple[str, str], Hold] = {}
        #: Idempotency keys of the facts already applied (receipts, counts, POS lines, ...).
        self.documents: set[str] = set()
        #: (replenishment_id, sku, to_location_id) -> units dispatched and not yet received;
        #: negative when the receipt was applied before the dispatch (the translator that
        #: turns the dispatch into a transfer was behind). ``incoming`` is the positive part.
        self.in_transit: dict[tuple[str, str, str], int] = {}
        # (expires_at, reservation_id, sku) of holds that were held when pushed; lazily pruned.
        self._expiries: list[tuple[datetime, str, str]] = []

    # -- reading -------------------------------------------------------------------------

    def level(self, sku: str, location_id: str) -> Level:
        return self.levels.get((sku, location_id)) or Level()

    def due_expiries(self, now: datetime) -> list[Hold]:
        """Holds still held whose time is up at ``now`` (for the owner to expire)."""
        due: list[Hold] = []
        while self._expiries and self._expiries[0][0] <= now:
            expires_at, reservation_id, sku = heapq.heappop(self._expiries)
            hold = self.holds.get((reservation_id, sku))
            if hold is not None and hold.status == "held" and hold.expires_at == expires_at:
                due.append(hold)
        return due

    def requeue_expiry(self, hold: Hold) -> None:
        """Put back a due hold whose expiry could not be written, to try again."""
        heapq.heappush(self._expiries, (hold.expires_at, hold.reservation_id, hold.sku))

    def next_expiry(self) -> datetime | None:
        return self._expiries[0][0] if self._expiries else None

    # -- folding -------------------------------------------------------------------------

    def apply(self, envelope: Envelope[Event]) -> Effects:
        event = envelope.event
        handler = _HANDLERS.get(type(event))
        if handler is None:
            return _NO_EFFECTS  # markers and informational events change no figure
        return handler(self, envelope)

    def _mutable(self, sku: str, location_id: str) -> Level:
        level = self.levels.get((sku, location_id))
        if level is None:
            level = self.levels[sku, location_id] = Level()
        return level

    def _first_time(self, key: str) -> bool:
        if key in self.documents:
            return False
        self.documents.add(key)
        return True

    def _on_hand_change(
        self, effects: Effects, sku: str, location_id: str, change: int, **movement: Any
    ) -> None:
        level = self._mutable(sku, location_id)
        was_short = level.short
        level.on_hand += change
        effects.movements.append(Movement(sku, location_id, on_hand_change=change, **movement))
        if level.short and not was_short:
            effects.discrepancies.append((sku, location_id))

    def _received(self, envelope: Envelope[Event]) -> Effects:
        e = envelope.event
        assert isinstance(e, StockReceived)
        if not self._first_time(f"receipt:{e.receipt_id}:{e.sku}:{e.location_id}"):
            return _NO_EFFECTS
        effects = Effects()
        level = self._mutable(e.sku, e.location_id)
        arrived = (
            -self._move_in_transit((e.replenishment_id, e.sku, e.location_id), -e.quantity)
            if e.replenishment_id
            else 0
        )
        level.on_hand += e.quantity
        level.incoming -= arrived
        effects.movements.append(
            Movement(
                e.sku,
                e.location_id,
                "receipt",
                "receipt",
                e.receipt_id,
                e.replenishment_id and f"replenishment {e.replenishment_id}",
                on_hand_change=e.quantity,
                incoming_change=-arrived,
            )
        )
        return effects

    def _adjusted(self, envelope: Envelope[Event]) -> Effects:
        e = envelope.event
        assert isinstance(e, StockAdjusted)
        if not self._first_time(f"adjustment:{e.adjustment_id}:{e.sku}:{e.location_id}"):
            return _NO_EFFECTS
        level = self._mutable(e.sku, e.location_id)
        delta = e.delta if e.delta is not None else (e.counted_quantity or 0) - level.on_hand
        unsellable_change = max(-level.unsellable, e.unsellable_delta)
        effects = Effects()
        level.unsellable += unsellable_change
        self._on_hand_change(
            effects,
            e.sku,
            e.location_id,
            delta,
            kind="adjustment",
            document_type="adjustment",
            document_id=e.adjustment_id,
            reason=e.reason,
            unsellable_change=unsellable_change,
        )
        return effects

    def _safety_stock(self, envelope: Envelope[Event]) -> Effects:
        e = envelope.event
        assert isinstance(e, SafetyStockSet)
        level = self._mutable(e.sku, e.location_id)
        if level.safety_stock == e.safety_stock:
            return _NO_EFFECTS
        level.safety_stock = e.safety_stock
        return Effects([Movement(e.sku, e.location_id, "safety_stock", "rule", e.sku, None)])

    def _pos_line(self, envelope: Envelope[Event]) -> Effects:
        e = envelope.event
        assert isinstance(e, PosLineApplied)
        if not self._first_time(f"pos:{e.transaction_id}:{e.line_number}:{e.kind}"):
            return _NO_EFFECTS
        effects = Effects()
        self._on_hand_change(
            effects,
            e.sku,
            e.location_id,
            e.quantity_change,
            kind=f"pos_{e.kind}",
            document_type="pos_transaction",
            document_id=e.transaction_id,
            reason=None,
        )
        return effects

    def _transfer(self, envelope: Envelope[Event]) -> Effects:
        e = envelope.event
        assert isinstance(e, TransferDispatched)
        if not self._first_time(f"transfer:{e.replenishment_id}:{e.sku}:{e.location_id}"):
            return _NO_EFFECTS
        effects = Effects()
        self._on_hand_change(
            effects,
            e.sku,
            e.location_id,
            -e.quantity,
            kind="transfer_out",
            document_type="replenishment",
            document_id=e.replenishment_id,
            reason=f"to {e.to_location_id}",
        )
        on_the_way = self._move_in_transit(
            (e.replenishment_id, e.sku, e.to_location_id), e.quantity
        )
        self._mutable(e.sku, e.to_location_id).incoming += on_the_way
        effects.movements.append(
            Movement(
                e.sku,
                e.to_location_id,
                "transfer_in_transit",
                "replenishment",
                e.replenishment_id,
                f"from {e.location_id}",
                incoming_change=on_the_way,
            )
        )
        return effects

    def _move_in_transit(self, key: tuple[str, str, str], change: int) -> int:
        """Add ``change`` to what is in transit under ``key``; the change of its positive
        part (what ``incoming`` shows) is returned."""
        before = self.in_transit.get(key, 0)
        after = before + change
        if after:
            self.in_transit[key] = after
        else:
            self.in_transit.pop(key, None)
        return max(0, after) - max(0, before)

    # -- holds ---------------------------------------------------------------------------

    def _hold_requested(self, envelope: Envelope[Event]) -> Effects:
        e = envelope.event
        assert isinstance(e, HoldRequested)
        fp = e.request_fingerprint
        existing = self.holds.get((e.reservation_id, e.sku))
        if existing is not None:
            if existing.fingerprint != e.request_fingerprint:
                return Effects(
                    decision=self._decision(existing, "hold", "conflict", fingerprint=fp)
                )
            first_outcome: HoldOutcomeKind = "rejected" if existing.status == "rejected" else "held"
            return Effects(decision=self._decision(existing, "hold", first_outcome, fingerprint=fp))
        allocations = self._allocate(e)
        requested = sum(line.quantity for line in e.lines)
        if allocations is None:
            candidates = {line.location_id for line in e.lines if line.location_id}
            if any(line.location_id is None for line in e.lines):
                candidates.update(e.online_locations)
            available = sum(self.level(e.sku, loc).available for loc in candidates)
            hold = Hold(
                e.reservation_id,
                e.sku,
                e.request_fingerprint,
                "rejected",
                e.expires_at,
                requested,
                available_at_decision=available,
            )
            self.holds[e.reservation_id, e.sku] = hold
            return Effects(decision=self._decision(hold, "hold", "rejected", fingerprint=fp))
        hold = Hold(
            e.reservation_id,
            e.sku,
            e.request_fingerprint,
            "held",
            e.expires_at,
            requested,
            allocations=allocations,
        )
        self.holds[e.reservation_id, e.sku] = hold
        heapq.heappush(self._expiries, (e.expires_at, e.reservation_id, e.sku))
        effects = Effects()
        for location_id, quantity in allocations.items():
            self._mutable(e.sku, location_id).held += quantity
            effects.movements.append(
                Movement(
                    e.sku,
                    location_id,
                    "hold",
                    "reservation",
                    e.reservation_id,
                    None,
                    held_change=quantity,
                )
            )
        effects.decision = self._decision(hold, "hold", "held", fingerprint=fp)
        return effects

    def _allocate(self, e: HoldRequested) -> dict[str, int] | None:
        """Where to hold every line, or None when the lines together do not fit (I1)."""
        taken: dict[str, int] = {}

        def free(location_id: str) -> int:
            return self.level(e.sku, location_id).sellable - taken.get(location_id, 0)

        for line in e.lines:
            if line.location_id is not None:
                if free(line.location_id) < line.quantity:
                    return None
                taken[line.location_id] = taken.get(line.location_id, 0) + line.quantity
                continue
            whole = next((loc for loc in e.online_locations if free(loc) >= line.quantity), None)
            if whole is not None:
                taken[whole] = taken.get(whole, 0) + line.quantity
                continue
            remaining = line.quantity
            for location_id in e.online_locations:
                share = min(remaining, free(location_id))
                if share > 0:
                    taken[location_id] = taken.get(location_id, 0) + share
                    remaining -= share
                if remaining == 0:
                    break
            if remaining:
                return None
        return taken

    def _release(self, hold: Hold, status: HoldStatus, effects: Effects, kind: str) -> None:
        for location_id, quantity in hold.allocations.items():
            self._mutable(hold.sku, location_id).held -= quantity
            effects.movements.append(
                Movement(
                    hold.sku,
                    location_id,
                    kind,
                    "reservation",
                    hold.reservation_id,
                    None,
                    held_change=-quantity,
                )
            )
        hold.status = status

    def _release_requested(self, envelope: Envelope[Event]) -> Effects:
        e = envelope.event
        assert isinstance(e, HoldReleaseRequested)
        hold = self.holds.get((e.reservation_id, e.sku))
        if hold is None:
            return Effects(decision=self._unknown(e.reservation_id, e.sku, "release"))
        if hold.status != "held":
            outcome: HoldOutcomeKind = (
                "released" if hold.status in ("released", "expired", "rejected") else "not_held"
            )
            return Effects(decision=self._decision(hold, "release", outcome))
        effects = Effects()
        self._release(hold, "released", effects, "release" if e.reason == "released" else "abort")
        effects.decision = self._decision(hold, "release", "released")
        return effects

    def _expired(self, envelope: Envelope[Event]) -> Effects:
        e = envelope.event
        assert isinstance(e, HoldExpired)
        hold = self.holds.get((e.reservation_id, e.sku))
        # The owner's clock decides only when the hold really is due by that clock.
        if hold is None or hold.status != "held" or envelope.time < hold.expires_at:
            return _NO_EFFECTS
        effects = Effects()
        self._release(hold, "expired", effects, "expiry")
        effects.decision = self._decision(hold, "expire", "expired")
        return effects

    def _extension_requested(self, envelope: Envelope[Event]) -> Effects:
        e = envelope.event
        assert isinstance(e, HoldExtensionRequested)
        hold = self.holds.get((e.reservation_id, e.sku))
        if hold is None:
            return Effects(decision=self._unknown(e.reservation_id, e.sku, "extend"))
        effects = Effects()
        if hold.status == "held" and e.requested_at > hold.expires_at:
            self._release(hold, "expired", effects, "expiry")
        if hold.status != "held":
            effects.decision = self._decision(hold, "extend", self._status_outcome(hold))
            return effects
        if e.expires_at > hold.expires_at:
            hold.expires_at = e.expires_at
            heapq.heappush(self._expiries, (e.expires_at, e.reservation_id, e.sku))
        effects.decision = self._decision(hold, "extend", "extended")
        return effects

    def _commit_requested(self, envelope: Envelope[Event]) -> Effects:
        e = envelope.event
        assert isinstance(e, HoldCommitRequested)
        hold = self.holds.get((e.reservation_id, e.sku))
        if hold is None:
            return Effects(decision=self._unknown(e.reservation_id, e.sku, "commit", e.order_id))
        effects = Effects()
        if hold.status == "held" and e.requested_at > hold.expires_at:
            self._release(hold, "expired", effects, "expiry")
        if hold.status == "committed":
            # Said of the order it was sold to: a saga never counts another order's sale.
            effects.decision = self._decision(hold, "commit", "committed")
        elif hold.status != "held":
            effects.decision = self._decision(
                hold, "commit", self._status_outcome(hold), order_id=e.order_id
            )
        elif e.quantity != sum(hold.allocations.values()):
            effects.decision = self._decision(hold, "commit", "mismatch", order_id=e.order_id)
        else:
            for location_id, quantity in hold.allocations.items():
                level = self._mutable(hold.sku, location_id)
                level.held -= quantity
                level.committed += quantity
                effects.movements.append(
                    Movement(
                        hold.sku,
                        location_id,
                        "commit",
                        "order",
                        e.order_id,
                        f"reservation {hold.reservation_id}",
                        held_change=-quantity,
                        committed_change=quantity,
                    )
                )
            hold.status = "committed"
            hold.order_id = e.order_id
            effects.decision = self._decision(hold, "commit", "committed")
        return effects

    def _commitment_cancelled(self, envelope: Envelope[Event]) -> Effects:
        e = envelope.event
        assert isinstance(e, CommitmentCancelled)
        hold = self.holds.get((e.reservation_id, e.sku))
        if hold is None:
            return Effects(decision=self._unknown(e.reservation_id, e.sku, "cancel", e.order_id))
        if hold.status != "committed" or hold.order_id != e.order_id:
            outcome: HoldOutcomeKind = "cancelled" if hold.status == "cancelled" else "not_held"
            return Effects(decision=self._decision(hold, "cancel", outcome))
        effects = Effects()
        for location_id, quantity in hold.allocations.items():
            remaining = quantity - hold.shipped.get(location_id, 0)
            if remaining:
                self._mutable(hold.sku, location_id).committed -= remaining
                effects.movements.append(
                    Movement(
                        hold.sku,
                        location_id,
                        "cancel",
                        "order",
                        e.order_id,
                        None,
                        committed_change=-remaining,
                    )
                )
        hold.status = "cancelled"
        effects.decision = self._decision(hold, "cancel", "cancelled")
        return effects

    def _shipped(self, envelope: Envelope[Event]) -> Effects:
        e = envelope.event
        assert isinstance(e, StockShipped)
        if not self._first_time(f"shipment:{e.shipment_id}:{e.sku}:{e.location_id}"):
            return _NO_EFFECTS
        hold = self.holds.get((e.reservation_id, e.sku))
        if hold is not None and hold.status == "cancelled" and hold.order_id == e.order_id:
            # The order was cancelled before this shipment in the orders log (a cancel and a
            # fulfil racing through two replicas): the orders fold ignored the shipment and
            # its caller was told so, so nothing left the shelf.
            return _NO_EFFECTS
        effects = Effects()
        committed_here = 0
        if hold is not None and hold.status == "committed" and hold.order_id == e.order_id:
            committed_here = self._take_commitment(hold, e, effects)
        self._on_hand_change(
            effects,
            e.sku,
            e.location_id,
            -e.quantity,
            kind="shipment",
            document_type="order",
            document_id=e.order_id,
            reason=f"shipment {e.shipment_id}",
            committed_change=-committed_here,
        )
        if hold is not None and hold.status == "committed" and self._fully_shipped(hold):
            hold.status = "shipped"
        return effects

    def _take_commitment(self, hold: Hold, e: StockShipped, effects: Effects) -> int:
        """Consume the order's commitment: first at the shipping location, the rest elsewhere
        (those units stay where they are and become available again)."""

        def open_at(location_id: str) -> int:
            return hold.allocations.get(location_id, 0) - hold.shipped.get(location_id, 0)

        here = min(e.quantity, open_at(e.location_id))
        if here:
            self._mutable(hold.sku, e.location_id).committed -= here
            hold.shipped[e.location_id] = hold.shipped.get(e.location_id, 0) + here
        remaining = e.quantity - here
        for location_id in sorted(hold.allocations):
            if remaining == 0:
                break
            if location_id == e.location_id:
                continue
            moved = min(remaining, open_at(location_id))
            if moved:
                self._mutable(hold.sku, location_id).committed -= moved
                hold.shipped[location_id] = hold.shipped.get(location_id, 0) + moved
                remaining -= moved
                effects.movements.append(
                    Movement(
                        hold.sku,
                        location_id,
                        "commitment_moved",
                        "order",
                        e.order_id,
                        f"shipped from {e.location_id} instead",
                        committed_change=-moved,
                    )
                )
        return here

    @staticmethod
    def _fully_shipped(hold: Hold) -> bool:
        return all(hold.shipped.get(loc, 0) >= qty for loc, qty in hold.allocations.items())

    # -- decisions -----------------------------------------------------------------------

    @staticmethod
    def _status_outcome(hold: Hold) -> HoldOutcomeKind:
        outcomes: dict[HoldStatus, HoldOutcomeKind] = {
            "held": "held",
            "rejected": "not_held",
            "committed": "committed",
            "released": "released",
            "expired": "expired",
            "cancelled": "cancelled",
            "shipped": "shipped",
        }
        return outcomes[hold.status]

    def _decision(
        self,
        hold: Hold,
        request: HoldRequestKind,
        outcome: HoldOutcomeKind,
        order_id: str | None = None,
        *,
        fingerprint: str | None = None,
    ) -> Decision:
        return Decision(
            hold.reservation_id,
            hold.sku,
            request,
            outcome,
            allocations=tuple(sorted(hold.allocations.items())),
            requested=hold.requested,
            available=hold.available_at_decision,
            expires_at=hold.expires_at,
            order_id=order_id or hold.order_id,
            request_fingerprint=fingerprint,
        )

    @staticmethod
    def _unknown(
        reservation_id: str, sku: str, request: HoldRequestKind, order_id: str | None = None
    ) -> Decision:
        return Decision(reservation_id, sku, request, "unknown", order_id=order_id)

    # -- snapshots and hashing ------------------------------------------------------------

    def canonical(self) -> dict[str, Any]:
        return {
            "levels": sorted(
                [sku, loc, *_level_tuple(level)] for (sku, loc), level in self.levels.items()
            ),
            "holds": sorted(_hold_row(hold) for hold in self.holds.values()),
            "documents": sorted(self.documents),
            "in_transit": sorted([*key, units] for key, units in self.in_transit.items()),
        }

    @classmethod
    def from_canonical(cls, data: dict[str, Any]) -> StockBook:
        book = cls()
        for sku, loc, *figures in data["levels"]:
            book.levels[sku, loc] = Level(*figures)
        for row in data["holds"]:
            hold = _hold_from_row(row)
            book.holds[hold.reservation_id, hold.sku] = hold
            if hold.status == "held":
                heapq.heappush(book._expiries, (hold.expires_at, hold.reservation_id, hold.sku))
        book.documents = set(data["documents"])
        book.in_transit = {(r, sku, loc): units for r, sku, loc, units in data["in_transit"]}
        return book


def _level_tuple(level: Level) -> list[int]:
    return [
        level.on_hand,
        level.held,
        level.committed,
        level.unsellable,
        level.incoming,
        level.safety_stock,
    ]


def _hold_row(hold: Hold) -> list[Any]:
    return [
        hold.reservation_id,
        hold.sku,
        hold.fingerprint,
        hold.status,
        hold.expires_at.isoformat(),
        hold.requested,
        sorted(hold.allocations.items()),
        sorted(hold.shipped.items()),
        hold.available_at_decision,
        hold.order_id,
    ]


def _hold_from_row(row: list[Any]) -> Hold:
    rid, sku, fingerprint, status, expires_at, requested, allocations, shipped, available, order = (
        row
    )
    return Hold(
        rid,
        sku,
        fingerprint,
        status,
        datetime.fromisoformat(expires_at),
        requested,
        dict(map(tuple, allocations)),
        dict(map(tuple, shipped)),
        available,
        order,
    )


_HANDLERS = {
    StockReceived: StockBook._received,
    StockAdjusted: StockBook._adjusted,
    SafetyStockSet: StockBook._safety_stock,
    PosLineApplied: StockBook._pos_line,
    TransferDispatched: StockBook._transfer,
    HoldRequested: StockBook._hold_requested,
    HoldReleaseRequested: StockBook._release_requested,
    HoldExpired: StockBook._expired,
    HoldExtensionRequested: StockBook._extension_requested,
    HoldCommitRequested: StockBook._commit_requested,
    CommitmentCancelled: StockBook._commitment_cancelled,
    StockShipped: StockBook._shipped,
}
