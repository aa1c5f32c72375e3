"""Every event type omnistock writes, grouped by the topic it lives in.

Field names are the retail domain's: on_hand, held, committed, reservation,
hold, receipt, reorder_point. A change to a published shape bumps
``schema_version`` and registers an upcaster in :mod:`omnistock.events.upcasting`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from omnistock.events import topics
from omnistock.events.envelope import Event
from omnistock.events.topics import Topic

# Identifiers cross HTTP, Kafka keys, SQL and URLs: keep them printable and bounded.
Identifier = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$"),
]
Sku = Identifier
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
    """A counted or corrected on_hand change; ``delta`` is decided from the count by the owner."""

    event_type: ClassVar[str] = "io.omnistock.inventory.StockAdjusted"
    adjustment_id: Identifier
    delta: int
    counted_quantity: Annotated[int, Field(ge=0)] | None = None
    reason: AdjustmentReason


class HoldPlaced(_StockEvent):
    """Part of a reservation holds stock at one location until it is committed or released."""

    event_type: ClassVar[str] = "io.omnistock.inventory.HoldPlaced"
    reservation_id: Identifier
    quantity: Quantity
    expires_at: AwareDatetime


class HoldRejected(Event):
    """A reservation's lines for one SKU could not be held anywhere eligible."""

    event_type: ClassVar[str] = "io.omnistock.inventory.HoldRejected"
    topic: ClassVar[Topic | None] = topics.INVENTORY_STOCK
    key_field: ClassVar[str | None] = "sku"

    reservation_id: Identifier
    sku: Sku
    requested: Quantity
    available: Annotated[int, Field(ge=0)]


class HoldReleased(_StockEvent):
    """Held stock returns to available."""

    event_type: ClassVar[str] = "io.omnistock.inventory.HoldReleased"
    reservation_id: Identifier
    quantity: Quantity
    reason: Literal["released", "expired", "aborted"]


class HoldCommitted(_StockEvent):
    """Held stock is sold to an order: it moves from held to committed."""

    event_type: ClassVar[str] = "io.omnistock.inventory.HoldCommitted"
    reservation_id: Identifier
    order_id: Identifier
    quantity: Quantity


class CommitmentCancelled(_StockEvent):
    """An order was cancelled before shipping: committed stock returns to available."""

    event_type: ClassVar[str] = "io.omnistock.inventory.CommitmentCancelled"
    order_id: Identifier
    quantity: Quantity


class StockShipped(_StockEvent):
    """Committed stock left the building: on_hand and committed both fall."""

    event_type: ClassVar[str] = "io.omnistock.inventory.StockShipped"
    order_id: Identifier
    shipment_id: Identifier
    quantity: Quantity


class PosLineApplied(_StockEvent):
    """One line of a store POS transaction changed on_hand (a physical fact, never refused)."""

    event_type: ClassVar[str] = "io.omnistock.inventory.PosLineApplied"
    transaction_id: Identifier
    line_number: Annotated[int, Field(ge=0)]
    kind: Literal["sale", "return", "void_sale", "void_return"]
    quantity_change: int


class StockDiscrepancyRecorded(_StockEvent):
    """on_hand went below what is held and committed: the books and the shelf disagree."""

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
    """A checkout asked for stock: the start of the reservation saga."""

    event_type: ClassVar[str] = "io.omnistock.inventory.ReservationRequested"
    lines: Annotated[list[RequestedLine], Field(min_length=1, max_length=100)]
    ttl_seconds: Annotated[int, Field(ge=30, le=86_400)]
    channel: Channel
    #: Hash of the request body, so a replay with a different body is told apart.
    request_fingerprint: str


class ReservationHeld(_ReservationEvent):
    """Every line is held: the reservation stands until ``expires_at``."""

    event_type: ClassVar[str] = "io.omnistock.inventory.ReservationHeld"
    lines: list[LocatedLine]
    expires_at: AwareDatetime


class ReservationRejected(_ReservationEvent):
    event_type: ClassVar[str] = "io.omnistock.inventory.ReservationRejected"
    reason: Literal["insufficient_stock", "unknown_location"]
    lines: list[RejectedLine]


class ReservationExtended(_ReservationEvent):
    event_type: ClassVar[str] = "io.omnistock.inventory.ReservationExtended"
    expires_at: AwareDatetime


class ReservationCommitted(_ReservationEvent):
    event_type: ClassVar[str] = "io.omnistock.inventory.ReservationCommitted"
    order_id: Identifier


class ReservationReleased(_ReservationEvent):
    event_type: ClassVar[str] = "io.omnistock.inventory.ReservationReleased"
    reason: Literal["released", "expired", "aborted"]


# --- orders.events (key: order_id) --------------------------------------------------------


class _OrderEvent(Event):
    topic: ClassVar[Topic | None] = topics.ORDERS
    key_field: ClassVar[str | None] = "order_id"

    order_id: Identifier


class OrderPlaced(_OrderEvent):
    event_type: ClassVar[str] = "io.omnistock.orders.OrderPlaced"
    reservation_id: Identifier
    customer_id: Identifier
    lines: Annotated[list[Line], Field(min_length=1, max_length=100)]
    payment_reference: Annotated[str, StringConstraints(min_length=1, max_length=128)]


class OrderConfirmed(_OrderEvent):
    event_type: ClassVar[str] = "io.omnistock.orders.OrderConfirmed"


class OrderRejected(_OrderEvent):
    event_type: ClassVar[str] = "io.omnistock.orders.OrderRejected"
    reason: Literal["reservation_expired", "reservation_released", "lines_mismatch", "unknown"]


class OrderCancelled(_OrderEvent):
    event_type: ClassVar[str] = "io.omnistock.orders.OrderCancelled"
    reason: Annotated[str, StringConstraints(max_length=200)] = ""


class OrderFulfilled(_OrderEvent):
    """All or part of an order shipped from one location."""

    event_type: ClassVar[str] = "io.omnistock.orders.OrderFulfilled"
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


# --- replenishment.events (key: location_id) ---------------------------------------------


class _ReplenishmentEvent(Event):
    topic: ClassVar[Topic | None] = topics.REPLENISHMENT
    key_field: ClassVar[str | None] = "location_id"

    location_id: Identifier


class ReorderRuleSet(_ReplenishmentEvent):
    event_type: ClassVar[str] = "io.omnistock.replenishment.ReorderRuleSet"
    sku: Sku
    reorder_point: Annotated[int, Field(ge=0)]
    order_up_to: Annotated[int, Field(gt=0)]
    lead_time_hours: Annotated[int, Field(ge=0, le=24 * 365)]
    source_location_id: Identifier
    safety_stock: Annotated[int, Field(ge=0)] = 0
    pack_size: Annotated[int, Field(ge=1)] = 1


class LowStockDetected(_ReplenishmentEvent):
    event_type: ClassVar[str] = "io.omnistock.replenishment.LowStockDetected"
    sku: Sku
    available: int
    inbound: Annotated[int, Field(ge=0)]
    reorder_point: Annotated[int, Field(ge=0)]


class ReplenishmentRequested(_ReplenishmentEvent):
    event_type: ClassVar[str] = "io.omnistock.replenishment.ReplenishmentRequested"
    replenishment_id: Identifier
    sku: Sku
    source_location_id: Identifier
    quantity: Quantity
    velocity_per_day: Annotated[float, Field(ge=0)]
    days_of_cover: Annotated[float, Field(ge=0)] | None


class ReplenishmentDispatched(_ReplenishmentEvent):
    event_type: ClassVar[str] = "io.omnistock.replenishment.ReplenishmentDispatched"
    replenishment_id: Identifier
    sku: Sku
    source_location_id: Identifier
    quantity: Quantity


class ReplenishmentReceived(_ReplenishmentEvent):
    event_type: ClassVar[str] = "io.omnistock.replenishment.ReplenishmentReceived"
    replenishment_id: Identifier
    receipt_id: Identifier
    quantity: Quantity
    closed: bool


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
    HoldPlaced,
    HoldRejected,
    HoldReleased,
    HoldCommitted,
    CommitmentCancelled,
    StockShipped,
    PosLineApplied,
    StockDiscrepancyRecorded,
    TransferDispatched,
    ReservationRequested,
    ReservationHeld,
    ReservationRejected,
    ReservationExtended,
    ReservationCommitted,
    ReservationReleased,
    OrderPlaced,
    OrderConfirmed,
    OrderRejected,
    OrderCancelled,
    OrderFulfilled,
    PosTransactionRecorded,
    ReorderRuleSet,
    LowStockDetected,
    ReplenishmentRequested,
    ReplenishmentDispatched,
    ReplenishmentReceived,
    OwnershipClaimed,
)

CATALOGUE: dict[str, type[Event]] = {cls.event_type: cls for cls in EVENT_TYPES}
