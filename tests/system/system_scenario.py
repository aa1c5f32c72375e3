"""A trading day, compressed: what stores, the web shop and the warehouse do, and what the
platform must show afterwards.

:class:`TradingDay` drives the services through :mod:`system_client` only and keeps a
:class:`Book` of what every *acknowledged* answer implies (stock per SKU and location,
each reservation and order). The invariant checks compare the platform with the book,
so a write acknowledged and then lost, or applied twice, shows as a difference.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from system_client import Answer, Apis, PlatformError

from omnistock.devstack.waiting import eventually
from omnistock.events.envelope import utcnow

Key = tuple[str, str]  # (sku, location_id)

WAREHOUSE = "dc-kassel"
STORES = ("store-berlin", "store-hamburg", "store-munich", "store-cologne")
COORDINATES = {
    "dc-kassel": (51.31, 9.49),
    "store-berlin": (52.52, 13.41),
    "store-hamburg": (53.55, 9.99),
    "store-munich": (48.14, 11.58),
    "store-cologne": (50.94, 6.96),
}
#: Carts whose shopper walks away without releasing: their holds expire within seconds.
ABANDON_TTL_S = 10
CART_TTL_S = 3_600
#: The reorder rule of every SKU at the replenished store (which opens with 12 of each).
REORDER_POINT = 10
ORDER_UP_TO = 20
#: How long the replenishment service may take to open the requests a day's sales imply.
REQUESTS_DEADLINE_S = 90.0


@dataclass(frozen=True)
class DaySize:
    skus: int = 6
    stores: int = 3
    carts: int = 24
    sales_per_store: int = 8
    #: Requests in flight at once, per phase.
    parallel: int = 12


@dataclass
class Cart:
    reservation_id: str
    lines: dict[str, int]
    #: held | rejected | released | expired | ordered
    status: str = "new"
    allocations: dict[Key, int] = field(default_factory=dict)


@dataclass
class Order:
    order_id: str
    cart: Cart
    #: confirmed | cancelled | fulfilled
    status: str = "placed"


@dataclass
class Book:
    """What the platform must show, derived only from answers the harness was given."""

    on_hand: Counter[Key] = field(default_factory=Counter)
    incoming: Counter[Key] = field(default_factory=Counter)
    held: Counter[Key] = field(default_factory=Counter)
    committed: Counter[Key] = field(default_factory=Counter)
    received: Counter[str] = field(default_factory=Counter)
    sold: Counter[str] = field(default_factory=Counter)
    shipped: Counter[str] = field(default_factory=Counter)
    carts: dict[str, Cart] = field(default_factory=dict)
    orders: dict[str, Order] = field(default_factory=dict)
    receipts: list[tuple[str, str, str]] = field(default_factory=list)  # (id, location, sku)
    #: Accepted POS transactions per (store, terminal).
    terminals: Counter[Key] = field(default_factory=Counter)
    #: Accepted sales (id, store, lines) that may be voided later.
    sales: list[tuple[str, str, dict[str, int]]] = field(default_factory=list)
    #: Replenishment requests dispatched and received: id -> (sku, store, quantity).
    replenishments: dict[str, tuple[str, str, int]] = field(default_factory=dict)


class TradingDay:
    """One compressed trading day on a running platform; ids carry ``tag`` so several days
    can share one log (the benchmark runs one per load step)."""

    def __init__(self, apis: Apis, size: DaySize, *, tag: str = "d", seed: int = 7) -> None:
        self.apis = apis
        self.size = size
        self.tag = tag
        self.random = random.Random(seed)
        self.book = Book()
        self.skus = [f"{tag}-SKU-{n:04d}" for n in range(size.skus)]
        self.stores = list(STORES[: size.stores])
        self.locations = [WAREHOUSE, *self.stores]
        #: The store with reorder rules: not one that ships online, so only its own sales,
        #: returns and voids move its availability.
        self.replenished = self.stores[-1]
        self._gate = asyncio.Semaphore(size.parallel)
        self._sequence: Counter[Key] = Counter()

    # --- phases -------------------------------------------------------------------------------

    async def open(self) -> None:
        """Locations registered, the morning's deliveries received everywhere."""
        inventory = self.apis["inventory"]
        for location_id in self.locations:
            lat, lon = COORDINATES[location_id]
            answer = await inventory.write(
                "location",
                location_id,
                "PUT",
                f"/v1/locations/{location_id}",
                {
                    "name": location_id,
                    "kind": "warehouse" if location_id == WAREHOUSE else "store",
                    "region": "DE",
                    "latitude": lat,
                    "longitude": lon,
                    "fulfils_online": location_id == WAREHOUSE or location_id == self.stores[0],
                },
            )
            expect(answer, 200, "register a location")
        await self._all(
            self.receive(f"{self.tag}-rc-{loc}", loc, 60 if loc == WAREHOUSE else 12)
            for loc in self.locations
        )
        await self._all(self.set_rule(sku) for sku in self.skus)
        # The first shoppers fill carts and walk away; their holds run out in the morning.
        # Before any fault, and with a TTL well above a decision's time on a loaded machine:
        # a hold that expires before its reservation is decided is reported held anyway,
        # which the audit calls an I2 violation (test_known_bugs.py shows it on purpose).
        await self._all(self.reserve(self._new_cart(n)) for n in self._abandoned_numbers())

    async def morning(self) -> None:
        """Stores sell over the counter while web shoppers fill carts."""
        abandoned = set(self._abandoned_numbers())
        carts = [self._new_cart(n) for n in range(self.size.carts) if n not in abandoned]
        sales = [(store, n) for store in self.stores for n in range(self.size.sales_per_store)]
        self.random.shuffle(sales)
        await self._all(
            [*(self.reserve(c) for c in carts), *(self.sell(store, n) for store, n in sales)]
        )

    async def midday(self) -> None:
        """Most carts are paid (orders placed), some released, some simply abandoned."""
        # Abandoned carts are not "held" here: their short holds are expiring by themselves.
        held = [c for c in self.book.carts.values() if c.status == "held"]
        work: list[Awaitable[None]] = []
        for n, cart in enumerate(held):
            if n % 5 == 3:
                work.append(self.release(cart))
            elif n % 5 != 4:  # n % 5 == 4: still paying at closing time, stays held
                work.append(self.place(cart))
        await self._all(work)

    async def afternoon(self) -> None:
        """Orders ship or are cancelled; customers return goods in store; a till voids."""
        orders = [o for o in self.book.orders.values() if o.status == "confirmed"]
        work: list[Awaitable[None]] = [
            self.cancel(o) if n % 4 == 3 else self.fulfil(o) for n, o in enumerate(orders)
        ]
        sales = list(self.book.sales)
        for n, (sale_id, store, lines) in enumerate(sales):
            if n % 5 == 0:
                work.append(self.void(store, sale_id, lines))
            elif n % 5 == 1:
                work.append(self.give_back(store, n, lines))
        await self._all(work)

    async def evening(self) -> None:
        """The warehouse ships what the replenished store asked for; the store receives it.
        Every SKU the day's sales left at or below its reorder point has one request."""
        store = self.replenished
        low = {sku for sku in self.skus if self.available(sku, store) <= REORDER_POINT}
        replenishment = self.apis["replenishment"]
        shown: list[dict[str, Any]] = []

        async def requested() -> bool:
            nonlocal shown
            rows = await replenishment.get(
                "/v1/replenishments", status="requested", location_id=store
            )
            shown = [r for r in rows if r["sku"] in self.skus]
            return {r["sku"] for r in shown} >= low

        await eventually(
            requested, timeout=REQUESTS_DEADLINE_S, interval=0.2, message="replenishments"
        )
        skus = [r["sku"] for r in shown]
        if len(skus) != len(set(skus)):
            raise PlatformError(f"more than one open request for one SKU: {shown}")
        await self._all(self.replenish(r["replenishment_id"], r["sku"]) for r in shown)

    PHASES = ("open", "morning", "midday", "afternoon", "evening")

    # --- single actions ---------------------------------------------------------------------

    async def receive(self, receipt_id: str, location_id: str, units: int) -> None:
        lines = [{"sku": sku, "quantity": units} for sku in self.skus]
        answer = await self.apis["inventory"].write(
            "receipt",
            receipt_id,
            "POST",
            "/v1/receipts",
            {"receipt_id": receipt_id, "location_id": location_id, "lines": lines},
        )
        expect(answer, 201, "receipt")
        for sku in self.skus:
            self.book.on_hand[sku, location_id] += units
            self.book.received[sku] += units
            self.book.receipts.append((receipt_id, location_id, sku))

    def available(self, sku: str, location_id: str) -> int:
        key = (sku, location_id)
        return self.book.on_hand[key] - self.book.held[key] - self.book.committed[key]

    async def set_rule(self, sku: str) -> None:
        store = self.replenished
        answer = await self.apis["replenishment"].write(
            "rule",
            f"{store}/{sku}",
            "PUT",
            f"/v1/rules/{store}/{sku}",
            {
                "reorder_point": REORDER_POINT,
                "order_up_to": ORDER_UP_TO,
                "lead_time_hours": 24,
                "source_location_id": WAREHOUSE,
            },
        )
        expect(answer, 200, "reorder rule")

    async def replenish(self, replenishment_id: str, sku: str) -> None:
        """Dispatch from the warehouse, then (once the truck is on the road, as the stock
        figures show) the store's receipt naming the request."""
        store = self.replenished
        answer = await self.apis["replenishment"].write(
            "dispatch",
            replenishment_id,
            "POST",
            f"/v1/replenishments/{replenishment_id}/dispatch",
        )
        expect(answer, 202, "dispatch")
        quantity = int(answer.body["quantity"])
        self.book.on_hand[sku, WAREHOUSE] -= quantity
        self.book.incoming[sku, store] += quantity
        inventory = self.apis["inventory"]

        async def on_the_road() -> bool:
            body = await inventory.get(f"/v1/stock/{sku}")
            rows = {row["location_id"]: row for row in body["locations"]}
            return bool(rows.get(store, {}).get("incoming", 0) >= quantity)

        await eventually(on_the_road, timeout=REQUESTS_DEADLINE_S, interval=0.1, message="sent")
        receipt_id = f"{self.tag}-rc-{replenishment_id}"
        answer = await inventory.write(
            "receipt",
            receipt_id,
            "POST",
            "/v1/receipts",
            {
                "receipt_id": receipt_id,
                "location_id": store,
                "replenishment_id": replenishment_id,
                "lines": [{"sku": sku, "quantity": quantity}],
            },
        )
        expect(answer, 201, "replenishment receipt")
        self.book.incoming[sku, store] -= quantity
        self.book.on_hand[sku, store] += quantity
        self.book.receipts.append((receipt_id, store, sku))
        self.book.replenishments[replenishment_id] = (sku, store, quantity)

    def _new_cart(self, n: int) -> Cart:
        skus = self.random.sample(self.skus, k=min(len(self.skus), 1 + n % 3))
        cart = Cart(f"{self.tag}-cart-{n}", {sku: 1 + self.random.randrange(3) for sku in skus})
        self.book.carts[cart.reservation_id] = cart
        return cart

    def _abandoned_numbers(self) -> list[int]:
        return [n for n in range(self.size.carts) if n % 6 == 5]

    def _abandoned(self, cart: Cart) -> bool:
        return int(cart.reservation_id.rsplit("-", 1)[1]) % 6 == 5

    async def reserve(self, cart: Cart) -> None:
        body = {
            "reservation_id": cart.reservation_id,
            "ttl_seconds": ABANDON_TTL_S if self._abandoned(cart) else CART_TTL_S,
            "lines": [{"sku": s, "quantity": q} for s, q in sorted(cart.lines.items())],
        }
        answer = await self.apis["inventory"].write(
            "reservation", cart.reservation_id, "POST", "/v1/reservations", body
        )
        if answer.status == 409:
            # Out of stock, or (a short TTL on a busy machine) expired before it was decided.
            cart.status = "expired" if answer.body.get("status_now") == "expired" else "rejected"
            return
        expect(answer, 201, "reserve")
        cart.status = "held"
        for line in answer.body["lines"]:
            key = (line["sku"], line["location_id"])
            cart.allocations[key] = cart.allocations.get(key, 0) + line["quantity"]
            self.book.held[key] += line["quantity"]
        if self._abandoned(cart):
            # Nobody comes back for it: once its TTL passes, the platform must free it.
            cart.status = "expired"
            for key, quantity in cart.allocations.items():
                self.book.held[key] -= quantity

    async def release(self, cart: Cart) -> None:
        answer = await self.apis["inventory"].write(
            "release",
            cart.reservation_id,
            "POST",
            f"/v1/reservations/{cart.reservation_id}/release",
        )
        expect(answer, 200, "release")
        cart.status = "released"
        for key, quantity in cart.allocations.items():
            self.book.held[key] -= quantity

    async def place(self, cart: Cart) -> None:
        order = Order(f"{self.tag}-ord-{cart.reservation_id.rsplit('-', 1)[1]}", cart)
        body = {
            "order_id": order.order_id,
            "reservation_id": cart.reservation_id,
            "customer_id": f"cust-{order.order_id}",
            "payment_reference": f"psp-{order.order_id}",
            "lines": [{"sku": s, "quantity": q} for s, q in sorted(cart.lines.items())],
        }
        orders = self.apis["orders"]
        answer = await orders.write("order", order.order_id, "POST", "/v1/orders", body)
        expect(answer, (201, 202), "place an order")
        cart.status = "ordered"
        self.book.orders[order.order_id] = order
        status = answer.body["status"]
        if status == "placed":  # 202: decided later; the order's page tells

            async def decided() -> str | None:
                now = (await orders.get(f"/v1/orders/{order.order_id}"))["status"]
                return None if now == "placed" else str(now)

            status = await eventually(decided, timeout=120, interval=0.05, message="decided")
        if status != "confirmed":
            raise PlatformError(f"order on a held reservation ended {status}: {answer.body}")
        order.status = "confirmed"
        for key, quantity in cart.allocations.items():
            self.book.held[key] -= quantity
            self.book.committed[key] += quantity

    async def cancel(self, order: Order) -> None:
        answer = await self.apis["orders"].write(
            "cancel",
            order.order_id,
            "POST",
            f"/v1/orders/{order.order_id}/cancel",
            {"reason": "customer changed their mind"},
        )
        expect(answer, (200, 202), "cancel")
        order.status = "cancelled"
        for key, quantity in order.cart.allocations.items():
            self.book.committed[key] -= quantity

    async def fulfil(self, order: Order) -> None:
        by_location: dict[str, list[dict[str, Any]]] = {}
        for (sku, location_id), quantity in sorted(order.cart.allocations.items()):
            by_location.setdefault(location_id, []).append({"sku": sku, "quantity": quantity})
        for location_id, lines in by_location.items():
            shipment = f"{order.order_id}-from-{location_id}"
            answer = await self.apis["orders"].write(
                "shipment",
                shipment,
                "POST",
                f"/v1/orders/{order.order_id}/fulfil",
                {"location_id": location_id, "lines": lines, "shipment_id": shipment},
            )
            expect(answer, (200, 202), "fulfil")
            for line in lines:
                key = (line["sku"], location_id)
                self.book.committed[key] -= line["quantity"]
                self.book.on_hand[key] -= line["quantity"]
                self.book.shipped[line["sku"]] += line["quantity"]
        order.status = "fulfilled"

    async def sell(self, store: str, n: int) -> None:
        skus = self.random.sample(self.skus, k=min(len(self.skus), 1 + n % 2))
        lines = {sku: 1 + self.random.randrange(2) for sku in skus}
        sale_id = f"{self.tag}-{store}-sale-{n}"
        if await self._pos(store, sale_id, "sale", lines):
            self.book.sales.append((sale_id, store, lines))
            for sku, quantity in lines.items():
                self.book.on_hand[sku, store] -= quantity
                self.book.sold[sku] += quantity

    async def give_back(self, store: str, n: int, lines: dict[str, int]) -> None:
        if await self._pos(store, f"{self.tag}-{store}-return-{n}", "return", lines):
            for sku, quantity in lines.items():
                self.book.on_hand[sku, store] += quantity
                self.book.sold[sku] -= quantity

    async def void(self, store: str, sale_id: str, lines: dict[str, int]) -> None:
        if await self._pos(store, f"{sale_id}-void", "void", {}, voids=sale_id):
            for sku, quantity in lines.items():
                self.book.on_hand[sku, store] += quantity
                self.book.sold[sku] -= quantity

    async def _pos(
        self, store: str, transaction_id: str, kind: str, lines: dict[str, int], voids: str = ""
    ) -> bool:
        terminal = f"{self.tag}-till-{len(transaction_id) % 2}"
        self._sequence[store, terminal] += 1
        body: dict[str, Any] = {
            "transaction_id": transaction_id,
            "store_id": store,
            "terminal_id": terminal,
            "sequence": self._sequence[store, terminal],
            "occurred_at": (utcnow() - timedelta(seconds=1)).isoformat(),
            "type": kind,
            "lines": [
                {"sku": s, "quantity": q, "unit_price": "4.99", "currency": "EUR"}
                for s, q in sorted(lines.items())
            ],
        }
        if voids:
            body["voids_transaction_id"] = voids
        answer = await self.apis["pos-gateway"].write(
            "pos", transaction_id, "POST", "/v1/pos/transactions", body
        )
        # 201 recorded now; 200 "duplicate": an earlier try of this request was recorded.
        expect(answer, (200, 201), f"POS {kind}")
        if answer.body["status"] not in ("accepted", "duplicate"):
            raise PlatformError(f"POS {kind} {transaction_id}: {answer.body}")
        self.book.terminals[store, terminal] += 1
        return True

    async def _all(self, work: Iterable[Awaitable[None]]) -> None:
        async def gated(job: Awaitable[None]) -> None:
            async with self._gate:
                await job

        await asyncio.gather(*(gated(job) for job in work))

    async def run(
        self,
        check: Callable[[str], Awaitable[None]],
        faults: dict[str, Callable[[], Awaitable[None]]] | None = None,
    ) -> None:
        """Every phase in order, a fault injected in the middle of the named phases, and
        ``check`` after each."""
        for phase in self.PHASES:
            work = asyncio.create_task(getattr(self, phase)())
            fault = (faults or {}).get(phase)
            if fault is not None:
                await self._midway(work)
                await fault()
            await work
            await check(phase)

    async def _midway(self, work: asyncio.Task[None]) -> None:
        """Wait until the phase has had some writes acknowledged (or ended)."""
        ledger = self.apis.ledger
        before = ledger.count()
        await eventually(
            lambda: work.done() or ledger.count() >= before + 3,
            timeout=120,
            interval=0.01,
            message="the phase under way",
        )
        if work.done():
            await work


def expect(answer: Answer, status: int | tuple[int, ...], what: str) -> None:
    wanted = status if isinstance(status, tuple) else (status,)
    if answer.status not in wanted:
        raise PlatformError(f"{what}: {answer.status} {answer.body}")
