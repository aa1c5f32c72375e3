"""The inventory API through the real broker and PostgreSQL, one replica."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from inventory_support import Clock, receive, register_demo_locations

from omnistock.devstack.waiting import eventually
from omnistock.events.fold import Fold
from omnistock.events.replay import replay
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import INVENTORY_LOCATIONS, INVENTORY_RESERVATIONS, INVENTORY_STOCK

pytestmark = pytest.mark.integration


async def stock(client: httpx.AsyncClient, sku: str, **params: Any) -> dict[str, Any]:
    response = await client.get(f"/v1/stock/{sku}", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def at(body: dict[str, Any], location_id: str) -> dict[str, Any]:
    return next(row for row in body["locations"] if row["location_id"] == location_id)


async def reserve(
    client: httpx.AsyncClient, rid: str, *lines: dict[str, Any], **extra: Any
) -> httpx.Response:
    return await client.post(
        "/v1/reservations", json={"reservation_id": rid, "lines": list(lines), **extra}
    )


async def test_reservation_lifecycle(inventory: httpx.AsyncClient) -> None:
    await register_demo_locations(inventory)
    await receive(inventory, "rc-1", "wh-kassel", SKU_1=5, SKU_2=3)
    position = await receive(inventory, "rc-2", "store-berlin", SKU_1=2)
    seen = await stock(inventory, "SKU-1", consistent_with=position)
    assert seen["totals"]["available"] == 7  # read-your-writes: visible at once
    # How fresh the rows are: the time of the last event folded into their partition.
    assert seen["as_of"] is not None
    assert (await stock(inventory, "SKU-UNKNOWN")) == {
        "sku": "SKU-UNKNOWN",
        "totals": {f: 0 for f in seen["totals"]},
        "locations": [],
        "as_of": None,
    }

    held = await reserve(
        inventory,
        "res-1",
        {"sku": "SKU-1", "quantity": 4},
        {"sku": "SKU-1", "quantity": 2},
        {"sku": "SKU-2", "quantity": 1},
    )
    assert held.status_code == 201, held.text
    body = held.json()
    assert body["status"] == "held"
    assert sorted((x["location_id"], x["sku"], x["quantity"]) for x in body["lines"]) == [
        ("store-berlin", "SKU-1", 2),  # the second line no longer fits whole at the warehouse
        ("wh-kassel", "SKU-1", 4),
        ("wh-kassel", "SKU-2", 1),
    ]
    after = await stock(inventory, "SKU-1", consistent_with=body["position"], near="store-berlin")
    assert after["totals"]["held"] == 6
    assert [row["location_id"] for row in after["locations"]] == ["store-berlin", "wh-kassel"]
    assert at(after, "wh-kassel")["distance_km"] == pytest.approx(300, abs=5)

    again = await reserve(
        inventory,
        "res-1",
        {"sku": "SKU-1", "quantity": 4},
        {"sku": "SKU-1", "quantity": 2},
        {"sku": "SKU-2", "quantity": 1},
    )
    assert again.status_code == 201
    assert again.json()["lines"] == body["lines"]
    conflict = await reserve(inventory, "res-1", {"sku": "SKU-1", "quantity": 1})
    assert conflict.status_code == 409
    assert conflict.json()["type"].endswith("idempotency-conflict")

    short = await reserve(
        inventory, "res-2", {"sku": "SKU-2", "quantity": 1}, {"sku": "SKU-1", "quantity": 2}
    )
    assert short.status_code == 409
    assert short.headers["content-type"].startswith("application/problem+json")
    assert short.json()["lines"] == [{"sku": "SKU-1", "requested": 2, "available": 1}]

    async def sku2_not_held_by_rejected() -> bool:
        return (await stock(inventory, "SKU-2"))["totals"]["held"] == 1

    await eventually(sku2_not_held_by_rejected, message="the rejected cart holds nothing")

    # Two extensions at once (payment started in two tabs): each is answered with an expiry
    # at least as late as it asked, and the reservation keeps the later one.
    asked_at = datetime.now(UTC)
    ttls = (1800, 2400)
    extended = await asyncio.gather(
        *(inventory.post("/v1/reservations/res-1/extend", json={"ttl_seconds": t}) for t in ttls)
    )
    for ttl, answer in zip(ttls, extended, strict=True):
        assert answer.status_code == 200, answer.text
        promised = datetime.fromisoformat(answer.json()["expires_at"])
        assert promised >= asked_at + timedelta(seconds=ttl), (ttl, answer.text)

    async def keeps_the_later_expiry() -> bool:
        shown = (await inventory.get("/v1/reservations/res-1")).json()
        return datetime.fromisoformat(shown["expires_at"]) >= asked_at + timedelta(seconds=2400)

    await eventually(keeps_the_later_expiry, message="the reservation keeps the later expiry")
    committed = await inventory.post("/v1/reservations/res-1/commit", json={"order_id": "ord-1"})
    assert committed.status_code == 200, committed.text
    assert (
        await inventory.post("/v1/reservations/res-1/commit", json={"order_id": "ord-1"})
    ).status_code == 200
    refused = await inventory.post("/v1/reservations/res-1/release")
    assert refused.status_code == 409
    assert (await inventory.post("/v1/reservations/nope/commit")).status_code == 404

    async def committed_in_view() -> dict[str, Any] | None:
        body = await stock(inventory, "SKU-1")
        return body if body["totals"]["committed"] == 6 else None

    final = await eventually(committed_in_view, message="commit visible")
    assert final["totals"]["held"] == 0

    async def reservation_shows_committed() -> bool:
        response = await inventory.get("/v1/reservations/res-1")
        return response.status_code == 200 and response.json()["status"] == "committed"

    await eventually(reservation_shows_committed, message="reservation read model")
    ledger = (
        await inventory.get("/v1/stock/SKU-1/movements", params={"location_id": "wh-kassel"})
    ).json()
    assert [m["kind"] for m in ledger] == ["receipt", "hold", "commit"]
    assert ledger[-1]["document_id"] == "ord-1"
    assert ledger[-1]["committed"] == 4


async def test_carts_racing_under_one_id_are_never_both_held(
    inventory: httpx.AsyncClient,
) -> None:
    """Two requests under one reservation_id with different carts, sent together: the first
    in the log is the reservation, the other is refused as a conflict, and none of its
    stock stays held. Both are refused when the other's hold reached a SKU first."""
    await register_demo_locations(inventory)
    await receive(inventory, "rc-race", "wh-kassel", SKU_R1=10, SKU_R2=10)
    held: dict[str, int] = {"SKU-R1": 0, "SKU-R2": 0}
    races = [
        # Different SKUs: each stock partition holds its own, only the saga can tell.
        ([{"sku": "SKU-R1", "quantity": 1}], [{"sku": "SKU-R2", "quantity": 1}]),
        # One SKU, another quantity: the hold that reaches the SKU first keeps it.
        ([{"sku": "SKU-R1", "quantity": 2}], [{"sku": "SKU-R1", "quantity": 3}]),
    ]
    for n, (first, second) in enumerate(races):
        answers = await asyncio.gather(
            reserve(inventory, f"race-{n}", *first), reserve(inventory, f"race-{n}", *second)
        )
        # Carts of different SKUs: the first is held; of one SKU, maybe neither.
        allowed = [[201, 409]] if n == 0 else [[201, 409], [409, 409]]
        assert sorted(a.status_code for a in answers) in allowed, [a.text for a in answers]
        for answer in answers:
            if answer.status_code == 409:
                assert answer.json()["type"].endswith("idempotency-conflict"), answer.text
            else:
                for line in answer.json()["lines"]:
                    held[line["sku"]] += line["quantity"]

        async def only_the_answered_cart_is_held() -> bool:
            totals = {sku: (await stock(inventory, sku))["totals"]["held"] for sku in held}
            return totals == held

        await eventually(only_the_answered_cart_is_held, message=f"race-{n}: {held}")


async def test_orders_racing_to_commit_one_reservation_get_one_sale(
    inventory: httpx.AsyncClient,
) -> None:
    """Two orders name the same reservation at once (a double-submitted checkout): the
    first commit request in the log buys the stock, the other is refused, both answered."""
    await register_demo_locations(inventory)
    carts = 8
    await receive(inventory, "rc-twins", "wh-kassel", SKU_T1=carts, SKU_T2=carts)
    lines = [{"sku": "SKU-T1", "quantity": 1}, {"sku": "SKU-T2", "quantity": 1}]
    for n in range(carts):
        assert (await reserve(inventory, f"twins-{n}", *lines)).status_code == 201
    winners: dict[str, str] = {}
    for n in range(carts):
        rid = f"twins-{n}"
        orders = [f"ord-{n}-a", f"ord-{n}-b"]
        answers = await asyncio.gather(
            *(
                inventory.post(f"/v1/reservations/{rid}/commit", json={"order_id": o})
                for o in orders
            )
        )
        assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
        winners[rid] = next(o for o, a in zip(orders, answers, strict=True) if a.is_success)
        loser = next(o for o in orders if o != winners[rid])
        # Asked again, each order hears the same answer.
        again = await inventory.post(f"/v1/reservations/{rid}/commit", json={"order_id": loser})
        assert again.status_code == 409, again.text
        again = await inventory.post(
            f"/v1/reservations/{rid}/commit", json={"order_id": winners[rid]}
        )
        assert again.status_code == 200, again.text

    async def each_cart_sold_once() -> bool:
        totals = [(await stock(inventory, sku))["totals"] for sku in ("SKU-T1", "SKU-T2")]
        return all(t["committed"] == carts and t["held"] == 0 for t in totals)

    await eventually(each_cart_sold_once, message="every cart committed once, nothing held")
    for rid, order_id in winners.items():
        shown = (await inventory.get(f"/v1/reservations/{rid}")).json()
        assert (shown["status"], shown["order_id"]) == ("committed", order_id), shown


async def test_abandoned_holds_return_at_expiry(inventory: httpx.AsyncClient, clock: Clock) -> None:
    await register_demo_locations(inventory)
    await receive(inventory, "rc-1", "wh-kassel", SKU_9=1)
    held = await reserve(inventory, "res-x", {"sku": "SKU-9", "quantity": 1}, ttl_seconds=30)
    assert held.status_code == 201, held.text
    blocked = await reserve(inventory, "res-y", {"sku": "SKU-9", "quantity": 1})
    assert blocked.status_code == 409
    clock.offset = timedelta(seconds=31)

    async def returned() -> bool:
        return (await stock(inventory, "SKU-9"))["totals"]["available"] == 1

    await eventually(returned, message="the expired hold returns to available")

    async def expired() -> bool:
        return (await inventory.get("/v1/reservations/res-x")).json().get("status") == "expired"

    await eventually(expired, message="the reservation reads expired")
    late = await inventory.post("/v1/reservations/res-x/commit")
    assert late.status_code == 409
    assert (await reserve(inventory, "res-z", {"sku": "SKU-9", "quantity": 1})).status_code == 201


class Count:
    def __init__(self) -> None:
        self.events = 0

    def apply(self, envelope: object) -> None:
        self.events += 1

    def canonical(self) -> int:
        return self.events


async def log_size(kafka: KafkaSettings) -> int:
    """Events in the inventory topics, not counting partition owners' ownership claims
    (a rebalance may add those at any time)."""
    fold = Fold(Count())
    topics = [INVENTORY_STOCK, INVENTORY_RESERVATIONS, INVENTORY_LOCATIONS]
    await replay(kafka, topics, fold, name="test", progress=False)
    return fold.projection.events


BAD_INPUT: list[tuple[str, Any, int, str | None]] = [
    (
        "/v1/reservations",
        {"reservation_id": "r", "lines": [{"sku": "A", "quantity": 0}]},
        422,
        "lines.0.quantity",
    ),
    (
        "/v1/reservations",
        {"reservation_id": "r", "lines": [{"sku": "A", "quantity": -3}]},
        422,
        "lines.0.quantity",
    ),
    (
        "/v1/reservations",
        {"reservation_id": "r", "lines": [{"sku": "A", "quantity": 10**9}]},
        422,
        "lines.0.quantity",
    ),
    (
        "/v1/reservations",
        {"reservation_id": "r", "lines": [{"sku": "A", "quantity": 1}], "ttl_seconds": 5},
        422,
        "ttl_seconds",
    ),
    (
        "/v1/reservations",
        {"reservation_id": "r", "lines": [{"sku": "A", "quantity": 1}], "ttl_seconds": 10**6},
        422,
        "ttl_seconds",
    ),
    ("/v1/reservations", {"reservation_id": "r", "lines": []}, 422, "lines"),
    (
        "/v1/reservations",
        {"reservation_id": "r/../x", "lines": [{"sku": "A", "quantity": 1}]},
        422,
        "reservation_id",
    ),
    (
        "/v1/reservations",
        {
            "reservation_id": "r",
            "lines": [{"sku": "A", "quantity": 1, "location_id": "nowhere"}],
        },
        422,
        "lines.0.location_id",
    ),
    (
        "/v1/receipts",
        {"receipt_id": "x", "location_id": "nowhere", "lines": [{"sku": "A", "quantity": 1}]},
        422,
        "location_id",
    ),
    (
        "/v1/adjustments",
        {"adjustment_id": "a", "location_id": "wh-kassel", "sku": "A", "reason": "damage"},
        422,
        "body",
    ),
    ("/v1/reservations/unknown-id/commit", None, 404, None),
]


async def test_bad_input_is_refused_and_nothing_is_written(
    inventory: httpx.AsyncClient, provisioned: KafkaSettings
) -> None:
    await register_demo_locations(inventory)
    for path, body, status, field in BAD_INPUT:
        before = await log_size(provisioned)
        response = await inventory.post(path, json=body)
        assert response.status_code == status, (path, body, response.text)
        problem = response.json()
        assert response.headers["content-type"].startswith("application/problem+json")
        assert problem["status"] == status
        if field is not None:
            assert field in [error["field"] for error in problem["errors"]], (body, problem)
        if status != 404:  # a command to an unknown reservation is written, then refused
            assert await log_size(provisioned) == before, (path, body)


async def test_malformed_json_is_a_clear_400(inventory: httpx.AsyncClient) -> None:
    response = await inventory.post(
        "/v1/reservations",
        content=b'{"reservation_id": "r", "lines": [',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["type"].endswith("malformed-json")


async def test_unknown_reservation_is_404(inventory: httpx.AsyncClient) -> None:
    response = await inventory.get("/v1/reservations/never-made")
    assert response.status_code == 404
    assert response.json()["title"] == "Unknown reservation"
