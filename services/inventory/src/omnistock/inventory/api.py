"""The inventory HTTP API: every write is an event in the log first, every read a view of it."""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from omnistock.events.auth import require
from omnistock.events.catalogue import (
    MAX_QUANTITY,
    TEXT_PATTERN,
    AdjustmentReason,
    Channel,
    HoldLine,
    HoldOutcome,
    HoldRequested,
    Identifier,
    Latitude,
    Line,
    LocatedLine,
    LocationRegistered,
    Longitude,
    RejectedLine,
    RequestedLine,
    ReservationChangeRefused,
    ReservationCommitRejected,
    ReservationCommitRequested,
    ReservationCommitted,
    ReservationExtended,
    ReservationExtensionRequested,
    ReservationHeld,
    ReservationRejected,
    ReservationReleased,
    ReservationReleaseRequested,
    ReservationRequested,
    Sku,
    StockAdjusted,
    StockReceived,
)
from omnistock.events.envelope import Envelope, Event, Position, derived_id, utcnow
from omnistock.events.http import FieldError, Problem, ProblemDetails, app_state
from omnistock.events.outcomes import Inbox, Outcomes
from omnistock.events.positions import consumer_positions
from omnistock.events.producer import EventProducer
from omnistock.inventory import projections as rm
from omnistock.inventory.handlers import STOCK_GROUP, LocationsView
from omnistock.inventory.settings import InventorySettings

MAX_TTL = 86_400
MAX_RECEIPT_LINES = 1_000


@dataclass
class Inventory:
    """What the routes need, built once by the app's lifespan."""

    settings: InventorySettings
    producer: EventProducer
    engine: AsyncEngine
    locations: LocationsView
    outcomes: Outcomes


Deps = Annotated[Inventory, app_state("inventory")]
router = APIRouter(prefix="/v1")

PROBLEMS: dict[int | str, dict[str, Any]] = {
    404: {"model": ProblemDetails, "description": "Not found"},
    409: {"model": ProblemDetails, "description": "Conflicts with the current state"},
    504: {"model": ProblemDetails, "description": "The log did not decide in time; retry"},
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- locations -------------------------------------------------------------------------


class LocationIn(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=TEXT_PATTERN)]
    kind: Literal["store", "warehouse"]
    region: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=TEXT_PATTERN)]
    latitude: Latitude
    longitude: Longitude
    fulfils_online: bool = Field(
        description="Whether e-commerce orders may be filled from here (ship-from-store)."
    )


class LocationOut(LocationIn):
    location_id: str
    position: str | None = None


@router.put(
    "/locations/{location_id}",
    dependencies=[require("admin")],
    response_model=LocationOut,
    tags=["locations"],
)
async def put_location(
    deps: Deps, body: LocationIn, location_id: Annotated[Identifier, Path()]
) -> LocationOut:
    """Register a store or warehouse, or change its details."""
    written = await deps.producer.publish(
        LocationRegistered(location_id=location_id, **body.model_dump())
    )
    assert written.position is not None
    return LocationOut(
        location_id=location_id, position=written.position.token(), **body.model_dump()
    )


@router.get(
    "/locations",
    dependencies=[require("stock:read")],
    response_model=list[LocationOut],
    tags=["locations"],
)
async def list_locations(deps: Deps) -> list[LocationOut]:
    return [
        LocationOut(**loc.model_dump())
        for loc in sorted(deps.locations.locations.values(), key=lambda x: x.location_id)
    ]


# --- receipts and adjustments -----------------------------------------------------------------


class ReceiptIn(Strict):
    receipt_id: Identifier
    location_id: Identifier
    lines: Annotated[list[Line], Field(min_length=1, max_length=MAX_RECEIPT_LINES)]
    replenishment_id: Identifier | None = None


class Written(BaseModel):
    """A write the log holds: ``position`` makes a later read wait for it."""

    id: str
    position: str


async def require_location(deps: Inventory, location_id: str, field: str) -> None:
    if not await deps.locations.known(location_id):
        raise Problem(
            422,
            "unknown-location",
            "Unknown location",
            f"No location {location_id!r} is registered.",
            errors=[FieldError(field=field, message="unknown location")],
        )


def positions_token(envelopes: Sequence[Envelope[Any]]) -> str:
    """One token for several writes: the last offset per partition."""
    last: dict[tuple[str, int], int] = {}
    for envelope in envelopes:
        assert envelope.position is not None
        key = (envelope.position.topic, envelope.position.partition)
        last[key] = max(last.get(key, -1), envelope.position.offset)
    return ",".join(Position(t, p, o).token() for (t, p), o in sorted(last.items()))


@router.post(
    "/receipts",
    dependencies=[require("receipts:write")],
    status_code=201,
    response_model=Written,
    tags=["stock"],
    responses=PROBLEMS,
)
async def post_receipt(deps: Deps, body: ReceiptIn) -> Written:
    """Goods received at a location. Idempotent on ``receipt_id``."""
    await require_location(deps, body.location_id, "location_id")
    quantities: dict[str, int] = {}
    for line in body.lines:
        quantities[line.sku] = quantities.get(line.sku, 0) + line.quantity
    for sku, total in quantities.items():
        if total > MAX_QUANTITY:
            raise Problem(
                422,
                "validation-error",
                "Invalid request",
                errors=[FieldError(field="lines", message=f"{sku}: total {total} too large")],
            )
    written = await deps.producer.send_many(
        [
            deps.producer.envelope(
                StockReceived(
                    receipt_id=body.receipt_id,
                    sku=sku,
                    location_id=body.location_id,
                    quantity=quantity,
                    replenishment_id=body.replenishment_id,
                ),
                id=derived_id(body.receipt_id, sku),
            )
            for sku, quantity in sorted(quantities.items())
        ]
    )
    return Written(id=body.receipt_id, position=positions_token(written))


class AdjustmentIn(Strict):
    adjustment_id: Identifier
    location_id: Identifier
    sku: Sku
    delta: Annotated[int, Field(ge=-MAX_QUANTITY, le=MAX_QUANTITY)] | None = None
    counted_quantity: Annotated[int, Field(ge=0, le=MAX_QUANTITY)] | None = None
    unsellable_delta: Annotated[int, Field(ge=-MAX_QUANTITY, le=MAX_QUANTITY)] = 0
    reason: AdjustmentReason

    @model_validator(mode="after")
    def _one_of(self) -> AdjustmentIn:
        if (self.delta is None) == (self.counted_quantity is None):
            raise ValueError("give exactly one of delta and counted_quantity")
        if self.delta == 0 and self.unsellable_delta == 0:
            raise ValueError("an adjustment must change something")
        return self


@router.post(
    "/adjustments",
    dependencies=[require("stock:adjust")],
    status_code=201,
    response_model=Written,
    tags=["stock"],
    responses=PROBLEMS,
)
async def post_adjustment(deps: Deps, body: AdjustmentIn) -> Written:
    """A count or correction (cycle count, damage, loss, found). Idempotent on its id."""
    await require_location(deps, body.location_id, "location_id")
    written = await deps.producer.publish(
        StockAdjusted(**body.model_dump()), id=derived_id(body.adjustment_id, body.sku)
    )
    return Written(id=body.adjustment_id, position=positions_token([written]))


# --- reservations -----------------------------------------------------------------------


class ReservationIn(Strict):
    reservation_id: Identifier
    lines: Annotated[list[RequestedLine], Field(min_length=1, max_length=100)]
    ttl_seconds: Annotated[
        int, Field(ge=1, le=MAX_TTL, description="At least INVENTORY_MIN_TTL_SECONDS (30).")
    ] = 900
    channel: Channel = "web"


class ReservationOut(BaseModel):
    reservation_id: str
    status: str
    expires_at: datetime | None
    lines: list[LocatedLine]
    order_id: str | None = None
    #: Pass as ``consistent_with`` to a stock query to see this reservation in it.
    position: str | None = None


class TtlIn(Strict):
    ttl_seconds: Annotated[
        int, Field(ge=1, le=MAX_TTL, description="At least INVENTORY_MIN_TTL_SECONDS (30).")
    ]


def check_ttl(deps: Inventory, ttl_seconds: int) -> None:
    minimum = deps.settings.min_ttl_seconds
    if ttl_seconds < minimum:
        raise Problem(
            422,
            "validation-error",
            "Invalid request",
            errors=[FieldError(field="ttl_seconds", message=f"must be at least {minimum}")],
        )


class CommitIn(Strict):
    order_id: Identifier | None = Field(
        default=None, description="The order the stock is sold to; defaults to the reservation id."
    )


def fingerprint(body: BaseModel) -> str:
    canonical = orjson.dumps(body.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:32]


async def stored_reservation(deps: Inventory, reservation_id: str) -> Any:
    async with deps.engine.connect() as connection:
        return (
            await connection.execute(
                select(rm.reservations).where(rm.reservations.c.reservation_id == reservation_id)
            )
        ).one_or_none()


def decision_timeout(reservation_id: str) -> Problem:
    return Problem(
        504,
        "decision-timeout",
        "No decision in time",
        f"The request for {reservation_id} is in the log but its outcome was not seen in time. "
        "Repeat the same request: it is idempotent and returns the outcome.",
    )


@router.post(
    "/reservations",
    dependencies=[require("reservations:write")],
    status_code=201,
    response_model=ReservationOut,
    tags=["reservations"],
    responses=PROBLEMS,
)
async def reserve(deps: Deps, body: ReservationIn) -> ReservationOut:
    """Hold every line for ``ttl_seconds``, or none of them.

    Lines without ``location_id`` are held at locations that ship online:
    warehouses first, then stores, each by id; a line goes whole to the first that
    can fill it, else is split across them in that order. Lines of one SKU are
    checked against their sum. The same ``reservation_id`` with the same body
    returns the same answer; with another body, 409.
    """
    check_ttl(deps, body.ttl_seconds)
    for n, line in enumerate(body.lines):
        if line.location_id is not None:
            await require_location(deps, line.location_id, f"lines.{n}.location_id")
    body_print = fingerprint(body)
    async with deps.outcomes.watch(body.reservation_id) as inbox:
        return await reserve_watched(deps, body, body_print, inbox)


async def reserve_watched(
    deps: Inventory, body: ReservationIn, body_print: str, inbox: Inbox
) -> ReservationOut:
    # Watching before reading the row: the coordinator writes a saga's row before its
    # verdict, so a verdict this request does not see was written after its row.
    existing = await stored_reservation(deps, body.reservation_id)
    if existing is not None and existing.request_fingerprint != body_print:
        raise idempotency_conflict(body.reservation_id)
    now = utcnow()
    expires_at = now + timedelta(seconds=body.ttl_seconds)
    by_sku: dict[str, list[RequestedLine]] = {}
    for line in body.lines:
        by_sku.setdefault(line.sku, []).append(line)
    online = deps.locations.online_order()
    rid = body.reservation_id
    writes: list[Event] = [
        ReservationRequested(
            reservation_id=rid,
            lines=body.lines,
            ttl_seconds=body.ttl_seconds,
            channel=body.channel,
            expires_at=expires_at,
            request_fingerprint=body_print,
        ),
        *(
            HoldRequested(
                reservation_id=rid,
                sku=sku,
                lines=[HoldLine(quantity=x.quantity, location_id=x.location_id) for x in lines],
                online_locations=online,
                expires_at=expires_at,
                requested_at=now,
                request_fingerprint=body_print,
            )
            for sku, lines in sorted(by_sku.items())
        ),
    ]

    def answers(events: list[Event]) -> dict[str, HoldOutcome]:
        """The stock folds' answers to this request's holds (not to a racing request's)."""
        return {
            e.sku: e
            for e in events
            if isinstance(e, HoldOutcome)
            and e.request == "hold"
            and e.request_fingerprint in (None, body_print)
        }

    def repeated(events: list[Event]) -> dict[str, HoldOutcome] | None:
        outcomes = answers(events)
        return outcomes if all(sku in outcomes for sku in by_sku) else None

    def verdict(events: list[Event]) -> Verdict | None:
        return next((e for e in events if isinstance(e, Verdict)), None)

    # The saga's record first: once acknowledged it precedes, on the reservation's
    # partition, every outcome of the holds below, so no hold can look like a stray.
    await deps.producer.publish(writes[0], correlation_id=rid)
    await deps.producer.send_many(
        [deps.producer.envelope(event, correlation_id=rid) for event in writes[1:]]
    )
    try:
        if existing is not None:
            # A retry of a request the saga has taken: the stock folds answer its holds
            # again as they first did.
            outcomes = await inbox.until(repeated, deps.settings.decision_timeout_s)
            return answer_from_holds(rid, outcomes)
        # A new id, as far as the read model knows: only the saga, folding the requests in
        # the log's order, knows whether this one is the first under it. Carts racing
        # under one id are each held SKU by SKU; the others' holds are given back and
        # their requests refused.
        decided = await inbox.until(verdict, deps.settings.decision_timeout_s)
    except TimeoutError:
        raise decision_timeout(rid) from None
    return answer_from_verdict(rid, body_print, decided, answers(inbox.events))


#: What the saga writes once a reservation's request is decided.
Verdict = ReservationHeld | ReservationRejected | ReservationReleased


def answer_from_holds(rid: str, outcomes: dict[str, HoldOutcome]) -> ReservationOut:
    if any(o.outcome == "conflict" for o in outcomes.values()):
        raise idempotency_conflict(rid)
    rejected = [o for o in outcomes.values() if o.outcome == "rejected"]
    if rejected:
        raise insufficient_stock(
            [
                RejectedLine(sku=o.sku, requested=o.requested, available=o.available)
                for o in rejected
            ]
        )
    first = next(iter(outcomes.values()))
    assert first.expires_at is not None
    return held(
        rid,
        first.expires_at,
        [line for sku in sorted(outcomes) for line in outcomes[sku].allocations],
        outcomes,
    )


def answer_from_verdict(
    rid: str, body_print: str, decided: Verdict, outcomes: dict[str, HoldOutcome]
) -> ReservationOut:
    if decided.request_fingerprint not in (None, body_print):
        raise idempotency_conflict(rid)
    if isinstance(decided, ReservationRejected):
        if decided.reason == "conflict":
            raise idempotency_conflict(rid)
        raise insufficient_stock(decided.lines)
    if isinstance(decided, ReservationReleased):
        if decided.reason == "expired":
            raise expired_before_decided(rid)
        raise refused(rid, "released", "reserve")
    return held(rid, decided.expires_at, decided.lines, outcomes)


def held(
    rid: str, expires_at: datetime, lines: list[LocatedLine], outcomes: dict[str, HoldOutcome]
) -> ReservationOut:
    if expires_at <= utcnow():
        raise expired_before_decided(rid)
    return ReservationOut(
        reservation_id=rid,
        status="held",
        expires_at=expires_at,
        lines=lines,
        position=",".join(sorted(o.stock_position for o in outcomes.values())) or None,
    )


def insufficient_stock(lines: list[RejectedLine]) -> Problem:
    return Problem(
        409,
        "insufficient-stock",
        "Insufficient stock",
        "Not every line can be held; nothing is held.",
        lines=[
            {"sku": line.sku, "requested": line.requested, "available": line.available}
            for line in sorted(lines, key=lambda line: line.sku)
        ],
    )


def expired_before_decided(rid: str) -> Problem:
    # Decided after its own expiry (a TTL shorter than the time the log took): the holds
    # run out as they are granted and the saga ends it expired, never held.
    return Problem(
        409,
        "reservation-expired",
        "Reservation expired before it was decided",
        f"Reservation {rid} ran out before every line was held; nothing is held. "
        "Ask again under a new reservation_id, with a longer ttl_seconds.",
        status_now="expired",
        errors=[FieldError(field="ttl_seconds", message="shorter than the decision took")],
    )


def idempotency_conflict(reservation_id: str) -> Problem:
    return Problem(
        409,
        "idempotency-conflict",
        "Reservation id already used",
        f"{reservation_id} was requested before with a different body.",
        errors=[FieldError(field="reservation_id", message="already used with another body")],
    )


@router.get(
    "/reservations/{reservation_id}",
    dependencies=[require("reservations:write")],
    response_model=ReservationOut,
    tags=["reservations"],
    responses=PROBLEMS,
)
async def get_reservation(
    deps: Deps, reservation_id: Annotated[Identifier, Path()]
) -> ReservationOut:
    row = await stored_reservation(deps, reservation_id)
    if row is None:
        raise Problem(404, "not-found", "Unknown reservation", f"No reservation {reservation_id}.")
    return ReservationOut(
        reservation_id=row.reservation_id,
        status=row.status,
        expires_at=row.expires_at,
        lines=[LocatedLine(**line) for line in row.lines],
        order_id=row.order_id,
    )


async def ask(deps: Inventory, reservation_id: str, event: Event, done: Any) -> Any:
    async with deps.outcomes.watch(reservation_id) as inbox:
        await deps.producer.publish(event, correlation_id=reservation_id)
        try:
            return await inbox.until(done, deps.settings.decision_timeout_s)
        except TimeoutError:
            raise decision_timeout(reservation_id) from None


def refused(reservation_id: str, status: str, action: str) -> Problem:
    if status == "unknown":
        return Problem(404, "not-found", "Unknown reservation", f"No reservation {reservation_id}.")
    return Problem(
        409,
        "reservation-state",
        f"Cannot {action}",
        f"Reservation {reservation_id} is {status}.",
        status_now=status,
    )


@router.post(
    "/reservations/{reservation_id}/commit",
    dependencies=[require("reservations:write")],
    response_model=ReservationOut,
    tags=["reservations"],
    responses=PROBLEMS,
)
async def commit(
    deps: Deps, reservation_id: Annotated[Identifier, Path()], body: CommitIn | None = None
) -> ReservationOut:
    """Sell the held stock (on payment). Idempotent for the same order."""
    order_id = (body.order_id if body else None) or reservation_id

    def answered(events: list[Event]) -> Event | None:
        return next(
            (
                e
                for e in events
                if isinstance(e, ReservationCommitted | ReservationCommitRejected)
                and e.order_id == order_id
            ),
            None,
        )

    answer = await ask(
        deps,
        reservation_id,
        ReservationCommitRequested(
            reservation_id=reservation_id, order_id=order_id, requested_at=utcnow()
        ),
        answered,
    )
    if isinstance(answer, ReservationCommitRejected):
        status = "unknown" if answer.reason == "unknown_reservation" else answer.reason
        raise refused(reservation_id, status, "commit")
    return ReservationOut(
        reservation_id=reservation_id,
        status="committed",
        expires_at=None,
        lines=[],
        order_id=order_id,
    )


@router.post(
    "/reservations/{reservation_id}/release",
    dependencies=[require("reservations:write")],
    response_model=ReservationOut,
    tags=["reservations"],
    responses=PROBLEMS,
)
async def release(deps: Deps, reservation_id: Annotated[Identifier, Path()]) -> ReservationOut:
    """Give the held stock back (checkout abandoned). Idempotent."""

    def answered(events: list[Event]) -> Event | None:
        return next(
            (
                e
                for e in events
                if isinstance(e, ReservationReleased)
                or (isinstance(e, ReservationChangeRefused) and e.request == "release")
            ),
            None,
        )

    answer = await ask(
        deps, reservation_id, ReservationReleaseRequested(reservation_id=reservation_id), answered
    )
    if isinstance(answer, ReservationChangeRefused):
        raise refused(reservation_id, answer.status, "release")
    assert isinstance(answer, ReservationReleased)
    status = "expired" if answer.reason == "expired" else "released"
    return ReservationOut(reservation_id=reservation_id, status=status, expires_at=None, lines=[])


@router.post(
    "/reservations/{reservation_id}/extend",
    dependencies=[require("reservations:write")],
    response_model=ReservationOut,
    tags=["reservations"],
    responses=PROBLEMS,
)
async def extend(
    deps: Deps, reservation_id: Annotated[Identifier, Path()], body: TtlIn
) -> ReservationOut:
    """Keep the hold ``ttl_seconds`` from now (payment started and may be slow)."""
    check_ttl(deps, body.ttl_seconds)
    now = utcnow()
    expires_at = now + timedelta(seconds=body.ttl_seconds)

    def answered(events: list[Event]) -> Event | None:
        return next(
            (
                e
                for e in events
                # An answer to an earlier, shorter extension is not this one's.
                if (isinstance(e, ReservationExtended) and e.expires_at >= expires_at)
                or (isinstance(e, ReservationChangeRefused) and e.request == "extend")
            ),
            None,
        )

    answer = await ask(
        deps,
        reservation_id,
        ReservationExtensionRequested(
            reservation_id=reservation_id, expires_at=expires_at, requested_at=now
        ),
        answered,
    )
    if isinstance(answer, ReservationChangeRefused):
        raise refused(reservation_id, answer.status, "extend")
    assert isinstance(answer, ReservationExtended)
    return ReservationOut(
        reservation_id=reservation_id, status="held", expires_at=answer.expires_at, lines=[]
    )


# --- stock queries ------------------------------------------------------------------------


class Figures(BaseModel):
    on_hand: int
    held: int
    committed: int
    unsellable: int
    incoming: int
    available: int


class LocationStock(Figures):
    location_id: str
    name: str | None
    kind: str | None
    distance_km: float | None = None


class SkuStock(BaseModel):
    sku: str
    totals: Figures
    locations: list[LocationStock]
    #: Time of the newest event this view has applied for the SKU's partition.
    as_of: datetime | None


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return round(6371.0 * 2 * math.asin(math.sqrt(a)), 1)


def parse_positions(token: str) -> list[Position]:
    try:
        return [Position.from_token(part) for part in token.split(",") if part]
    except ValueError:
        raise Problem(
            422,
            "validation-error",
            "Invalid request",
            errors=[FieldError(field="consistent_with", message="not a position token")],
        ) from None


async def wait_until_visible(deps: Inventory, token: str) -> None:
    """Read-your-writes: wait until the read model holds every position in ``token``."""
    wanted = parse_positions(token)
    try:
        async with asyncio.timeout(deps.settings.consistency_timeout_s):
            while True:
                async with deps.engine.connect() as connection:
                    rows = (
                        await connection.execute(
                            select(
                                consumer_positions.c.topic,
                                consumer_positions.c.partition,
                                consumer_positions.c.next_offset,
                            ).where(consumer_positions.c.consumer == STOCK_GROUP)
                        )
                    ).all()
                reached = {(r.topic, r.partition): r.next_offset for r in rows}
                if all(reached.get((p.topic, p.partition), 0) > p.offset for p in wanted):
                    return
                await asyncio.sleep(0.005)  # polling the database for a condition, bounded above
    except TimeoutError:
        raise Problem(
            504,
            "not-yet-visible",
            "Not visible yet",
            "The view did not catch up with the given position in time.",
        ) from None


@router.get(
    "/stock/{sku}",
    dependencies=[require("stock:read")],
    response_model=SkuStock,
    tags=["stock"],
    responses=PROBLEMS,
)
async def stock_of_sku(
    deps: Deps,
    sku: Annotated[Sku, Path()],
    near: Annotated[Identifier | None, Query(description="Sort by distance from here")] = None,
    min_available: Annotated[int, Query(ge=0, le=MAX_QUANTITY)] = 0,
    consistent_with: Annotated[str | None, Query(max_length=2000)] = None,
) -> SkuStock:
    """Where is this SKU? Totals and one row per location, nearest first with ``near``."""
    if near is not None:
        await require_location(deps, near, "near")
    if consistent_with:
        await wait_until_visible(deps, consistent_with)
    async with deps.engine.connect() as connection:
        # One statement, so ``as_of`` is the progress of the very rows it dates.
        rows = (
            await connection.execute(
                select(rm.stock_levels, rm.stock_progress.c.last_event_at)
                .outerjoin(
                    rm.stock_progress,
                    rm.stock_progress.c.partition == rm.stock_levels.c.partition,
                )
                .where(rm.stock_levels.c.sku == sku)
                .order_by(rm.stock_levels.c.location_id)
            )
        ).all()
    as_of = rows[0].last_event_at if rows else None
    origin = deps.locations.locations.get(near) if near else None
    located: list[LocationStock] = []
    for row in rows:
        if row.available < min_available:
            continue
        where = deps.locations.locations.get(row.location_id)
        located.append(
            LocationStock(
                location_id=row.location_id,
                name=where.name if where else None,
                kind=where.kind if where else None,
                on_hand=row.on_hand,
                held=row.held,
                committed=row.committed,
                unsellable=row.unsellable,
                incoming=row.incoming,
                available=row.available,
                distance_km=(
                    distance_km(origin.latitude, origin.longitude, where.latitude, where.longitude)
                    if origin and where
                    else None
                ),
            )
        )
    if origin is not None:
        located.sort(key=lambda x: (x.distance_km is None, x.distance_km or 0.0, x.location_id))
    totals = Figures(**{f: sum(getattr(r, f) for r in rows) for f in Figures.model_fields})
    return SkuStock(sku=sku, totals=totals, locations=located, as_of=as_of)


class LocationSkuStock(Figures):
    sku: str


class LocationStockPage(BaseModel):
    location_id: str
    items: list[LocationSkuStock]
    #: Pass as ``after`` for the next page; None on the last page.
    next_after: str | None


@router.get(
    "/locations/{location_id}/stock",
    dependencies=[require("stock:read")],
    response_model=LocationStockPage,
    tags=["stock"],
    responses=PROBLEMS,
)
async def stock_at_location(
    deps: Deps,
    location_id: Annotated[Identifier, Path()],
    after: Annotated[Sku | None, Query(description="Last SKU of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> LocationStockPage:
    """Every SKU at one location, by SKU, a page at a time."""
    await require_location(deps, location_id, "location_id")
    condition = rm.stock_levels.c.location_id == location_id
    if after is not None:
        condition = and_(condition, rm.stock_levels.c.sku > after)
    async with deps.engine.connect() as connection:
        rows = (
            await connection.execute(
                select(rm.stock_levels)
                .where(condition)
                .order_by(rm.stock_levels.c.sku)
                .limit(limit + 1)
            )
        ).all()
    items = [
        LocationSkuStock(sku=r.sku, **{f: getattr(r, f) for f in Figures.model_fields})
        for r in rows[:limit]
    ]
    return LocationStockPage(
        location_id=location_id,
        items=items,
        next_after=items[-1].sku if len(rows) > limit else None,
    )


class MovementOut(BaseModel):
    sku: str
    location_id: str
    kind: str
    reason: str | None
    document_type: str
    document_id: str
    on_hand_change: int
    held_change: int
    committed_change: int
    unsellable_change: int
    incoming_change: int
    on_hand: int
    held: int
    committed: int
    available: int
    event_id: str
    event_type: str
    occurred_at: datetime
    position: str


@router.get(
    "/stock/{sku}/movements",
    dependencies=[require("stock:read")],
    response_model=list[MovementOut],
    tags=["stock"],
)
async def movements(
    deps: Deps,
    sku: Annotated[Sku, Path()],
    location_id: Annotated[Identifier | None, Query()] = None,
    since: Annotated[
        datetime | None, Query(description="Only movements at or after this time")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[MovementOut]:
    """The stock ledger of a SKU: every movement, why, and the figures it left."""
    m = rm.stock_movements
    condition = m.c.sku == sku
    if location_id is not None:
        condition = and_(condition, m.c.location_id == location_id)
    if since is not None:
        condition = and_(condition, m.c.occurred_at >= since)
    async with deps.engine.connect() as connection:
        rows = (
            await connection.execute(
                select(m).where(condition).order_by(m.c.offset, m.c.seq).limit(limit)
            )
        ).all()
    return [
        MovementOut(
            **{k: getattr(r, k) for k in MovementOut.model_fields if k != "position"},
            position=f"{r.partition}:{r.offset}",
        )
        for r in rows
    ]
