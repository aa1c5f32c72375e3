"""The orders HTTP API: every change is an event in the log first, every read a view of it."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from aiokafka import TopicPartition
from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from omnistock.events.auth import require
from omnistock.events.catalogue import (
    TEXT_PATTERN,
    Identifier,
    Line,
    OrderCancelled,
    OrderConfirmed,
    OrderFulfilled,
    OrderPlaced,
    OrderRejected,
)
from omnistock.events.envelope import Envelope, Event, derived_id
from omnistock.events.http import FieldError, Problem, ProblemDetails, app_state
from omnistock.events.outcomes import Outcomes
from omnistock.events.positions import consumer_positions
from omnistock.events.producer import EventProducer
from omnistock.orders import projections as rm
from omnistock.orders.domain.orders import ALLOWED_FROM, Action, quantities
from omnistock.orders.handlers import ORDERS_GROUP, LogEnds
from omnistock.orders.settings import OrdersSettings

#: How often a bounded wait looks at the read model again.
POLL_S = 0.005


@dataclass
class Orders:
    """What the routes need, built once by the app's lifespan."""

    settings: OrdersSettings
    producer: EventProducer
    engine: AsyncEngine
    outcomes: Outcomes
    ends: LogEnds
    #: One change of an order at a time in this replica, so a cancel and a fulfil of the
    #: same order cannot both pass the status check before either is in the log.
    locks: weakref.WeakValueDictionary[str, asyncio.Lock] = field(
        default_factory=weakref.WeakValueDictionary
    )

    def lock(self, order_id: str) -> asyncio.Lock:
        lock = self.locks.get(order_id)
        if lock is None:
            lock = self.locks[order_id] = asyncio.Lock()
        return lock


Deps = Annotated[Orders, app_state("orders")]
router = APIRouter(prefix="/v1", tags=["orders"])

PROBLEMS: dict[int | str, dict[str, Any]] = {
    404: {"model": ProblemDetails, "description": "Not found"},
    409: {"model": ProblemDetails, "description": "Conflicts with the order's current status"},
    504: {"model": ProblemDetails, "description": "The read model did not catch up in time"},
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OrderIn(Strict):
    order_id: Identifier
    reservation_id: Identifier
    customer_id: Identifier
    lines: Annotated[list[Line], Field(min_length=1, max_length=100)]
    payment_reference: Annotated[
        str, StringConstraints(min_length=1, max_length=128, pattern=TEXT_PATTERN)
    ]


class Step(BaseModel):
    event: str
    at: str
    event_id: str
    status: str
    reason: str | None = None
    shipment_id: str | None = None
    location_id: str | None = None
    lines: list[Line] | None = None


class OrderOut(BaseModel):
    order_id: str
    status: str
    reservation_id: str
    customer_id: str
    payment_reference: str
    lines: list[Line]
    #: Units shipped so far, per SKU.
    shipped: dict[str, int] = {}
    reject_reason: str | None = None
    cancel_reason: str | None = None
    #: Every event that moved the order, oldest first (None in a place-order answer:
    #: GET the order for it).
    timeline: list[Step] | None = None


class OrderPage(BaseModel):
    items: list[OrderOut]
    #: Pass as ``after`` for the next page; None on the last page.
    next_after: str | None


class CancelIn(Strict):
    reason: Annotated[str, StringConstraints(max_length=200, pattern=TEXT_PATTERN)] = ""


class FulfilIn(Strict):
    location_id: Identifier = Field(description="The warehouse or store the goods leave from.")
    lines: Annotated[list[Line], Field(min_length=1, max_length=100)] | None = Field(
        default=None, description="What ships now (partial fulfilment); default: all that is left."
    )
    shipment_id: Identifier | None = Field(
        default=None,
        description="Makes a retry safe: the same shipment is applied once. Without it every "
        "call is a new shipment.",
    )


async def stored_order(engine: AsyncEngine, order_id: str) -> dict[str, Any] | None:
    async with engine.connect() as connection:
        record = (
            await connection.execute(select(rm.orders).where(rm.orders.c.order_id == order_id))
        ).one_or_none()
    return None if record is None else rm.from_columns(record)


def not_found(order_id: str) -> Problem:
    return Problem(404, "not-found", "Unknown order", f"No order {order_id}.")


def illegal(order_id: str, status: str, action: str) -> Problem:
    return Problem(
        409,
        "order-state",
        f"Cannot {action}",
        f"Order {order_id} is {status}.",
        status_now=status,
    )


def location(order_id: str) -> str:
    return f"/v1/orders/{order_id}"


def same_order(body: OrderIn, row: dict[str, Any]) -> bool:
    placed = body.model_dump(mode="json")
    return all(row[k] == placed[k] for k in placed)


async def until_in_read_model(deps: Orders, tp: TopicPartition, end: int) -> None:
    """Wait until the read model holds everything of ``tp`` below ``end``; 504 past the
    consistency timeout."""
    try:
        async with asyncio.timeout(deps.settings.consistency_timeout_s):
            while True:
                async with deps.engine.connect() as connection:
                    reached = (
                        await connection.execute(
                            select(consumer_positions.c.next_offset).where(
                                consumer_positions.c.consumer == ORDERS_GROUP,
                                consumer_positions.c.topic == tp.topic,
                                consumer_positions.c.partition == tp.partition,
                            )
                        )
                    ).scalar_one_or_none()
                if (reached or 0) >= end:
                    return
                await asyncio.sleep(POLL_S)  # polling the database for a condition, bounded
    except TimeoutError:
        raise Problem(
            504,
            "not-yet-visible",
            "Read model behind the log",
            "The order's view did not catch up with the log in time; retry.",
        ) from None


async def fresh_order(deps: Orders, order_id: str) -> dict[str, Any]:
    """The order as of everything already in the log (decisions need fresh state)."""
    tp, end = await deps.ends.end_of(order_id)
    await until_in_read_model(deps, tp, end)
    row = await stored_order(deps.engine, order_id)
    if row is None:
        raise not_found(order_id)
    return row


def out(row: dict[str, Any], *, timeline: bool = True) -> OrderOut:
    return OrderOut(**{**row, "timeline": row["timeline"] if timeline else None})


@router.post(
    "/orders",
    dependencies=[require("orders:write")],
    status_code=201,
    response_model=OrderOut,
    responses={**PROBLEMS, 202: {"model": OrderOut, "description": "Placed; outcome pending"}},
)
async def place_order(deps: Deps, body: OrderIn, response: Response) -> OrderOut:
    """Place an order on a held reservation; inventory commits the stock or refuses.

    Waits up to ``ORDERS_DECISION_TIMEOUT_S`` for the outcome: 201 with ``confirmed``
    or ``rejected``, else 202 ``placed`` with a Location to poll. The same
    ``order_id`` with the same body returns the same answer; with another body, 409.
    """
    response.headers["Location"] = location(body.order_id)
    oid = body.order_id
    placed = OrderPlaced(**body.model_dump())
    row = await stored_order(deps.engine, oid)
    if row is not None:
        if not same_order(body, row):
            raise idempotency_conflict(oid)
        if row["status"] == "placed":
            row = await decided_row(deps, oid)
        if row["status"] == "placed":
            response.status_code = 202
        return out(row, timeline=False)

    def decided(events: list[Event]) -> Event | None:
        # The first answer in the order's partition is the one the fold accepts.
        return next((e for e in events if isinstance(e, OrderConfirmed | OrderRejected)), None)

    async with deps.outcomes.watch(oid) as inbox:
        # One id per order id: a retry, or a race of two requests, is one placement to every
        # fold downstream (the orders fold and inventory's saga drop the repeat).
        written: Envelope[Event] = await deps.producer.publish(
            placed, id=derived_id(oid, "placed"), correlation_id=oid
        )
        try:
            outcome = await inbox.until(decided, deps.settings.decision_timeout_s)
        except TimeoutError:
            outcome = None
    first = next((e for e in inbox.events if isinstance(e, OrderPlaced)), placed)
    if first != placed:
        raise idempotency_conflict(oid)  # another body won the race for this order id
    if outcome is not None and not await placed_as_sent(deps, body, written):
        raise idempotency_conflict(oid)
    result = OrderOut(**body.model_dump(), status="placed")
    if isinstance(outcome, OrderRejected):
        return result.model_copy(update={"status": "rejected", "reject_reason": outcome.reason})
    if isinstance(outcome, OrderConfirmed):
        return result.model_copy(update={"status": "confirmed"})
    response.status_code = 202
    return result


async def placed_as_sent(deps: Orders, body: OrderIn, written: Envelope[Event]) -> bool:
    """Whether the fold took this body as the order: another replica's placement of the
    same new id with another body may precede ours in the partition, and the inbox only
    saw what its tail read after the watch began. Once the read model is past our write,
    its row is whichever came first. (Nearly free: the decision we waited for comes after
    our write in the same partition, so the read model is usually there already.)"""
    assert written.position is not None
    tp = TopicPartition(written.position.topic, written.position.partition)
    try:
        await until_in_read_model(deps, tp, written.position.offset + 1)
    except Problem:
        return True  # not visible yet: a repeat of the request compares with the stored row
    row = await stored_order(deps.engine, body.order_id)
    return row is not None and same_order(body, row)


async def decided_row(deps: Orders, order_id: str) -> dict[str, Any]:
    """A repeated placement of a pending order waits, bounded, for the read model's verdict."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deps.settings.decision_timeout_s
    while True:
        row = await stored_order(deps.engine, order_id)
        assert row is not None
        if row["status"] != "placed" or loop.time() >= deadline:
            return row
        await asyncio.sleep(POLL_S)  # polling the database for a condition, bounded above


def idempotency_conflict(order_id: str) -> Problem:
    return Problem(
        409,
        "idempotency-conflict",
        "Order id already used",
        f"{order_id} was placed before with a different body.",
        errors=[FieldError(field="order_id", message="already used with another body")],
    )


@router.get(
    "/orders/{order_id}",
    dependencies=[require("orders:write")],
    response_model=OrderOut,
    responses=PROBLEMS,
)
async def get_order(deps: Deps, order_id: Annotated[Identifier, Path()]) -> OrderOut:
    """The order, its status and its timeline (every event that moved it, with times)."""
    row = await stored_order(deps.engine, order_id)
    if row is None:
        raise not_found(order_id)
    return out(row)


@router.get("/orders", dependencies=[require("orders:write")], response_model=OrderPage)
async def list_orders(
    deps: Deps,
    customer_id: Annotated[Identifier | None, Query()] = None,
    status: Annotated[str | None, Query(max_length=32)] = None,
    after: Annotated[Identifier | None, Query(description="Last order id of a page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> OrderPage:
    """Orders by id, a page at a time, optionally of one customer and/or in one status."""
    o = rm.orders
    conditions = [
        condition
        for condition in (
            o.c.customer_id == customer_id if customer_id is not None else None,
            o.c.status == status if status is not None else None,
            o.c.order_id > after if after is not None else None,
        )
        if condition is not None
    ]
    async with deps.engine.connect() as connection:
        records = (
            await connection.execute(
                select(o).where(and_(True, *conditions)).order_by(o.c.order_id).limit(limit + 1)
            )
        ).all()
    items = [out(rm.from_columns(r)) for r in records[:limit]]
    return OrderPage(items=items, next_after=items[-1].order_id if len(records) > limit else None)


async def change(
    deps: Orders,
    order_id: str,
    action: Action,
    *,
    event_id: Callable[[dict[str, Any]], str],
    make: Callable[[dict[str, Any]], Event],
    response: Response,
) -> OrderOut:
    """Check the transition on fresh state, write it, and report what the fold made of it.

    The event's id derives from what the client named (the order for a cancel, the
    shipment for a fulfil), so a repeat of a change the order already went through is
    answered with the order as it is, not refused as an illegal transition: a client
    repeats a write whose answer it lost."""
    response.headers["Location"] = location(order_id)
    async with deps.lock(order_id):
        row = await fresh_order(deps, order_id)
        change_id = event_id(row)
        if any(step["event_id"] == change_id for step in row["timeline"]):
            return out(row)
        if row["status"] not in ALLOWED_FROM[action]:
            raise illegal(order_id, row["status"], action)
        written: Envelope[Event] = await deps.producer.publish(
            make(row), id=change_id, correlation_id=order_id
        )
    assert written.position is not None
    tp = TopicPartition(written.position.topic, written.position.partition)
    try:
        await until_in_read_model(deps, tp, written.position.offset + 1)
    except Problem:
        response.status_code = 202  # in the log; the fold's verdict is not visible yet
        return out(row)
    after = await stored_order(deps.engine, order_id)
    assert after is not None
    if all(step["event_id"] != change_id for step in after["timeline"]):
        # Another replica's change got there first; the fold ignored ours.
        raise illegal(order_id, after["status"], action)
    return out(after)


@router.post(
    "/orders/{order_id}/cancel",
    dependencies=[require("orders:write")],
    response_model=OrderOut,
    responses=PROBLEMS,
)
async def cancel(
    deps: Deps,
    order_id: Annotated[Identifier, Path()],
    response: Response,
    body: CancelIn | None = None,
) -> OrderOut:
    """Cancel a confirmed order: what is still committed to it returns to available.
    Only from ``confirmed`` or ``partially_fulfilled``; otherwise 409 with the status.
    Repeating a cancel that went through answers 200 with the order."""

    def make(row: dict[str, Any]) -> Event:
        return OrderCancelled(
            order_id=order_id,
            reservation_id=row["reservation_id"],
            lines=[Line(**line) for line in row["lines"]],
            reason=body.reason if body else "",
        )

    return await change(
        deps,
        order_id,
        "cancel",
        event_id=lambda _: derived_id(order_id, "cancel"),
        make=make,
        response=response,
    )


@router.post(
    "/orders/{order_id}/fulfil",
    dependencies=[require("orders:write")],
    response_model=OrderOut,
    responses=PROBLEMS,
)
async def fulfil(
    deps: Deps, order_id: Annotated[Identifier, Path()], body: FulfilIn, response: Response
) -> OrderOut:
    """Ship all or part of a confirmed order from ``location_id``; inventory takes the
    units out of on_hand. 409 unless ``confirmed`` or ``partially_fulfilled``. The same
    ``shipment_id`` again answers 200 with the order, shipped once."""

    def shipment_id(row: dict[str, Any]) -> str:
        return body.shipment_id or derived_id(order_id, "shipment", len(row["timeline"]))

    def make(row: dict[str, Any]) -> Event:
        ordered = quantities([Line(**line) for line in row["lines"]])
        remaining = {
            sku: q - row["shipped"].get(sku, 0)
            for sku, q in ordered.items()
            if q > row["shipped"].get(sku, 0)
        }
        lines = body.lines or [Line(sku=s, quantity=q) for s, q in sorted(remaining.items())]
        errors = [
            FieldError(field="lines", message=f"{sku}: {q} asked, {remaining.get(sku, 0)} left")
            for sku, q in quantities(lines).items()
            if q > remaining.get(sku, 0)
        ]
        if errors:
            raise Problem(422, "validation-error", "Invalid request", errors=errors)
        return OrderFulfilled(
            order_id=order_id,
            reservation_id=row["reservation_id"],
            shipment_id=shipment_id(row),
            location_id=body.location_id,
            lines=lines,
        )

    return await change(
        deps,
        order_id,
        "fulfil",
        event_id=lambda row: derived_id(order_id, "shipment", shipment_id(row)),
        make=make,
        response=response,
    )
