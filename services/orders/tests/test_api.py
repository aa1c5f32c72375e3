"""The EC path through the real broker and PostgreSQL: inventory and orders side by side."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from inventory_support import Clock, receive, register_demo_locations
from orders_support import (
    another_database,
    order_body,
    read_model_hash,
    replayed_hash,
    reserve,
    totals,
)

from omnistock.devstack.serving import serving
from omnistock.devstack.waiting import eventually
from omnistock.events.settings import KafkaSettings
from omnistock.orders.main import create_orders_app
from omnistock.orders.settings import OrdersSettings

pytestmark = pytest.mark.integration


async def order_status(orders: httpx.AsyncClient, order_id: str) -> str | None:
    response = await orders.get(f"/v1/orders/{order_id}")
    return response.json()["status"] if response.status_code == 200 else None


async def until_status(orders: httpx.AsyncClient, order_id: str, status: str) -> dict[str, Any]:
    async def reached() -> bool:
        return await order_status(orders, order_id) == status

    await eventually(reached, timeout=15, message=f"{order_id} {status}")
    body: dict[str, Any] = (await orders.get(f"/v1/orders/{order_id}")).json()
    return body


async def test_reserve_place_confirm_fulfil(
    inventory: httpx.AsyncClient, orders: httpx.AsyncClient
) -> None:
    await register_demo_locations(inventory)
    await receive(inventory, "rc-1", "wh-kassel", SKU_1=5, SKU_2=3)
    await reserve(inventory, "res-1", SKU_1=3, SKU_2=1)

    placed = await orders.post("/v1/orders", json=order_body("ord-1", "res-1", SKU_1=3, SKU_2=1))
    assert placed.status_code == 201, placed.text
    assert placed.json()["status"] == "confirmed"
    assert placed.headers["Location"] == "/v1/orders/ord-1"
    assert (await totals(inventory, "SKU-1"))["committed"] == 3

    again = await orders.post("/v1/orders", json=order_body("ord-1", "res-1", SKU_1=3, SKU_2=1))
    assert again.status_code == 201
    assert again.json()["status"] == "confirmed"
    other = await orders.post("/v1/orders", json=order_body("ord-1", "res-1", SKU_1=2))
    assert other.status_code == 409
    assert other.json()["type"].endswith("idempotency-conflict")

    await until_status(orders, "ord-1", "confirmed")
    part = await orders.post(
        "/v1/orders/ord-1/fulfil",
        json={"location_id": "wh-kassel", "lines": [{"sku": "SKU-1", "quantity": 2}]},
    )
    assert part.status_code == 200, part.text
    assert part.json()["status"] == "partially_fulfilled"
    too_much = await orders.post(
        "/v1/orders/ord-1/fulfil",
        json={"location_id": "wh-kassel", "lines": [{"sku": "SKU-1", "quantity": 2}]},
    )
    assert too_much.status_code == 422
    rest = await orders.post(
        "/v1/orders/ord-1/fulfil", json={"location_id": "wh-kassel", "shipment_id": "shp-2"}
    )
    assert rest.status_code == 200, rest.text
    body = rest.json()
    assert body["status"] == "fulfilled"
    assert body["shipped"] == {"SKU-1": 3, "SKU-2": 1}
    assert [step["event"] for step in body["timeline"]] == [
        "OrderPlaced",
        "OrderConfirmed",
        "OrderFulfilled",
        "OrderFulfilled",
    ]
    assert all(step["at"] for step in body["timeline"])

    async def shipped() -> bool:
        sku1 = await totals(inventory, "SKU-1")
        sku2 = await totals(inventory, "SKU-2")
        return (sku1["on_hand"], sku1["committed"], sku2["on_hand"], sku2["committed"]) == (
            2,
            0,
            2,
            0,
        )

    await eventually(shipped, message="inventory shipped the order")
    # A client that lost the answer repeats the shipment: the same answer, shipped once.
    again = await orders.post(
        "/v1/orders/ord-1/fulfil", json={"location_id": "wh-kassel", "shipment_id": "shp-2"}
    )
    assert again.status_code == 200, again.text
    assert again.json()["shipped"] == {"SKU-1": 3, "SKU-2": 1}
    assert len(again.json()["timeline"]) == 4
    cancel = await orders.post("/v1/orders/ord-1/cancel")
    assert cancel.status_code == 409
    assert cancel.json()["status_now"] == "fulfilled"

    listed = await orders.get("/v1/orders", params={"customer_id": "cust-1", "status": "fulfilled"})
    assert [o["order_id"] for o in listed.json()["items"]] == ["ord-1"]


async def test_an_expired_reservation_rejects_the_order(
    inventory: httpx.AsyncClient, orders: httpx.AsyncClient, clock: Clock
) -> None:
    await register_demo_locations(inventory)
    await receive(inventory, "rc-1", "wh-kassel", SKU_1=5)
    await reserve(inventory, "res-late", ttl_seconds=30, SKU_1=2)
    clock.offset += timedelta(seconds=60)

    async def expired() -> bool:
        got = await inventory.get("/v1/reservations/res-late")
        return bool(got.json()["status"] == "expired")

    await eventually(expired, message="the hold expired")
    placed = await orders.post("/v1/orders", json=order_body("ord-late", "res-late", SKU_1=2))
    assert placed.status_code == 201, placed.text
    assert placed.json()["status"] == "rejected"
    assert placed.json()["reject_reason"] == "reservation_expired"
    assert (await totals(inventory, "SKU-1"))["committed"] == 0

    # Other refusals, each in the order's words.
    await reserve(inventory, "res-2", SKU_1=1)
    wrong = await orders.post("/v1/orders", json=order_body("ord-wrong", "res-2", SKU_1=2))
    assert wrong.json()["reject_reason"] == "lines_mismatch"
    nowhere = await orders.post("/v1/orders", json=order_body("ord-x", "res-none", SKU_1=1))
    assert nowhere.json()["reject_reason"] == "reservation_unknown"
    body = await until_status(orders, "ord-late", "rejected")
    assert [step["event"] for step in body["timeline"]] == ["OrderPlaced", "OrderRejected"]
    fulfil = await orders.post("/v1/orders/ord-late/fulfil", json={"location_id": "wh-kassel"})
    assert fulfil.status_code == 409
    assert fulfil.json()["status_now"] == "rejected"


async def test_cancel_returns_stock_and_fulfil_after_cancel_is_refused(
    inventory: httpx.AsyncClient,
    orders: httpx.AsyncClient,
) -> None:
    await register_demo_locations(inventory)
    await receive(inventory, "rc-1", "wh-kassel", SKU_1=5)
    await reserve(inventory, "res-1", SKU_1=2)
    placed = await orders.post("/v1/orders", json=order_body("ord-1", "res-1", SKU_1=2))
    assert placed.json()["status"] == "confirmed"
    assert (await totals(inventory, "SKU-1"))["available"] == 3

    cancelled = await orders.post("/v1/orders/ord-1/cancel", json={"reason": "customer asked"})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"

    async def returned() -> bool:
        figures = await totals(inventory, "SKU-1")
        return (figures["available"], figures["committed"], figures["on_hand"]) == (5, 0, 5)

    await eventually(returned, message="cancelled stock is available again")
    fulfil = await orders.post("/v1/orders/ord-1/fulfil", json={"location_id": "wh-kassel"})
    assert fulfil.status_code == 409
    problem = fulfil.json()
    assert problem["status_now"] == "cancelled"
    assert problem["type"].endswith("order-state")
    repeated = await orders.post("/v1/orders/ord-1/cancel")
    assert repeated.status_code == 200, "a repeated cancel is answered, not refused"
    assert [step["event"] for step in repeated.json()["timeline"]].count("OrderCancelled") == 1
    assert (await orders.get("/v1/orders/ord-404")).status_code == 404
    assert (await orders.post("/v1/orders/ord-404/cancel")).status_code == 404


async def test_replay_yields_the_same_read_model(
    inventory: httpx.AsyncClient,
    provisioned: KafkaSettings,
    make_orders_settings: Callable[..., OrdersSettings],
    database_url: str,
    postgres_url: str,
) -> None:
    await register_demo_locations(inventory)
    await receive(inventory, "rc-1", "wh-kassel", SKU_1=9)
    async with serving(create_orders_app(make_orders_settings())) as orders:
        for n in range(3):
            await reserve(inventory, f"res-{n}", SKU_1=2)
            body = order_body(f"ord-{n}", f"res-{n}", SKU_1=2)
            assert (await orders.post("/v1/orders", json=body)).json()["status"] == "confirmed"
        await orders.post("/v1/orders", json=order_body("ord-x", "res-none", SKU_1=1))
        assert (await orders.post("/v1/orders/ord-0/cancel")).status_code == 200
        shipped = await orders.post("/v1/orders/ord-1/fulfil", json={"location_id": "wh-kassel"})
        assert shipped.status_code == 200
        await until_status(orders, "ord-x", "rejected")
        await until_status(orders, "ord-2", "confirmed")

    # Replay from offset 0 yields the read model, byte for byte; so does a rebuild into an
    # empty database by a new instance (once the first has left the consumer groups).
    served = await read_model_hash(database_url)
    assert served == await replayed_hash(provisioned)
    rebuilt_db = await another_database(postgres_url, "orders_rebuilt")
    settings = make_orders_settings(database_url=rebuilt_db, instance_id="orders-b")
    async with serving(create_orders_app(settings)) as second:
        assert (await second.get("/v1/orders/ord-0")).json()["status"] == "cancelled"
    assert await read_model_hash(rebuilt_db) == served


async def test_two_replicas_racing_one_new_order_id_with_two_bodies_agree_on_one(
    inventory: httpx.AsyncClient,
    orders: httpx.AsyncClient,
    make_orders_settings: Callable[..., OrdersSettings],
) -> None:
    """Two checkouts send one new order id with different bodies to two replicas at once:
    whichever the log has first is the order; the other caller gets 409, never a 2xx for
    a body that is not the order."""
    await register_demo_locations(inventory)
    await receive(inventory, "rc-1", "wh-kassel", SKU_1=20)
    races = 8
    for n in range(races):
        await reserve(inventory, f"res-race-{n}", SKU_1=1)
    settings = make_orders_settings(instance_id="orders-test-1")
    async with serving(create_orders_app(settings)) as other:
        answers = await asyncio.gather(
            *(
                client.post(
                    "/v1/orders",
                    json=order_body(f"ord-race-{n}", f"res-race-{n}", customer, SKU_1=1),
                )
                for n in range(races)
                for client, customer in ((orders, "cust-a"), (other, "cust-b"))
            )
        )
        for n in range(races):
            stored = (await orders.get(f"/v1/orders/ord-race-{n}")).json()
            pair = answers[2 * n : 2 * n + 2]
            won = [a for a in pair if a.status_code in (201, 202)]
            assert [a.status_code for a in pair if a not in won] == [409] * (2 - len(won))
            assert won, f"ord-race-{n}: neither placement was answered"
            for answer in won:
                assert answer.json()["customer_id"] == stored["customer_id"], (n, answer.text)
