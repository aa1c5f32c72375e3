"""POS sales to replenishment and back, against the real broker and PostgreSQL: inventory,
the pos-gateway and the replenishment service running, talking only through the log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from inventory_support import receive, register_demo_locations
from replenishment_support import (
    Till,
    chain_units,
    figures,
    read_model_hash,
    records_by_type,
    replayed_hash,
    requests_of,
)

from omnistock.devstack.serving import serving
from omnistock.devstack.waiting import eventually
from omnistock.replenishment.main import create_replenishment_app
from omnistock.replenishment.settings import ReplenishmentSettings

pytestmark = pytest.mark.integration

STORE, WAREHOUSE = "store-berlin", "wh-kassel"
SKU, UNRULED = "SKU-R1", "SKU-R2"
#: The machine is shared and loaded: generous deadlines, never a timing assertion.
DEADLINE_S = 30.0


async def rule_figures(replenishment: httpx.AsyncClient) -> dict[str, Any]:
    response = await replenishment.get("/v1/rules", params={"location_id": STORE, "sku": SKU})
    assert response.status_code == 200, response.text
    rules = response.json()
    return dict(rules[0]) if rules else {}


async def test_sales_below_the_reorder_point_request_once_until_received(
    inventory: httpx.AsyncClient,
    pos: httpx.AsyncClient,
    make_settings: Callable[..., ReplenishmentSettings],
    new_database: Callable[[str], Any],
    database_url: str,
) -> None:
    await register_demo_locations(inventory)
    await receive(inventory, "start-store", STORE, SKU_R1=12, SKU_R2=10)
    await receive(inventory, "start-wh", WAREHOUSE, SKU_R1=100)
    till = Till(pos, STORE)
    kafka = make_settings().kafka

    async with serving(create_replenishment_app(make_settings())) as replenishment:
        response = await replenishment.put(
            f"/v1/rules/{STORE}/{SKU}",
            json={
                "reorder_point": 5,
                "order_up_to": 20,
                "lead_time_hours": 24,
                "source_location_id": WAREHOUSE,
            },
        )
        assert response.status_code == 200, response.text

        async def seen(available: int) -> bool:
            return (await rule_figures(replenishment)).get("available") == available

        await eventually(lambda: seen(12), timeout=DEADLINE_S, message="rule with figures")

        # Sold down to the reorder point: exactly one request, for order_up_to - available.
        await till.sell(SKU, 3)
        await till.sell(SKU, 4)
        await till.sell(UNRULED, 4)

        async def one_request() -> list[dict[str, Any]]:
            return await requests_of(replenishment, location_id=STORE)

        [request] = await eventually(one_request, timeout=DEADLINE_S, message="a request")
        assert (request["sku"], request["quantity"], request["status"]) == (SKU, 15, "requested")
        assert (request["available"], request["inbound"], request["source_location_id"]) == (
            5,
            0,
            WAREHOUSE,
        )
        assert request["velocity_per_day"] == 7.0
        assert request["days_of_cover"] == round(5 / 7, 2)
        rid = request["replenishment_id"]

        # More sales while it is open: seen by the planner, and no second request.
        await till.sell(SKU, 2)
        await eventually(lambda: seen(3), timeout=DEADLINE_S, message="the planner saw 3 left")
        assert [r["replenishment_id"] for r in await requests_of(replenishment)] == [rid]

        metrics_text = (await replenishment.get("/metrics")).text
        for line in (
            f'omnistock_replenishment_open_requests{{location_id="{STORE}"}} 1.0',
            f'omnistock_replenishment_skus_below_reorder_point{{location_id="{STORE}"}} 1.0',
        ):

            async def exported(line: str = line) -> bool:
                return line in (await replenishment.get("/metrics")).text

            await eventually(exported, timeout=DEADLINE_S, message=line)
        assert "omnistock_replenishment_oldest_open_request_age_seconds" in metrics_text

        # The SKU without a rule is proposed one from its sales.
        async def suggested() -> list[dict[str, Any]]:
            answer = await replenishment.get("/v1/suggestions", params={"location_id": STORE})
            assert answer.status_code == 200, answer.text
            return list(answer.json())

        suggestions = await eventually(suggested, timeout=DEADLINE_S, message="a suggestion")
        assert [s["sku"] for s in suggestions] == [UNRULED]
        assert suggestions[0]["velocity_per_day"] == round(4 / 7, 4)

        # Dispatch: the units leave the warehouse and are on their way, none lost or made.
        units = chain_units(await figures(inventory, SKU))
        response = await replenishment.post(f"/v1/replenishments/{rid}/dispatch")
        assert response.status_code == 202, response.text

        async def in_transit() -> dict[str, dict[str, int]] | None:
            stock = await figures(inventory, SKU)
            return stock if stock[STORE]["incoming"] == 15 else None

        stock = await eventually(in_transit, timeout=DEADLINE_S, message="units in transit")
        assert stock[WAREHOUSE]["on_hand"] == 85
        assert chain_units(stock) == units

        async def status(expected: str) -> bool:
            r = await replenishment.get(f"/v1/replenishments/{rid}")
            return bool(r.json()["status"] == expected)

        await eventually(lambda: status("dispatched"), timeout=DEADLINE_S, message="dispatched")
        # The warehouse lost the answer and dispatches again: the same answer, moved once.
        again = await replenishment.post(f"/v1/replenishments/{rid}/dispatch")
        assert again.status_code == 202, again.text
        assert again.json()["quantity"] == 15

        # Received in two parts: the request closes with the second.
        await _receive_for(inventory, rid, "rc-part-1", 10)
        await eventually(
            lambda: _received(replenishment, rid, 10), timeout=DEADLINE_S, message="first part"
        )
        assert (await replenishment.get(f"/v1/replenishments/{rid}")).json()["status"] == (
            "dispatched"
        )
        await _receive_for(inventory, rid, "rc-part-2", 5)
        await eventually(lambda: status("received"), timeout=DEADLINE_S, message="received")
        stock = await figures(inventory, SKU)
        assert (stock[STORE]["on_hand"], stock[STORE]["incoming"]) == (18, 0)
        assert stock[WAREHOUSE]["on_hand"] == 85
        assert chain_units(stock) == units
        late = await replenishment.post(f"/v1/replenishments/{rid}/dispatch")
        assert late.status_code == 409, late.text
        assert late.headers["content-type"] == "application/problem+json"

        # The next dip opens the next request.
        await eventually(lambda: seen(18), timeout=DEADLINE_S, message="the planner saw 18")
        assert len(await requests_of(replenishment, status="requested")) == 0
        await till.sell(SKU, 14)

        async def second() -> list[dict[str, Any]]:
            return await requests_of(replenishment, status="requested")

        [next_request] = await eventually(second, timeout=DEADLINE_S, message="second request")
        assert next_request["quantity"] == 16
        assert next_request["replenishment_id"] != rid

    before = await records_by_type(kafka)
    assert before["ReplenishmentRequested"] == before["LowStockDetected"] == 2
    state = await read_model_hash(database_url)
    assert state == await replayed_hash(kafka)

    # A restart on the same database, then a rebuild into an empty one: the same state,
    # and not one request or detection written again.
    left = 4
    for database in (database_url, await new_database("replenishment_rebuilt")):
        async with serving(
            create_replenishment_app(make_settings(database_url=database))
        ) as replenishment:
            await till.sell(SKU, 1)  # while a request is open: still nothing new
            left -= 1
            await eventually(
                lambda left=left: seen(left), timeout=DEADLINE_S, message="the sale after it"
            )
            assert len(await requests_of(replenishment)) == 2
        after = await records_by_type(kafka)
        assert after["ReplenishmentRequested"] == after["LowStockDetected"] == 2
        assert await read_model_hash(database) == await replayed_hash(kafka)
        assert await read_model_hash(database) != state  # the sale after the restart counted
        state = await read_model_hash(database)


async def _receive_for(inventory: httpx.AsyncClient, rid: str, receipt_id: str, qty: int) -> None:
    response = await inventory.post(
        "/v1/receipts",
        json={
            "receipt_id": receipt_id,
            "location_id": STORE,
            "replenishment_id": rid,
            "lines": [{"sku": SKU, "quantity": qty}],
        },
    )
    assert response.status_code == 201, response.text


async def _received(replenishment: httpx.AsyncClient, rid: str, quantity: int) -> bool:
    body = (await replenishment.get(f"/v1/replenishments/{rid}")).json()
    return bool(body["received_quantity"] == quantity)
