"""The invariants checked after every phase of a trading day.

Each check compares the platform, read through its public APIs (and the inventory
audit, which replays the log from offset 0), with the :class:`Book` the harness kept of
acknowledged answers. Views are eventually consistent, so each comparison waits, with a
deadline, for the platform to agree; a write lost or applied twice never agrees.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from system_client import Apis
from system_scenario import Book, TradingDay
from system_stack import Platform

from omnistock.devstack.waiting import eventually
from omnistock.inventory.audit import run_audit

#: How long the platform may take to show what it acknowledged (a loaded machine, a
#: service just restarted and replaying, a broker just resumed).
SETTLE_S = 90.0
FIGURES = ("on_hand", "incoming", "held", "committed")


async def check_day(platform: Platform, day: TradingDay, phase: str) -> None:
    """Every invariant, after ``phase`` of ``day``."""
    await stock_matches_book(platform.apis, day)
    await orders_and_reservations_agree(platform.apis, day.book)
    await acknowledged_writes_are_there(platform.apis, day)
    await replenishments_agree(platform.apis, day)
    await audit_is_clean(platform, phase)


async def stock_matches_book(apis: Apis, day: TradingDay) -> None:
    """Per SKU and location, on_hand, held and committed are what the acknowledged writes
    imply (I3, I5, I6: abandoned holds expired); and units are conserved across locations:
    on hand everywhere + on the road between them = received - sold net of returns and
    voids - shipped."""
    book = day.book
    inventory = apis["inventory"]
    wanted = {
        sku: {loc: {f: getattr(book, f)[sku, loc] for f in FIGURES} for loc in day.locations}
        for sku in day.skus
    }

    async def shown() -> dict[str, Any]:
        figures: dict[str, Any] = {}
        for sku in day.skus:
            body = await inventory.get(f"/v1/stock/{sku}")
            rows = {row["location_id"]: row for row in body["locations"]}
            figures[sku] = {
                loc: {f: rows.get(loc, {}).get(f, 0) for f in FIGURES} for loc in day.locations
            }
            figures[sku]["totals"] = body["totals"]
        return figures

    last: dict[str, Any] = {}

    async def agrees() -> bool:
        nonlocal last
        last = await shown()
        return all(last[sku][loc] == wanted[sku][loc] for sku in day.skus for loc in day.locations)

    try:
        await eventually(agrees, timeout=SETTLE_S, interval=0.2, message="stock as booked")
    except AssertionError:
        differences = {
            (sku, loc): (last.get(sku, {}).get(loc), wanted[sku][loc])
            for sku in day.skus
            for loc in day.locations
            if last.get(sku, {}).get(loc) != wanted[sku][loc]
        }
        raise AssertionError(f"(shown, booked) differ: {differences}") from None
    for sku in day.skus:
        totals = last[sku]["totals"]
        units = totals["on_hand"] + totals["incoming"]
        assert units == book.received[sku] - book.sold[sku] - book.shipped[sku], sku
        # I1 at rest: nothing promised beyond what is on the shelves the web shop sells from.
        assert totals["held"] >= 0
        assert totals["committed"] >= 0


async def orders_and_reservations_agree(apis: Apis, book: Book) -> None:
    """Each order is in the status its acknowledged changes put it in, on the reservation it
    names, which is committed to it; each cart's reservation is where its answers left it."""
    orders, inventory = apis["orders"], apis["inventory"]
    wanted_orders = {oid: o.status for oid, o in book.orders.items()}
    ordered = {o.cart.reservation_id: oid for oid, o in book.orders.items()}

    async def order_statuses() -> dict[str, str]:
        return {oid: (await orders.get(f"/v1/orders/{oid}"))["status"] for oid in wanted_orders}

    last_orders: dict[str, str] = {}

    async def orders_agree() -> bool:
        nonlocal last_orders
        last_orders = await order_statuses()
        return last_orders == wanted_orders

    try:
        await eventually(orders_agree, timeout=SETTLE_S, interval=0.2, message="orders")
    except AssertionError:
        raise AssertionError(
            f"orders (shown, booked): { {o: (last_orders.get(o), s) for o, s in wanted_orders.items() if last_orders.get(o) != s} }"  # noqa: E501
        ) from None
    for oid, order in book.orders.items():
        body = await orders.get(f"/v1/orders/{oid}")
        assert body["reservation_id"] == order.cart.reservation_id, body

    def wanted_reservation(rid: str, status: str) -> str:
        return {"ordered": "committed"}.get(status, status)

    wanted = {
        rid: wanted_reservation(rid, cart.status)
        for rid, cart in book.carts.items()
        if cart.status != "rejected"
    }

    last: dict[str, Any] = {}

    async def reservations_agree() -> bool:
        nonlocal last
        last = {}
        for rid in wanted:
            answer = await inventory.call("GET", f"/v1/reservations/{rid}")
            last[rid] = answer.body if answer.status == 200 else {"status": answer.status}
        return all(last[rid]["status"] == status for rid, status in wanted.items())

    try:
        await eventually(reservations_agree, timeout=SETTLE_S, interval=0.2, message="carts")
    except AssertionError:
        raise AssertionError(
            f"reservations (shown, booked): { {r: (last[r].get('status'), s) for r, s in wanted.items() if last.get(r, {}).get('status') != s} }"  # noqa: E501
        ) from None
    for rid, oid in ordered.items():
        assert last[rid]["order_id"] == oid, (rid, last[rid])


async def acknowledged_writes_are_there(apis: Apis, day: TradingDay) -> None:
    """I5: every write the platform acknowledged is in its state (receipts in the stock
    ledger, POS transactions counted per terminal, reservations and orders known)."""
    ledger, book = apis.ledger, day.book
    inventory, pos, orders = apis["inventory"], apis["pos-gateway"], apis["orders"]
    for (what, key), _status in sorted(ledger.acknowledged.items()):
        if what == "reservation":
            answer = await inventory.call("GET", f"/v1/reservations/{key}")
            assert answer.status == 200, (key, answer.body)
        elif what == "order":
            answer = await orders.call("GET", f"/v1/orders/{key}")
            assert answer.status == 200, (key, answer.body)
    received: dict[tuple[str, str], set[str]] = {}
    for receipt_id, location_id, sku in book.receipts:
        received.setdefault((sku, location_id), set()).add(receipt_id)
    for (sku, location_id), receipts in received.items():
        moves = await inventory.get(
            f"/v1/stock/{sku}/movements", location_id=location_id, limit=1000
        )
        documents = Counter(m["document_id"] for m in moves if m["kind"] == "receipt")
        # Each receipt exactly once: neither lost nor applied twice.
        assert {r: documents[r] for r in receipts} == dict.fromkeys(receipts, 1), (sku, documents)

    shown: dict[tuple[str, str], Any] = {}

    async def terminals_agree() -> bool:
        for store, terminal in book.terminals:
            shown[store, terminal] = await pos.get(f"/v1/pos/terminals/{store}/{terminal}")
        return all(shown[k]["received"] == count for k, count in book.terminals.items())

    try:
        await eventually(terminals_agree, timeout=SETTLE_S, interval=0.2, message="terminals")
    except AssertionError:
        raise AssertionError(
            "POS transactions per terminal (shown, booked): "
            + str({k: (shown.get(k), n) for k, n in book.terminals.items()})
        ) from None


async def replenishments_agree(apis: Apis, day: TradingDay) -> None:
    """Every reorder rule set is listed; every request dispatched and received in full is
    closed (received), with the quantity that moved."""
    replenishment = apis["replenishment"]
    rules = await replenishment.get("/v1/rules", location_id=day.replenished)
    assert {r["sku"] for r in rules} >= set(day.skus), rules
    last: dict[str, Any] = {}

    async def closed() -> bool:
        for rid in day.book.replenishments:
            last[rid] = await replenishment.get(f"/v1/replenishments/{rid}")
        return all(
            (last[rid]["status"], last[rid]["received_quantity"]) == ("received", quantity)
            for rid, (_, _, quantity) in day.book.replenishments.items()
        )

    try:
        await eventually(closed, timeout=SETTLE_S, interval=0.2, message="replenishments")
    except AssertionError:
        raise AssertionError(
            "replenishments (shown, booked): "
            + str({r: (last.get(r), q) for r, (_, _, q) in day.book.replenishments.items()})
        ) from None


async def audit_is_clean(platform: Platform, phase: str) -> None:
    """The inventory audit over the whole log (I1-I4), its read model included."""
    report = await run_audit(
        platform.kafka, database_url=platform.databases["inventory"], progress=False
    )
    violations = [f.message for f in report.findings if f.kind == "violation"]
    assert report.ok, f"audit after {phase}: {violations[:20]}"
