"""Every event type omnistock writes, grouped by the topic it lives in.

Field names are the retail domain's: on_hand, held, committed, reservation,
hold, receipt, reorder_point. A change to a published shape bumps
``schema_version`` and registers an upcaster in :mod:`omnistock.events.upcasting`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from omnistock.events import topics
from omnistock.events.envelope import Event
from omnistock.events.topics import Topic

# Identifiers cross HTTP, Kafka keys, SQL and URLs: keep them printable and bounded.
Identifier = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$"),
]
Sku = Identifier
#: Free text (names, reasons, references): no control characters, NUL above all, which
#: PostgreSQL refuses; a read model stuck on an event it cannot store stops every reader.
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]*$"
# No single movement in any retailer we serve moves a million units; larger is a typo.
MAX_QUANTITY = 1_000_000
Quantity = Annotated[int, Field(gt=0, le=MAX_QUANTITY)]
Latitude = Annotated[float, Field(ge=-90, le=90)]
Longitude = Annotated[float, Field(ge=-180, le=180)]
Channel = Literal["web", "app", "marketplace", "store", "call_center"]


class Line(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    sku: Sku
    quantity: Quantity


class LocatedLine(Line):
    location_id: Identifier


# --- inventory.locations --------------------------------------------------------------


class LocationRegistered(Event):
    """A store or warehouse was registered or its details changed (last one wins)."""

    event_type: ClassVar[str] = "io.omnistock.inventory.LocationRegistered"
    # v2 renamed ``type`` to ``kind`` and added ``fulfils_online``.
    schema_version: ClassVar[int] = 2
    topic: ClassVar[Topic | None] = topics.INVENTORY_LOCATIONS
    key_field: ClassVar[str | None] = "location_id"

    location_id: Identifier
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    kind: Literal["store", "warehouse"]
    region: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    latitude: Latitude
    longitude: Longitude
    fulfils_online: bool


# --- inventory.stock (key: sku) ------------------------------------------------------------


class _StockEvent(Event):
    topic: ClassVar[Topic | None] = topics.INVENTORY_STOCK
    key_field: ClassVar[str | None] = "sku"

    sku: Sku
    location_id: Identifier


class StockReceived(_StockEvent):
    """Goods arrived at a location (WMS receipt, store delivery, replenishment receipt)."""

    event_type: ClassVar[str] = "io.omnistock.inventory.StockReceived"
    receipt_id: Identifier
    quantity: Quantity
    replenishment_id: Identifier | None = None


AdjustmentReason = Literal["cycle_count", "damage", "loss", "found", "correction"]


class StockAdjusted(_StockEvent):
    """A correction of on_hand: a signed ``delta``, or a ``counted_quantity`` from which the
    fold derives the delta at its place in the log. ``unsellable_delta`` moves units into or
    out of the unsellable bucket (damaged, in quality control) without leaving on_hand."""

    event_type: ClassVar[str] = "io.omnistock.inventory.StockAdjusted"
    adjustment_id: Identifier
    delta: Annotated[int, Field(ge=-MAX_QUANTITY, le=MAX_QUANTITY)] | None = None
    counted_quantity: Annotated[int, Field(ge=0, le=MAX_QUANTITY)] | None = None
    unsellable_delta: Annotated[int, Field(ge=-MAX_QUANTITY, le=MAX_QUANTITY)] = 0
    reason: AdjustmentReason

    @model_validator(mode="after")
    def _delta_or_count(self) -> StockAdjusted:
        if (self.delta is None) == (self.counted_quantity is None):
            raise ValueError("give exactly one of delta and counted_quantity")
        return self


class SafetyStockSet(_StockEvent):
    """Units kept back from ``available`` at a location (from the reorder rule)."""

    event_type: ClassVar[str] = "io.omnistock.inventory.SafetyStockSet"
    safety_stock: Annotated[int, Field(ge=0, le=MAX_QUANTITY)]


class HoldLine(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    quantity: Quantity
    #: Where to hold it; None lets the fold choose among ``online_locations``.
    location_id: Identifier | None = None


class _HoldEvent(Event):
    topic: ClassVar[Topic | None] = topics.INVENTORY_STOCK
    key_field: ClassVar[str | None] = "sku"

    reservation_id: Identifier
    sku: Sku


class HoldRequested(_HoldEvent):
    """A checkout asks to hold one SKU's lines of a reservation. Not a decision: the stock
    fold decides it, at its place in the log, the same way for every reader."""

    event_type: ClassVar[str] = "io.omnistock.inventory.HoldRequested"
    lines: Annotated[list[HoldLine], Field(min_length=1, max_length=100)]
    #: Locations that ship online, in the order the fold tries them (see docs/inventory.md).
    online_locations: Annotated[list[Identifier], Field(max_length=1000)]
    expires_at: AwareDatetime
    requested_at: AwareDatetime
    request_fingerprint: Annotated[str, StringConstraints(min_length=1, max_length=128)]


class HoldReleaseRequested(_HoldEvent):
    event_type: ClassVar[str] = "io.omnistock.inventory.HoldReleaseRequested"
    reason: Literal["released", "aborted"]


class HoldExtensionRequested(_HoldEvent):
    event_type: ClassVar[str] = "io.omnistock.inventory.HoldExtensionRequested"
    expires_at: AwareDatetime
    requested_at: AwareDatetime


class HoldCommitRequested(_HoldEvent):
    """Sell the held units to an order; refused by the fold when the hold is no longer held,
    was requested after it expired, or the quantity differs from what is held."""

    event_type: ClassVar[str] = "io.omnistock.inventory.HoldCommitRequested"
    order_id: Identifier
    quantity: Quantity
    requested_at: AwareDatetime


class HoldExpired(_HoldEvent):
    """Written by the partition owner (stamped with its epoch) once a hold's time is up."""

    event_type: ClassVar[str] = "io.omnistock.inventory.HoldExpired"


class CommitmentCancelled(_HoldEvent):
    """An order was cancelled before shipping: what is still committed returns to available."""

    event_type: ClassVar[str] = "io.omnistock.inventory.CommitmentCancelled"
    order_id: Identifier


class StockShipped(_HoldEvent):
    """Committed stock left ``location_id``: on_hand and committed both fall."""

    event_type: ClassVar[str] = "io.omnistock.inventory.StockShipped"
    order_id: Identifier
    shipment_id: Identifier
    location_id: Identifier
    quantity: Quantity


class PosLineApplied(_StockEvent):
    """One line of a store POS transaction changed on_hand (a physical fact, never refused)."""

    event_type: ClassVar[str] = "io.omnistock.inventory.PosLineApplied"
    transaction_id: Identifier
    line_number: Annotated[int, Field(ge=0)]
    kind: Literal["sale", "return", "void_sale", "void_return"]
    quantity_change: Annotated[int, Field(ge=-MAX_QUANTITY, le=MAX_QUANTITY)]


class StockDiscrepancyRecorded(_StockEvent):
    """on_hand fell below what is held and committed: the books and the shelf disagree.
    Written by the partition owner for those who act on it; the fold already knows."""

    event_type: ClassVar[str] = "io.omnistock.inventory.StockDiscrepancyRecorded"
    cause_event_id: str
    on_hand: int
    held: int
    committed: int


class TransferDispatched(_StockEvent):
    """Stock left ``location_id`` (a warehouse) for ``to_location_id``: on its way, not lost."""

    event_type: ClassVar[str] = "io.omnistock.inventory.TransferDispatched"
    replenishment_id: Identifier
    to_location_id: Identifier
    quantity: Quantity


# --- inventory.reservations (key: reservation_id) ----------------------------------------


class RequestedLine(Line):
    location_id: Identifier | None = None


class RejectedLine(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    sku: Sku
    requested: Quantity
    available: Annotated[int, Field(ge=0)]


class _ReservationEvent(Event):
    topic: ClassVar[Topic | None] = topics.INVENTORY_RESERVATIONS
    key_field: ClassVar[str | None] = "reservation_id"

    reservation_id: Identifier


class ReservationRequested(_ReservationEvent):
    """A checkout asked for stock: the saga's record of what the whole reservation is."""

    event_type: ClassVar[str] = "io.omnistock.inventory.ReservationRequested"
    lines: Annotated[list[RequestedLine], Field(min_length=1, max_length=100)]
    ttl_seconds: Annotated[int, Field(ge=1, le=86_400)]
    channel: Channel
    expires_at: AwareDatetime
    #: Hash of the request body, so a retry with a different body is told apart.
    request_fingerprint: Annotated[str, StringConstraints(min_length=1, max_length=128)]


HoldRequestKind = Literal["hold", "release", "extend", "commit", "expire", "cancel", "ship"]
HoldOutcomeKind = Literal[
    "held",
    "rejected",
    "conflict",
    "released",
    "extended",
    "committed",
    "expired",
    "cancelled",
    "shipped",
    "not_held",
    "mismatch",
    "unknown",
]


class HoldOutcome(_ReservationEvent):
    """What the stock fold decided for one SKU of a reservation, relayed by the partition
    owner to where the API and the saga wait for it."""

    event_type: ClassVar[str] = "io.omnistock.inventory.HoldOutcome"
    sku: Sku
    request: HoldRequestKind
    outcome: HoldOutcomeKind
    #: Where the units are held (the fold's choice), when held.
    allocations: list[LocatedLine] = []
    requested: Annotated[int, Field(ge=0)] = 0
    available: Annotated[int, Field(ge=0)] = 0
    expires_at: AwareDatetime | None = None
    order_id: Identifier | None = None
    #: Position of the deciding stock event (read-your-writes token).
    stock_position: str
    #: Id of the stock event decided, so a duplicate relay is recognised.
    decided_event_id: str
    #: For a hold: the ``request_fingerprint`` of the request answered, so that the saga
    #: and the waiting API tell the first request under an id from a conflicting one.
    request_fingerprint: str | None = None


class ReservationHeld(_ReservationEvent):
    """Every line is held: the reservation stands until ``expires_at``."""

    event_type: ClassVar[str] = "io.omnistock.inventory.ReservationHeld"
    lines: list[LocatedLine]
    expires_at: AwareDatetime
    #: The request the saga decided: the first under this id in the log.
    request_fingerprint: str | None = None


class ReservationRejected(_ReservationEvent):
    event_type: ClassVar[str] = "io.omnistock.inventory.ReservationRejected"
    reason: Literal["insufficient_stock", "conflict"]
    lines: list[RejectedLine]
    #: The request the saga decided: the first under this id in the log.
    request_fingerprint: str | None = None


class ReservationExtensionRequested(_ReservationEvent):
    event_type: ClassVar[str] = "io.omnistock.inventory.ReservationExtensionRequested"
    expires_at: AwareDatetime
    requested_at: AwareDatetime


class ReservationExtended(_ReservationEvent):
    event_type: ClassVar[str] = "io.omnistock.inventory.ReservationExtended"
    expires_at: AwareDatetime


class ReservationCommitRequested(_ReservationEvent):
    """Payment went through: sell the reservation to ``order_id``. ``lines`` (from an order)
    must match what is held; None commits whatever the reservation holds."""

    event_type: ClassVar[str] = "io.omnistock.inventory.ReservationCommitRequested"
    order_id: Identifier
    lines: list[Line] | None = None
    requested_at: AwareDatetime


class ReservationCommitted(_ReservationEvent):
    event_type: ClassVar[str] = "io.omnistock.inventory.ReservationCommitted"
    order_id: Identifier


class ReservationCommitRejected(_ReservationEvent):
    event_type: ClassVar[str] = "io.omnistock.inventory.ReservationCommitRejected"
    order_id: Identifier
    reason: Literal["expired", "released", "mismatch", "unknown_reservation", "not_held"]


class ReservationChangeRefused(_ReservationEvent):
    """A release or extension asked of a reservation that can no longer change that way."""

    event_type: ClassVar[str] = "io.omnistock.inventory.ReservationChangeRefused"
    request: Literal["release", "extend"]
    status: Annotated[str, StringConstraints(max_length=32)]


class ReservationReleaseRequested(_ReservationEvent):
    event_type: ClassVar[str] = "io.omnistock.inventory.ReservationReleaseRequested"


class ReservationReleased(_ReservationEvent):
    event_type: ClassVar[str] = "io.omnistock.inventory.ReservationReleased"
    reason: Literal["released", "expired", "aborted"]
    #: The request the saga decided: the first under this id in the log.
    request_fingerprint: str | None = None


# --- orders.events (key: order_id) --------------------------------------------------------


class _OrderEvent(Event):
    topic: ClassVar[Topic | None] = topics.ORDERS
    key_field: ClassVar[str | None] = "order_id"

    order_id: Identifier


class OrderPlaced(_OrderEvent):
    """Payment taken: the order asks inventory to commit ``reservation_id`` for ``lines``."""

    event_type: ClassVar[str] = "io.omnistock.orders.OrderPlaced"
    reservation_id: Identifier
    customer_id: Identifier
    lines: Annotated[list[Line], Field(min_length=1, max_length=100)]
    payment_reference: Annotated[str, StringConstraints(min_length=1, max_length=128)]


class OrderConfirmed(_OrderEvent):
    """Inventory committed the order's reservation: the stock is sold to this order."""

    event_type: ClassVar[str] = "io.omnistock.orders.OrderConfirmed"


class OrderRejected(_OrderEvent):
    """Inventory refused to commit the order's reservation (why, in the order's words)."""

    event_type: ClassVar[str] = "io.omnistock.orders.OrderRejected"
    reason: Literal[
        "reservation_expired",
        "reservation_released",
        "reservation_not_held",
        "reservation_unknown",
        "lines_mismatch",
    ]


class OrderCancelled(_OrderEvent):
    """The order is off before (all of) it shipped: its committed stock returns to available."""

    event_type: ClassVar[str] = "io.omnistock.orders.OrderCancelled"
    reservation_id: Identifier
    #: The order's lines, so inventory can find every SKU's commitment without state.
    lines: Annotated[list[Line], Field(min_length=1, max_length=100)]
    reason: Annotated[str, StringConstraints(max_length=200)] = ""


class OrderFulfilled(_OrderEvent):
    """All or part of an order shipped from one location."""

    event_type: ClassVar[str] = "io.omnistock.orders.OrderFulfilled"
    reservation_id: Identifier
    shipment_id: Identifier
    location_id: Identifier
    lines: Annotated[list[Line], Field(min_length=1, max_length=100)]


# --- pos.transactions (key: store_id) -----------------------------------------------------


class PosLine(Line):
    unit_price: Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=4)]
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


class PosTransactionRecorded(Event):
    """A store POS transaction, validated and normalised by the gateway."""

    event_type: ClassVar[str] = "io.omnistock.pos.PosTransactionRecorded"
    topic: ClassVar[Topic | None] = topics.POS_TRANSACTIONS
    key_field: ClassVar[str | None] = "store_id"

    transaction_id: Identifier
    store_id: Identifier
    terminal_id: Identifier
    sequence: Annotated[int, Field(ge=0)]
    occurred_at: AwareDatetime
    type: Literal["sale", "return", "void"]
    lines: list[PosLine]
    voids_transaction_id: Identifier | None = None
    #: For a void: what the voided transaction was, so its effect can be reversed.
    voided_type: Literal["sale", "return"] | None = None


# --- replenishment.events (key: location_id) ---------------------------------------------


class _ReplenishmentEvent(Event):
    topic: ClassVar[Topic | None] = topics.REPLENISHMENT
    key_field: ClassVar[str | None] = "location_id"

    location_id: Identifier


class ReorderRuleSet(_ReplenishmentEvent):
    """A merchandiser's reorder rule for one SKU at one location (the latest one counts)."""

    event_type: ClassVar[str] = "io.omnistock.replenishment.ReorderRuleSet"
    sku: Sku
    reorder_point: Annotated[int, Field(ge=0, le=MAX_QUANTITY)]
    order_up_to: Annotated[int, Field(gt=0, le=MAX_QUANTITY)]
    lead_time_hours: Annotated[int, Field(ge=0, le=24 * 365)]
    source_location_id: Identifier
    safety_stock: Annotated[int, Field(ge=0, le=MAX_QUANTITY)] = 0
    pack_size: Annotated[int, Field(ge=1, le=MAX_QUANTITY)] = 1

    @model_validator(mode="after")
    def _consistent(self) -> ReorderRuleSet:
        if self.order_up_to < self.reorder_point:
            raise ValueError("order_up_to must be at least reorder_point")
        if self.source_location_id == self.location_id:
            raise ValueError("source_location_id must be another location")
        return self


class StockObserved(_ReplenishmentEvent):
    """The figures of one SKU at one location after ``stock_offset`` of its
    ``inventory.stock`` partition, as the stock fold computes them. Written by the
    replenishment service's stock watcher for SKUs with a reorder rule; the planner's
    fold ignores an observation older than one it already has (redeliveries, restarts)."""

    event_type: ClassVar[str] = "io.omnistock.replenishment.StockObserved"
    sku: Sku
    #: on_hand - held - committed - unsellable - safety_stock, as inventory advertises it.
    available: Annotated[int, Field(ge=0)]
    #: Units dispatched to this location and not yet received.
    inbound: Annotated[int, Field(ge=0)]
    #: Units sold per day lately (POS sales and shipments, see docs/replenishment.md).
    velocity_per_day: Annotated[float, Field(ge=0)]
    stock_partition: Annotated[int, Field(ge=0)]
    #: Offset of the last stock event that changed these figures; -1 when none ever did.
    stock_offset: Annotated[int, Field(ge=-1)]


class LowStockDetected(_ReplenishmentEvent):
    """available + inbound fell to or below the reorder point with no request open."""

    event_type: ClassVar[str] = "io.omnistock.replenishment.LowStockDetected"
    sku: Sku
    available: Annotated[int, Field(ge=0)]
    inbound: Annotated[int, Field(ge=0)]
    reorder_point: Annotated[int, Field(ge=0)]
    replenishment_id: Identifier


class ReplenishmentRequested(_ReplenishmentEvent):
    """The planner's fold opened a request (decided by the observation that caused it)."""

    event_type: ClassVar[str] = "io.omnistock.replenishment.ReplenishmentRequested"
    replenishment_id: Identifier
    sku: Sku
    source_location_id: Identifier
    quantity: Quantity
    available: Annotated[int, Field(ge=0)]
    inbound: Annotated[int, Field(ge=0)]
    velocity_per_day: Annotated[float, Field(ge=0)]
    days_of_cover: Annotated[float, Field(ge=0)] | None


class ReplenishmentDispatched(_ReplenishmentEvent):
    """The source warehouse shipped the request: inventory moves the units out of its
    on_hand and into ``location_id``'s incoming."""

    event_type: ClassVar[str] = "io.omnistock.replenishment.ReplenishmentDispatched"
    replenishment_id: Identifier
    sku: Sku
    source_location_id: Identifier
    quantity: Quantity


class ReplenishmentReceived(_ReplenishmentEvent):
    """An inventory receipt naming the replenishment arrived at ``location_id`` (copied
    from ``inventory.stock`` by the stock watcher). Whether it closes the request is the
    planner's fold's to say (receipts may come in parts)."""

    event_type: ClassVar[str] = "io.omnistock.replenishment.ReplenishmentReceived"
    replenishment_id: Identifier
    sku: Sku
    receipt_id: Identifier
    quantity: Quantity


# --- markers --------------------------------------------------------------------------


class OwnershipClaimed(Event):
    """A writer took over one partition: decisions carrying older epochs are void from here on.

    Written to the partition it claims (any topic), never keyed.
    """

    event_type: ClassVar[str] = "io.omnistock.OwnershipClaimed"
    topic: ClassVar[Topic | None] = None
    key_field: ClassVar[str | None] = None

    partition: Annotated[int, Field(ge=0)]
    epoch: Annotated[int, Field(ge=1)]
    owner: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    claimed_at: AwareDatetime


#: Every current event model, by CloudEvents type.
EVENT_TYPES: tuple[type[Event], ...] = (
    LocationRegistered,
    StockReceived,
    StockAdjusted,
    SafetyStockSet,
    HoldRequested,
    HoldReleaseRequested,
    HoldExtensionRequested,
    HoldCommitRequested,
    HoldExpired,
    CommitmentCancelled,
    StockShipped,
    PosLineApplied,
    StockDiscrepancyRecorded,
    TransferDispatched,
    ReservationRequested,
    HoldOutcome,
    ReservationHeld,
    ReservationRejected,
    ReservationExtensionRequested,
    ReservationExtended,
    ReservationCommitRequested,
    ReservationCommitted,
    ReservationCommitRejected,
    ReservationChangeRefused,
    ReservationReleaseRequested,
    ReservationReleased,
    OrderPlaced,
    OrderConfirmed,
    OrderRejected,
    OrderCancelled,
    OrderFulfilled,
    PosTransactionRecorded,
    ReorderRuleSet,
    StockObserved,
    LowStockDetected,
    ReplenishmentRequested,
    ReplenishmentDispatched,
    ReplenishmentReceived,
    OwnershipClaimed,
)

CATALOGUE: dict[str, type[Event]] = {cls.event_type: cls for cls in EVENT_TYPES}
