"""The demo data: deterministic, valid for the API, and loaded step by step."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from omnistock.devstack import demo
from omnistock.events.catalogue import MAX_QUANTITY

_IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}$")


def test_stores_and_a_warehouse_in_germany() -> None:
    kinds = [loc.kind for loc in demo.LOCATIONS]
    assert kinds.count("store") >= 3
    assert kinds.count("warehouse") >= 1
    for loc in demo.LOCATIONS:
        assert _IDENTIFIER.match(loc.location_id)
        assert 47.2 < loc.latitude < 55.1
        assert 5.8 < loc.longitude < 15.1
    assert len({loc.location_id for loc in demo.LOCATIONS}) == len(demo.LOCATIONS)


def test_every_sku_is_received_once_at_every_location_within_the_line_limit() -> None:
    skus = demo.skus()
    assert (skus[0], skus[-1], len(skus)) == ("SKU-000001", "SKU-001000", demo.SKU_COUNT)
    for location in demo.LOCATIONS:
        bodies = list(demo.receipts(location))
        assert all(len(body["lines"]) <= demo.MAX_RECEIPT_LINES for body in bodies)
        assert [line["sku"] for body in bodies for line in body["lines"]] == skus
        assert all(body["location_id"] == location.location_id for body in bodies)
        assert all(_IDENTIFIER.match(body["receipt_id"]) for body in bodies)
        assert all(
            0 < line["quantity"] <= MAX_QUANTITY for body in bodies for line in body["lines"]
        )


def test_loading_again_sends_the_same_ids_and_quantities() -> None:
    first = [body for loc in demo.LOCATIONS for body in demo.receipts(loc)]
    again = [body for loc in demo.LOCATIONS for body in demo.receipts(loc)]
    assert first == again
    assert len({body["receipt_id"] for body in first}) == len(first)
    # Varied, so that "where else is it in stock?" has interesting answers.
    assert len({demo.quantity(sku, demo.LOCATIONS[0]) for sku in demo.skus()}) > 10


async def test_steps_of_services_that_are_not_running_are_skipped() -> None:
    seen: list[str] = []

    async def orders_step(ctx: demo.Context) -> str:
        seen.append(ctx.url("orders", "/v1/orders"))
        return "3 orders"

    reported: list[str] = []
    steps = [*demo.STEPS, demo.Step("orders", "open orders", orders_step)]

    summaries = await demo.load(
        {"orders": "http://127.0.0.1:9"}, report=reported.append, timeout=5, steps=steps
    )

    assert seen == ["http://127.0.0.1:9/v1/orders"]
    assert summaries == [
        "inventory stores and warehouse: skipped, inventory is not installed",
        "inventory stock: skipped, inventory is not installed",
        "replenishment reorder rules: skipped, replenishment is not installed",
        "orders open orders: 3 orders",
    ]
    assert reported == [f"demo data: {line}" for line in summaries]


async def test_a_wait_that_does_not_end_names_what_is_missing() -> None:
    async def never() -> set[str]:
        return {"receipt-2", "receipt-1"}

    async def waiting_step(ctx: demo.Context) -> str:
        await ctx.until(never, "receipts shown")
        return "unreachable"

    with pytest.raises(
        demo.DemoDataError, match="receipts shown: still missing receipt-1, receipt-2"
    ):
        await demo.load(
            {"inventory": "http://127.0.0.1:9"},
            report=lambda _: None,
            timeout=0.1,
            steps=[demo.Step("inventory", "wait", waiting_step)],
        )


async def test_a_503_is_asked_again_after_its_retry_after_until_the_deadline() -> None:
    """A service that cannot confirm a write answers 503 with Retry-After; the loader asks
    again (its writes are idempotent) and fails only when the deadline is past."""
    answers = iter([503, 503, 201])
    calls: list[str] = []

    def service(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        status = next(answers)
        return httpx.Response(status, headers={"retry-after": "0"}, json={"status": status})

    async with httpx.AsyncClient(transport=httpx.MockTransport(service)) as client:
        loop = asyncio.get_running_loop()
        ctx = demo.Context(client, {"inventory": "http://inventory"}, loop.time() + 5)
        assert await ctx.send("inventory", "POST", "/v1/receipts", {}) == {"status": 201}
        assert calls == ["/v1/receipts"] * 3

        late = demo.Context(client, {"inventory": "http://inventory"}, loop.time() - 1)
        answers = iter([503])
        with pytest.raises(demo.DemoDataError, match="answered 503"):
            await late.send("inventory", "POST", "/v1/receipts", {})
