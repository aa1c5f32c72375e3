"""Replicas racing for the same stock: the log decides, so nothing is oversold."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from inventory_support import Clock, receive, register_demo_locations

from omnistock.devstack.serving import serving
from omnistock.devstack.waiting import eventually
from omnistock.inventory.main import create_inventory_app
from omnistock.inventory.settings import InventorySettings

pytestmark = pytest.mark.integration


async def total(client: httpx.AsyncClient, sku: str, figure: str) -> int:
    response = await client.get(f"/v1/stock/{sku}")
    assert response.status_code == 200, response.text
    value: int = response.json()["totals"][figure]
    return value


async def test_two_replicas_never_oversell_and_carts_are_all_or_nothing(
    make_settings: Callable[..., InventorySettings], clock: Clock
) -> None:
    replica_a = create_inventory_app(make_settings(instance_id="inventory-a"), clock=clock)
    replica_b = create_inventory_app(make_settings(instance_id="inventory-b"), clock=clock)
    async with serving(replica_a) as a, serving(replica_b) as b:
        await register_demo_locations(a)
        await receive(a, "rc-hot-wh", "wh-kassel", SKU_HOT=30)
        position = await receive(b, "rc-hot-be", "store-berlin", SKU_HOT=20)
        assert (await b.get("/v1/stock/SKU-HOT", params={"consistent_with": position})).json()[
            "totals"
        ]["available"] == 50

        # Round 1: 200 shoppers, one unit each, half through each replica, all at once.
        async def shop(n: int) -> int:
            client = a if n % 2 else b
            response = await client.post(
                "/v1/reservations",
                json={"reservation_id": f"hot-{n}", "lines": [{"sku": "SKU-HOT", "quantity": 1}]},
            )
            assert response.status_code in (201, 409), response.text
            return response.status_code

        statuses = await asyncio.gather(*(shop(n) for n in range(200)))
        assert statuses.count(201) == 50
        assert statuses.count(409) == 150

        async def settled_hot() -> bool:
            return await total(a, "SKU-HOT", "held") == 50

        await eventually(settled_hot, message="exactly the 50 acknowledged units are held")
        assert await total(b, "SKU-HOT", "available") == 0

        # Round 2: carts over SKUs in different partitions, racing for short stock.
        skus = [f"SKU-C{n}" for n in range(6)]
        await receive(a, "rc-carts", "wh-kassel", **{s.replace("-", "_"): 10 for s in skus})
        rng = random.Random(7)
        carts = {
            f"cart-{n}": {s: rng.randint(1, 3) for s in rng.sample(skus, rng.randint(2, 3))}
            for n in range(80)
        }

        async def checkout(cart_id: str, lines: dict[str, int]) -> tuple[str, Any]:
            client = a if hash(cart_id) % 2 else b
            response = await client.post(
                "/v1/reservations",
                json={
                    "reservation_id": cart_id,
                    "lines": [{"sku": s, "quantity": q} for s, q in lines.items()],
                },
            )
            assert response.status_code in (201, 409), response.text
            return cart_id, response

        results = await asyncio.gather(*(checkout(c, lines) for c, lines in carts.items()))
        held = [cart for cart, response in results if response.status_code == 201]
        assert held, "some carts must fit"
        assert len(held) < len(carts), "the stock is too short for every cart"
        for cart, response in results:
            if response.status_code == 201:
                got: dict[str, int] = {}
                for line in response.json()["lines"]:
                    got[line["sku"]] = got.get(line["sku"], 0) + line["quantity"]
                assert got == carts[cart], "a held cart holds every line"

        expected = {s: sum(carts[c].get(s, 0) for c in held) for s in skus}

        async def only_held_carts_hold_stock() -> dict[str, int] | None:
            seen = {s: await total(b, s, "held") for s in skus}
            return seen if seen == expected else None

        # Rejected carts give back what their other SKUs held, once their sagas settle.
        await eventually(
            only_held_carts_hold_stock,
            timeout=20,
            message="held stock equals exactly the acknowledged carts",
        )
        for s in skus:
            assert await total(a, s, "held") <= 10
