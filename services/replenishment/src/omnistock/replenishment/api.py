"""The replenishment HTTP API: rules and dispatches are events in the log first; reads are
views of the planner's read model."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Container
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from omnistock.events.auth import require
from omnistock.events.catalogue import (
    MAX_QUANTITY,
    Identifier,
    ReorderRuleSet,
    ReplenishmentDispatched,
)
from omnistock.events.envelope import derived_id, utcnow
from omnistock.events.http import FieldError, Problem, ProblemDetails, app_state
from omnistock.events.locations import LocationsView
from omnistock.events.producer import EventProducer
from omnistock.replenishment import projections as rm
from omnistock.replenishment.domain.suggestions import suggest
from omnistock.replenishment.settings import ReplenishmentSettings


@dataclass
class Replenishment:
    """What the routes need, built once by the app's lifespan."""

    settings: ReplenishmentSettings
    producer: EventProducer
    engine: AsyncEngine
    locations: LocationsView


Deps = Annotated[Replenishment, app_state("replenishment")]
#: Rules, requests and suggestions are read by staff and merchandisers alike.
READ = require("stock:read", "rules:write")
#: Every route hangs off this router, so an authentication dependency can be attached once.
router = APIRouter(prefix="/v1", tags=["replenishment"])

PROBLEMS: dict[int | str, dict[str, Any]] = {
    404: {"model": ProblemDetails, "description": "Not found"},
    409: {"model": ProblemDetails, "description": "Conflicts with the request's status"},
    413: {"model": ProblemDetails, "description": "Too many rules in one upload"},
    415: {"model": ProblemDetails, "description": "Neither JSON nor CSV"},
}


class RuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reorder_point: Annotated[int, Field(ge=0, le=MAX_QUANTITY)]
    order_up_to: Annotated[int, Field(gt=0, le=MAX_QUANTITY)]
    lead_time_hours: Annotated[int, Field(ge=0, le=24 * 365)]
    source_location_id: Identifier
    safety_stock: Annotated[int, Field(ge=0, le=MAX_QUANTITY)] = 0
    pack_size: Annotated[int, Field(ge=1, le=MAX_QUANTITY)] = 1


class RuleOut(BaseModel):
    location_id: str
    sku: str
    reorder_point: int
    order_up_to: int
    lead_time_hours: int
    source_location_id: str
    safety_stock: int
    pack_size: int
    set_at: str | None = None
    #: Where the rule's event is in the log (in a write's answer).
    position: str | None = None
    #: The latest figures the planner holds for the pair (in a listing; None before any).
    available: int | None = None
    inbound: int | None = None
    velocity_per_day: float | None = None


class RejectedRow(BaseModel):
    #: 1-based: the n-th rule of the upload (the CSV header is not a row).
    row: int
    location_id: str | None
    sku: str | None
    errors: list[FieldError]


class BulkResult(BaseModel):
    applied: int
    rejected: list[RejectedRow]


class ReplenishmentOut(BaseModel):
    replenishment_id: str
    location_id: str
    sku: str
    source_location_id: str
    status: Literal["requested", "dispatched", "received"]
    quantity: int
    available: int
    inbound: int
    reorder_point: int
    order_up_to: int
    velocity_per_day: float
    days_of_cover: float | None
    dispatched_quantity: int
    received_quantity: int
    receipts: dict[str, int]
    requested_at: str
    dispatched_at: str | None
    received_at: str | None


class DispatchOut(BaseModel):
    replenishment_id: str
    status: Literal["dispatched"]
    quantity: int
    position: str


class SuggestionOut(BaseModel):
    sku: str
    velocity_per_day: float
    reorder_point: int
    order_up_to: int
    safety_stock: int
    lead_time_hours: int


# --- validating rules ---------------------------------------------------------------------


def _rule_errors(exc: ValidationError) -> list[FieldError]:
    errors = []
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ())]
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        # The rule's cross-field checks name their field first ("order_up_to must be ...").
        name = ".".join(loc) or message.split(" ", 1)[0]
        errors.append(FieldError(field=name, message=message))
    return errors


def check_rule(raw: dict[str, Any], known: Container[str]) -> ReorderRuleSet | list[FieldError]:
    """The rule ``raw`` describes, or every field at fault (``known``: registered locations)."""
    try:
        rule = ReorderRuleSet.model_validate(raw)
    except ValidationError as exc:
        return _rule_errors(exc)
    errors = [
        FieldError(field=name, message=f"unknown location {value!r}")
        for name, value in (
            ("location_id", rule.location_id),
            ("source_location_id", rule.source_location_id),
        )
        if value not in known
    ]
    return errors or rule


def _invalid(detail: str, errors: list[FieldError]) -> Problem:
    return Problem(422, "invalid-rule", "Invalid reorder rule", detail, errors=errors)


# --- rules ----------------------------------------------------------------------------------


@router.put(
    "/rules/{location_id}/{sku}",
    dependencies=[require("rules:write")],
    response_model=RuleOut,
    responses={422: {"model": ProblemDetails, "description": "Invalid rule, naming the field"}},
    summary="Set the reorder rule of one SKU at one location",
)
async def put_rule(
    deps: Deps,
    body: RuleIn,
    location_id: Annotated[Identifier, Path()],
    sku: Annotated[Identifier, Path()],
) -> RuleOut:
    raw = {**body.model_dump(), "location_id": location_id, "sku": sku}
    for name in ("location_id", "source_location_id"):
        await deps.locations.known(raw[name])  # waits for a location registered just now
    checked = check_rule(raw, deps.locations.locations)
    if isinstance(checked, list):
        raise _invalid("The rule was not recorded.", checked)
    written = await deps.producer.publish(checked)
    assert written.position is not None
    return RuleOut(**checked.model_dump(), position=written.position.token())


@router.put(
    "/rules",
    dependencies=[require("rules:write")],
    response_model=BulkResult,
    responses={
        **PROBLEMS,
        422: {"model": ProblemDetails, "description": "No row was valid (each one named)"},
    },
    summary="Set many reorder rules at once (JSON or CSV with a header row)",
    description="Each valid row is recorded; each invalid one is reported with the fields at "
    'fault. JSON: an array of rules, or {"rules": [...]}. CSV columns: location_id, sku, '
    "reorder_point, order_up_to, lead_time_hours, source_location_id, and optionally "
    "safety_stock, pack_size.",
)
async def put_rules(deps: Deps, request: Request) -> BulkResult:
    rows = _parse_upload(request.headers.get("content-type", ""), await request.body())
    if len(rows) > deps.settings.max_bulk_rules:
        raise Problem(
            413,
            "too-many-rules",
            "Too many rules",
            f"{len(rows)} rules; at most {deps.settings.max_bulk_rules} per upload.",
        )
    named = {str(r.get(k)) for r in rows for k in ("location_id", "source_location_id")}
    if not named <= deps.locations.locations.keys():
        await deps.locations.caught_up()  # a location registered a moment ago
    good: list[ReorderRuleSet] = []
    rejected: list[RejectedRow] = []
    for n, raw in enumerate(rows, start=1):
        checked = check_rule(raw, deps.locations.locations)
        if isinstance(checked, list):
            location_id, sku = raw.get("location_id"), raw.get("sku")
            rejected.append(
                RejectedRow(
                    row=n,
                    location_id=str(location_id) if location_id is not None else None,
                    sku=str(sku) if sku is not None else None,
                    errors=checked,
                )
            )
        else:
            good.append(checked)
    if not good and rejected:
        raise _invalid(
            f"None of the {len(rows)} rules was valid; nothing was recorded.",
            [
                FieldError(field=f"[{r.row}].{e.field}", message=e.message)
                for r in rejected
                for e in r.errors
            ],
        )
    # All or some of them may be in the log if this fails (503): repeating the upload is safe.
    await asyncio.gather(*(deps.producer.publish(rule) for rule in good))
    return BulkResult(applied=len(good), rejected=rejected)


def _parse_upload(content_type: str, body: bytes) -> list[dict[str, Any]]:
    media = content_type.split(";", 1)[0].strip().lower()
    if media in ("text/csv", "application/csv"):
        try:
            reader = csv.DictReader(io.StringIO(body.decode("utf-8-sig")))
            # Empty optional cells take their defaults.
            return [{k: v for k, v in row.items() if k and v not in ("", None)} for row in reader]
        except (UnicodeDecodeError, csv.Error) as exc:
            raise Problem(
                400,
                "malformed-csv",
                "Malformed CSV",
                str(exc),
                errors=[FieldError(field="body", message=str(exc))],
            ) from exc
    if media in ("application/json", ""):
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise Problem(
                400,
                "malformed-json",
                "Malformed JSON",
                "The request body is not valid JSON.",
                errors=[FieldError(field="body", message=str(exc))],
            ) from exc
        if isinstance(data, dict) and set(data) == {"rules"}:
            data = data["rules"]
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise Problem(
                422,
                "validation-error",
                "Invalid request",
                'The body must be a JSON array of rules (or {"rules": [...]}).',
                errors=[FieldError(field="body", message="expected an array of objects")],
            )
        return data
    raise Problem(
        415,
        "unsupported-media-type",
        "Unsupported media type",
        "Send application/json (an array of rules) or text/csv (with a header row).",
    )


@router.get(
    "/rules",
    dependencies=[READ],
    response_model=list[RuleOut],
    summary="Reorder rules, by location and SKU",
)
async def get_rules(
    deps: Deps,
    location_id: Annotated[Identifier | None, Query()] = None,
    sku: Annotated[Identifier | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1_000,
) -> list[RuleOut]:
    rules, levels = rm.rules, rm.levels
    query = (
        select(rules, levels.c.available, levels.c.inbound, levels.c.velocity_per_day)
        .outerjoin(
            levels, and_(levels.c.location_id == rules.c.location_id, levels.c.sku == rules.c.sku)
        )
        .order_by(rules.c.location_id, rules.c.sku)
        .limit(limit)
    )
    if location_id is not None:
        query = query.where(rules.c.location_id == location_id)
    if sku is not None:
        query = query.where(rules.c.sku == sku)
    async with deps.engine.connect() as connection:
        records = (await connection.execute(query)).all()
    return [
        RuleOut(
            **rm.from_columns(rules, r),
            available=r.available,
            inbound=r.inbound,
            velocity_per_day=r.velocity_per_day,
        )
        for r in records
    ]


# --- requests -------------------------------------------------------------------------------


@router.get(
    "/replenishments",
    dependencies=[READ],
    response_model=list[ReplenishmentOut],
    summary="Replenishment requests, newest first",
)
async def list_replenishments(
    deps: Deps,
    status: Literal["requested", "dispatched", "received"] | None = None,
    location_id: Annotated[Identifier | None, Query()] = None,
    sku: Annotated[Identifier | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1_000,
) -> list[ReplenishmentOut]:
    table = rm.replenishments
    query = (
        select(table).order_by(table.c.requested_at.desc(), table.c.replenishment_id).limit(limit)
    )
    if status is not None:
        query = query.where(table.c.status == status)
    if location_id is not None:
        query = query.where(table.c.location_id == location_id)
    if sku is not None:
        query = query.where(table.c.sku == sku)
    async with deps.engine.connect() as connection:
        records = (await connection.execute(query)).all()
    return [ReplenishmentOut(**rm.from_columns(table, r)) for r in records]


async def _one(deps: Replenishment, replenishment_id: str) -> ReplenishmentOut:
    table = rm.replenishments
    async with deps.engine.connect() as connection:
        record = (
            await connection.execute(
                select(table).where(table.c.replenishment_id == replenishment_id)
            )
        ).one_or_none()
    if record is None:
        raise Problem(
            404,
            "unknown-replenishment",
            "No such replenishment request",
            f"No replenishment request {replenishment_id!r}.",
        )
    return ReplenishmentOut(**rm.from_columns(table, record))


@router.get(
    "/replenishments/{replenishment_id}",
    dependencies=[READ],
    response_model=ReplenishmentOut,
    responses={404: PROBLEMS[404]},
    summary="One replenishment request",
)
async def get_replenishment(
    deps: Deps, replenishment_id: Annotated[Identifier, Path()]
) -> ReplenishmentOut:
    return await _one(deps, replenishment_id)


@router.post(
    "/replenishments/{replenishment_id}/dispatch",
    dependencies=[require("receipts:write")],
    status_code=202,
    response_model=DispatchOut,
    responses={404: PROBLEMS[404], 409: PROBLEMS[409]},
    summary="The source warehouse shipped the request",
    description="Recorded in the log; inventory then moves the units out of the warehouse's "
    "on_hand and into the store's incoming. The receipt naming the replenishment id "
    "(POST /v1/receipts on inventory, with replenishment_id) closes the request. "
    "Repeating a dispatch is safe: until the goods are received it answers the same.",
)
async def dispatch(deps: Deps, replenishment_id: Annotated[Identifier, Path()]) -> DispatchOut:
    current = await _one(deps, replenishment_id)
    # A repeat while it is on its way is the warehouse retrying a lost answer: written again
    # under the same id, which every reader drops, and answered the same.
    if current.status == "received":
        raise Problem(
            409,
            "not-dispatchable",
            "Cannot dispatch this request",
            "The request is received; only a requested one can be dispatched.",
            current_status=current.status,
        )
    written = await deps.producer.publish(
        ReplenishmentDispatched(
            location_id=current.location_id,
            replenishment_id=replenishment_id,
            sku=current.sku,
            source_location_id=current.source_location_id,
            quantity=current.quantity,
        ),
        # The same id for every repeat: readers' folds see one dispatch.
        id=derived_id(replenishment_id, "dispatch"),
    )
    assert written.position is not None
    return DispatchOut(
        replenishment_id=replenishment_id,
        status="dispatched",
        quantity=current.quantity,
        position=written.position.token(),
    )


# --- suggestions ----------------------------------------------------------------------------


@router.get(
    "/suggestions",
    dependencies=[READ],
    response_model=list[SuggestionOut],
    summary="Reorder rules proposed from demand, for SKUs without a rule at the location",
)
async def suggestions(
    deps: Deps,
    location_id: Annotated[Identifier, Query()],
    lead_time_hours: Annotated[int | None, Query(ge=0, le=24 * 365)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[SuggestionOut]:
    settings = deps.settings
    window = settings.velocity_window_days
    since = (utcnow() - timedelta(days=window - 1)).date()
    async with deps.engine.connect() as connection:
        demand = await rm.demand_since(connection, location_id, since)
    proposed = [
        suggest(
            sku,
            units,
            window_days=window,
            lead_time_hours=(
                settings.suggestion_lead_time_hours if lead_time_hours is None else lead_time_hours
            ),
            safety_days=settings.suggestion_safety_days,
            review_days=settings.suggestion_review_days,
        )
        for sku, units in demand
        if units > 0
    ]
    proposed.sort(key=lambda s: (-s.velocity_per_day, s.sku))
    return [SuggestionOut(**s.as_dict()) for s in proposed[:limit]]
