"""The pos-gateway HTTP API: transactions in (one or a batch), terminal gaps and sales out.

A transaction is acknowledged only once it is in the log (acks=all) *and* this
replica's ledger has folded it, because only the fold can say whether this copy
was the first of its transaction id (accepted) or not (duplicate).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from omnistock.events.auth import Principal, require, require_store
from omnistock.events.catalogue import Identifier
from omnistock.events.envelope import Envelope, Event
from omnistock.events.http import FieldError, Problem, ProblemDetails, app_state
from omnistock.events.producer import EventProducer
from omnistock.pos_gateway import metrics
from omnistock.pos_gateway import projections as rm
from omnistock.pos_gateway.domain.judging import Accept, BatchJudge, Duplicate, Reject, Submission
from omnistock.pos_gateway.handlers import LedgerView
from omnistock.pos_gateway.settings import PosGatewaySettings

router = APIRouter(prefix="/v1/pos")

#: Gap ranges listed per terminal; the count of missing numbers is always complete.
MAX_GAPS_SHOWN = 100


@dataclass
class PosGateway:
    settings: PosGatewaySettings
    producer: EventProducer
    engine: AsyncEngine
    view: LedgerView
    clock: Callable[[], datetime]


Deps = Annotated[PosGateway, app_state("pos_gateway")]

Status = Literal["accepted", "duplicate", "rejected"]


class ItemResult(BaseModel):
    index: int
    transaction_id: str | None
    status: Status
    #: Why it was rejected: invalid, future_timestamp, too_old, unknown_void_target,
    #: already_voided, conflict.
    reason: str | None = None
    errors: list[FieldError] | None = None
    #: Where the accepted transaction sits in the log.
    position: str | None = None


class BatchResult(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    results: list[ItemResult]


def _rejected(index: int, transaction_id: str | None, reject: Reject) -> ItemResult:
    return ItemResult(
        index=index,
        transaction_id=transaction_id,
        status="rejected",
        reason=reject.reason,
        errors=[FieldError(field=reject.field, message=reject.message)],
    )


def _invalid(index: int, raw: Any, error: ValidationError) -> ItemResult:
    transaction_id = raw.get("transaction_id") if isinstance(raw, dict) else None
    return ItemResult(
        index=index,
        transaction_id=transaction_id if isinstance(transaction_id, str) else None,
        status="rejected",
        reason="invalid",
        errors=[
            FieldError(field=".".join(map(str, e["loc"])) or "body", message=e["msg"])
            for e in error.errors(include_url=False)
        ],
    )


def _judge_all(
    deps: PosGateway, items: Sequence[Submission | ItemResult]
) -> list[Accept | Duplicate | Reject | ItemResult]:
    judge = BatchJudge(
        deps.view.ledger,
        deps.clock(),
        timedelta(seconds=deps.settings.max_clock_skew_s),
    )
    return [item if isinstance(item, ItemResult) else judge.judge(item) for item in items]


async def record(deps: PosGateway, raw_items: Sequence[Any]) -> list[ItemResult]:
    """Judge, write and answer every item; one bad item never sinks the others."""
    parsed: list[Submission | ItemResult] = []
    for index, raw in enumerate(raw_items):
        try:
            parsed.append(Submission.model_validate(raw))
        except ValidationError as exc:
            parsed.append(_invalid(index, raw, exc))
    verdicts = _judge_all(deps, parsed)
    if any(isinstance(v, Reject) and v.reason == "unknown_void_target" for v in verdicts):
        # The voided sale may have been written through another replica a moment ago.
        await deps.view.caught_up(deps.settings.decision_timeout_s)
        verdicts = _judge_all(deps, parsed)
    accepted = [(i, v) for i, v in enumerate(verdicts) if isinstance(v, Accept)]
    written: list[Envelope[Any]] = await deps.producer.send_many(
        [
            # A fresh id per write (not per transaction): the ledger keeps the id of the copy
            # that counted, which tells this request whether its copy won.
            deps.producer.envelope(v.event)
            for _, v in accepted
        ]
    )
    try:
        async with asyncio.timeout(deps.settings.decision_timeout_s):
            await deps.view.reached(e.position for e in written if e.position is not None)
    except TimeoutError:
        raise Problem(
            504,
            "decision-timeout",
            "Recorded, outcome not known yet",
            "The transactions are in the log but this replica has not folded them in time. "
            "Send them again: each comes back accepted or duplicate.",
        ) from None
    outcome: dict[int, ItemResult] = {}
    for (index, accept), envelope in zip(accepted, written, strict=True):
        outcome[index] = _settled(deps, index, accept, envelope)
    results: list[ItemResult] = []
    for index, verdict in enumerate(verdicts):
        if isinstance(verdict, ItemResult):
            result = verdict
        elif isinstance(verdict, Reject):
            result = _rejected(index, parsed_id(parsed[index]), verdict)
        elif isinstance(verdict, Duplicate):
            result = ItemResult(
                index=index, transaction_id=parsed_id(parsed[index]), status="duplicate"
            )
        else:
            result = outcome[index]
        results.append(result)
    _count(parsed, results)
    return results


def parsed_id(item: Submission | ItemResult) -> str | None:
    return item.transaction_id


def _settled(
    deps: PosGateway, index: int, verdict: Accept, envelope: Envelope[Event]
) -> ItemResult:
    """What the log made of a written transaction: this copy counted, or another did first."""
    event = verdict.event
    assert envelope.position is not None
    ledger = deps.view.ledger
    recorded = ledger.recorded(event.store_id, event.transaction_id)
    assert recorded is not None, "folded past its own position"
    if recorded.event_id != envelope.id:
        if recorded.fingerprint == verdict.fingerprint:
            return ItemResult(index=index, transaction_id=event.transaction_id, status="duplicate")
        return _rejected(
            index,
            event.transaction_id,
            Reject(
                "conflict",
                "transaction_id",
                "recorded a moment earlier with different content; this copy does not count",
            ),
        )
    if event.voids_transaction_id is not None and (
        ledger.voided_by.get((event.store_id, event.voids_transaction_id)) != event.transaction_id
    ):
        return _rejected(
            index,
            event.transaction_id,
            Reject(
                "already_voided",
                "voids_transaction_id",
                f"{event.voids_transaction_id!r} was voided a moment earlier by another void",
            ),
        )
    return ItemResult(
        index=index,
        transaction_id=event.transaction_id,
        status="accepted",
        position=envelope.position.token(),
    )


def _count(parsed: Sequence[Submission | ItemResult], results: Sequence[ItemResult]) -> None:
    for item, result in zip(parsed, results, strict=True):
        kind = item.type if isinstance(item, Submission) else "unknown"
        metrics.SUBMISSIONS.labels(kind, result.status).inc()
        if result.reason is not None:
            metrics.REJECTIONS.labels(result.reason).inc()
        if result.status == "accepted" and isinstance(item, Submission):
            store = metrics.store_label(item.store_id)
            metrics.UNITS.labels(store, kind).inc(sum(line.quantity for line in item.lines))
            for line in item.lines:
                metrics.REVENUE.labels(store, kind, line.currency).inc(
                    float(line.quantity * line.unit_price)
                )


def _body_items(data: Any, max_batch: int) -> tuple[list[Any], bool]:
    """The submitted transactions, and whether they came as a batch."""
    if isinstance(data, dict) and set(data) == {"transactions"}:
        data = data["transactions"]
        if not isinstance(data, list):
            raise Problem(
                422,
                "validation-error",
                "Invalid request",
                errors=[FieldError(field="transactions", message="must be a list")],
            )
    if isinstance(data, list):
        if not data:
            raise Problem(422, "empty-batch", "Empty batch", "A batch has at least one item.")
        if len(data) > max_batch:
            raise Problem(
                413,
                "batch-too-large",
                "Batch too large",
                f"{len(data)} transactions; at most {max_batch} per request. Nothing was "
                "recorded: split the batch.",
                max_batch=max_batch,
            )
        return data, True
    if isinstance(data, dict):
        return [data], False
    raise Problem(
        422,
        "validation-error",
        "Invalid request",
        errors=[FieldError(field="body", message="a transaction object or a batch")],
    )


@router.post(
    "/transactions",
    tags=["transactions"],
    summary="Record one transaction (201/200) or a batch of up to POS_MAX_BATCH (200)",
    response_model=BatchResult,
    responses={
        200: {"description": "A batch: one result per item (or a single duplicate)"},
        201: {"model": ItemResult, "description": "A single transaction, recorded"},
        400: {"model": ProblemDetails, "description": "Malformed JSON"},
        409: {"model": ProblemDetails, "description": "Transaction id taken by another"},
        413: {"model": ProblemDetails, "description": "Batch too large"},
    },
)
async def post_transactions(
    deps: Deps, request: Request, principal: Annotated[Principal, require("pos:write")]
) -> JSONResponse:
    """The body is one transaction object, or ``{"transactions": [...]}`` (or a bare list).

    Accepted: written to the log now. Duplicate: recorded before with the same content,
    not written again. Rejected: with a reason per field; nothing written. A terminal's
    key is bound to its store: one transaction of another store in a batch refuses the
    whole batch (403), nothing written."""
    try:
        data = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise Problem(
            400,
            "malformed-json",
            "Malformed JSON",
            "The request body is not valid JSON.",
            errors=[FieldError(field="body", message=str(exc))],
        ) from None
    items, is_batch = _body_items(data, deps.settings.max_batch)
    require_store(principal, _claimed_stores(items))
    results = await record(deps, items)
    if is_batch:
        counts = {s: sum(r.status == s for r in results) for s in ("accepted", "duplicate")}
        body = BatchResult(
            accepted=counts["accepted"],
            duplicates=counts["duplicate"],
            rejected=len(results) - counts["accepted"] - counts["duplicate"],
            results=results,
        )
        return JSONResponse(body.model_dump(mode="json", exclude_none=True))
    (result,) = results
    if result.status == "rejected":
        raise Problem(
            409 if result.reason == "conflict" else 422,
            f"transaction-{(result.reason or 'invalid').replace('_', '-')}",
            "Transaction rejected",
            f"Transaction {result.transaction_id!r} was not recorded.",
            errors=result.errors,
            reason=result.reason,
        )
    return JSONResponse(
        result.model_dump(mode="json", exclude_none=True),
        status_code=201 if result.status == "accepted" else 200,
    )


def _claimed_stores(items: Sequence[Any]) -> list[str]:
    """The stores the items speak for (an item without a valid one is rejected anyway)."""
    return [
        item["store_id"]
        for item in items
        if isinstance(item, dict) and isinstance(item.get("store_id"), str)
    ]


def may_read_store(principal: Principal, store_id: str) -> None:
    """Store figures: staff and EC (``stock:read``) see every store, a terminal its own."""
    if not principal.has("stock:read"):
        require_store(principal, [store_id])


Reader = Annotated[Principal, require("stock:read", "pos:write")]


class TerminalOut(BaseModel):
    store_id: str
    terminal_id: str
    first_sequence: int | None
    last_sequence: int | None
    received: int
    #: Sequence numbers between the first and the last received that never arrived.
    missing: int
    #: The missing numbers as inclusive [from, to] ranges, lowest first (at most 100).
    gaps: list[tuple[int, int]]


@router.get(
    "/terminals/{store_id}/{terminal_id}",
    response_model=TerminalOut,
    tags=["terminals"],
    responses={404: {"model": ProblemDetails}},
)
async def get_terminal(
    deps: Deps,
    principal: Reader,
    store_id: Annotated[Identifier, Path()],
    terminal_id: Annotated[Identifier, Path()],
) -> TerminalOut:
    """Which of a terminal's transaction numbers never arrived: a lost sale is noticed."""
    may_read_store(principal, store_id)
    numbers = deps.view.ledger.terminals.get((store_id, terminal_id))
    if numbers is None:
        raise Problem(
            404,
            "unknown-terminal",
            "Unknown terminal",
            f"No transaction from terminal {terminal_id!r} of store {store_id!r} is recorded.",
        )
    return TerminalOut(
        store_id=store_id,
        terminal_id=terminal_id,
        first_sequence=numbers.first,
        last_sequence=numbers.last,
        received=numbers.received,
        missing=numbers.missing,
        gaps=numbers.gaps(MAX_GAPS_SHOWN),
    )


class SalesMinute(BaseModel):
    minute: datetime
    currency: str
    transactions: int
    units: int
    revenue: Decimal


class SalesOut(BaseModel):
    store_id: str
    since: datetime
    minutes: list[SalesMinute]


@router.get("/sales", response_model=SalesOut, tags=["sales"])
async def get_sales(
    deps: Deps,
    principal: Reader,
    store_id: Annotated[Identifier, Query()],
    since: Annotated[
        AwareDatetime | None,
        Query(description="Start (inclusive, by the minute); default POS_SALES_WINDOW_MINUTES ago"),
    ] = None,
) -> SalesOut:
    """Net units and revenue per minute of one store (sales minus returns, voids reversed in
    the voided sale's minute), by when they happened at the till."""
    may_read_store(principal, store_id)
    start = since or deps.clock() - timedelta(minutes=deps.settings.sales_window_minutes)
    start = start.replace(second=0, microsecond=0)
    async with deps.engine.connect() as connection:
        rows = await rm.sales_since(connection, store_id, start)
    return SalesOut(
        store_id=store_id,
        since=start,
        minutes=[
            SalesMinute(minute=m, currency=c, transactions=t, units=u, revenue=r)
            for m, c, t, u, r in rows
        ],
    )
