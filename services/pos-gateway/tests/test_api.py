"""The gateway through its HTTP API, on the real broker and PostgreSQL, with the real
inventory service applying what it records."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pos_support import events_in_log, line, on_hand, transaction

from omnistock.devstack.serving import serving
from omnistock.devstack.waiting import eventually
from omnistock.events.envelope import utcnow
from omnistock.events.settings import KafkaSettings
from omnistock.pos_gateway.main import create_pos_gateway_app
from omnistock.pos_gateway.settings import PosGatewaySettings

STORE = "store-berlin"


async def stock_is(inventory: httpx.AsyncClient, expected: dict[str, int]) -> None:
    async def matches() -> bool:
        for sku, quantity in expected.items():
            if await on_hand(inventory, sku, STORE) != quantity:
                return False
        return True

    await eventually(matches, timeout=20, message=f"on_hand at {STORE} == {expected}")


def batch_of_1000() -> tuple[list[dict[str, Any]], set[int], dict[str, int]]:
    """990 good sales over 20 SKUs and 10 bad items; the bad indexes; expected on_hand."""
    items: list[dict[str, Any]] = []
    bad = set(range(7, 1000, 100))
    expected: Counter[str] = Counter()
    for i in range(1000):
        sku, quantity = f"SKU-B{i % 20}", 1 + i % 3
        item = transaction(f"b-{i}", sequence=i + 1, lines=[line(sku, quantity)])
        if i in bad:
            item["lines"][0]["quantity"] = -quantity  # a sale of a negative quantity
        else:
            expected[sku] -= quantity
        items.append(item)
    return items, bad, dict(expected)


async def test_a_sale_reaches_stock_a_return_adds_back_a_void_cancels(
    gateway: httpx.AsyncClient, inventory: httpx.AsyncClient
) -> None:
    sale = await gateway.post(
        "/v1/pos/transactions", json=transaction("s-1", lines=[line("SKU-1", 3)])
    )
    assert sale.status_code == 201, sale.text
    assert sale.json()["status"] == "accepted"
    await stock_is(inventory, {"SKU-1": -3})

    back = transaction("r-1", sequence=2, type="return", lines=[line("SKU-1", 1)])
    assert (await gateway.post("/v1/pos/transactions", json=back)).status_code == 201
    await stock_is(inventory, {"SKU-1": -2})

    void = transaction("v-1", sequence=3, type="void", voids_transaction_id="s-1")
    response = await gateway.post("/v1/pos/transactions", json=void)
    assert response.status_code == 201, response.text
    await stock_is(inventory, {"SKU-1": 1})  # the sale of 3 never happened; the return stays

    again = transaction("v-2", sequence=4, type="void", voids_transaction_id="s-1")
    refused = await gateway.post("/v1/pos/transactions", json=again)
    assert refused.status_code == 422
    assert refused.json()["reason"] == "already_voided"


async def test_batch_of_1000_with_10_invalid_and_resent_across_a_restart(
    make_settings: Callable[..., PosGatewaySettings],
    inventory: httpx.AsyncClient,
) -> None:
    items, bad, expected = batch_of_1000()
    settings = make_settings()
    async with serving(create_pos_gateway_app(settings)) as gateway:
        first = await gateway.post("/v1/pos/transactions", json={"transactions": items})
        assert first.status_code == 200, first.text
        body = first.json()
        assert (body["accepted"], body["duplicates"], body["rejected"]) == (990, 0, 10)
        rejected = [r for r in body["results"] if r["status"] == "rejected"]
        assert {r["index"] for r in rejected} == bad
        for r in rejected:
            assert r["reason"] == "invalid"
            assert r["errors"][0]["field"] == "lines.0.quantity", r
            assert "greater than 0" in r["errors"][0]["message"]
        await stock_is(inventory, expected)

        second = (await gateway.post("/v1/pos/transactions", json={"transactions": items})).json()
        assert (second["accepted"], second["duplicates"], second["rejected"]) == (0, 990, 10)

    async with serving(create_pos_gateway_app(settings)) as restarted:
        third = (await restarted.post("/v1/pos/transactions", json={"transactions": items})).json()
        assert (third["accepted"], third["duplicates"], third["rejected"]) == (0, 990, 10)
        # A marker sale written after the resends: once it shows, everything before it in the
        # log has been applied, so the figures below are final, not merely "not yet doubled".
        marker = transaction("marker", sequence=5_000, lines=[line("SKU-MARK", 1)])
        assert (await restarted.post("/v1/pos/transactions", json=marker)).status_code == 201
    await stock_is(inventory, {**expected, "SKU-MARK": -1})


@pytest.mark.parametrize(
    ("body", "status", "slug"),
    [
        (b'{"transaction_id": "x", ', 400, "malformed-json"),
        ({"transactions": [transaction(f"o-{i}") for i in range(1001)]}, 413, "batch-too-large"),
        (transaction("u-1", type="exchange"), 422, "transaction-invalid"),
        (transaction("n-1", lines=[line("SKU-1", -2)]), 422, "transaction-invalid"),
        (
            transaction("f-1", occurred_at=utcnow() + timedelta(hours=2)),
            422,
            "transaction-future-timestamp",
        ),
        (
            transaction("w-1", type="void", voids_transaction_id="nope"),
            422,
            "transaction-unknown-void-target",
        ),
        ({"transactions": []}, 422, "empty-batch"),
    ],
    ids=[
        "malformed",
        "oversize",
        "unknown-type",
        "negative-sale",
        "future",
        "void-unknown",
        "empty",
    ],
)
async def test_bad_requests_are_clear_4xx_and_emit_nothing(
    gateway: httpx.AsyncClient,
    provisioned: KafkaSettings,
    body: Any,
    status: int,
    slug: str,
) -> None:
    if isinstance(body, bytes):
        response = await gateway.post(
            "/v1/pos/transactions", content=body, headers={"content-type": "application/json"}
        )
    else:
        response = await gateway.post("/v1/pos/transactions", json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith(slug), problem
    assert problem.get("detail") or problem.get("errors")
    assert await events_in_log(provisioned) == 0


async def test_terminal_gaps_are_reported_and_close_when_resent(
    gateway: httpx.AsyncClient,
) -> None:
    for n in (1, 2, 5, 9):
        posted = await gateway.post("/v1/pos/transactions", json=transaction(f"g-{n}", sequence=n))
        assert posted.status_code == 201, posted.text
    terminal = (await gateway.get(f"/v1/pos/terminals/{STORE}/t1")).json()
    assert terminal["missing"] == 5
    assert terminal["gaps"] == [[3, 4], [6, 8]]
    metrics = (await gateway.get("/metrics")).text
    assert "omnistock_pos_missing_transactions 5.0" in metrics
    assert "omnistock_pos_terminals_with_gaps 1.0" in metrics

    # The terminal resends what it had queued during an outage, out of order.
    resent = [transaction(f"g-{n}", sequence=n) for n in (8, 3, 7, 4, 6)]
    answer = (await gateway.post("/v1/pos/transactions", json=resent)).json()
    assert answer["accepted"] == 5
    terminal = (await gateway.get(f"/v1/pos/terminals/{STORE}/t1")).json()
    assert (terminal["missing"], terminal["gaps"], terminal["received"]) == (0, [], 9)
    unknown = await gateway.get(f"/v1/pos/terminals/{STORE}/t404")
    assert unknown.status_code == 404


async def test_sales_per_store_per_minute(gateway: httpx.AsyncClient) -> None:
    at = utcnow().replace(second=30, microsecond=0) - timedelta(minutes=3)
    posts = [
        transaction("m-1", sequence=1, occurred_at=at, lines=[line("SKU-1", 2, "10.00")]),
        transaction("m-2", sequence=2, occurred_at=at, lines=[line("SKU-2", 1, "5.50")]),
        transaction(
            "m-3", sequence=3, occurred_at=at, type="return", lines=[line("SKU-1", 1, "10.00")]
        ),
        transaction(
            "m-4",
            sequence=4,
            occurred_at=at + timedelta(minutes=1),
            type="void",
            voids_transaction_id="m-2",
        ),
    ]
    answer = (await gateway.post("/v1/pos/transactions", json=posts)).json()
    assert answer["accepted"] == 4, answer

    async def sales() -> list[dict[str, Any]] | None:
        since = (at - timedelta(minutes=1)).isoformat()
        response = await gateway.get("/v1/pos/sales", params={"store_id": STORE, "since": since})
        assert response.status_code == 200, response.text
        minutes: list[dict[str, Any]] = response.json()["minutes"]
        return minutes if minutes and minutes[0]["transactions"] == 2 else None

    minutes = await eventually(sales, timeout=20, message="sales read model")
    assert len(minutes) == 1
    # sale 2 x 10.00, sale 5.50 voided (in its own minute), return 1 x 10.00
    assert minutes[0]["units"] == 1
    assert float(minutes[0]["revenue"]) == 10.0


async def test_two_replicas_racing_on_one_transaction_record_it_once(
    make_settings: Callable[..., PosGatewaySettings], inventory: httpx.AsyncClient
) -> None:
    one = create_pos_gateway_app(make_settings(instance_id="pos-a"))
    two = create_pos_gateway_app(make_settings(instance_id="pos-b"))
    async with serving(one) as a, serving(two) as b:
        for n in range(20):
            sale = transaction(f"race-{n}", sequence=n + 1, lines=[line("SKU-RACE", 1)])
            answers = await asyncio.gather(
                a.post("/v1/pos/transactions", json=sale),
                b.post("/v1/pos/transactions", json=sale),
            )
            statuses = sorted(r.json()["status"] for r in answers)
            assert statuses == ["accepted", "duplicate"], [r.text for r in answers]
    await stock_is(inventory, {"SKU-RACE": -20})
