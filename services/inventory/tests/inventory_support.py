"""Helpers shared by the inventory tests."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx

from omnistock.events.envelope import utcnow


class Clock:
    """Real time plus an offset a test can move forward."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return utcnow() + self.offset


async def register_demo_locations(client: httpx.AsyncClient) -> None:
    for location_id, kind, lat, lon, online in (
        ("wh-kassel", "warehouse", 51.31, 9.49, True),
        ("store-berlin", "store", 52.52, 13.41, True),
        ("store-hamburg", "store", 53.55, 9.99, False),
    ):
        response = await client.put(
            f"/v1/locations/{location_id}",
            json={
                "name": location_id,
                "kind": kind,
                "region": "DE",
                "latitude": lat,
                "longitude": lon,
                "fulfils_online": online,
            },
        )
        assert response.status_code == 200, response.text


async def receive(client: httpx.AsyncClient, receipt_id: str, location_id: str, **skus: int) -> str:
    response = await client.post(
        "/v1/receipts",
        json={
            "receipt_id": receipt_id,
            "location_id": location_id,
            "lines": [{"sku": sku.replace("_", "-"), "quantity": q} for sku, q in skus.items()],
        },
    )
    assert response.status_code == 201, response.text
    position: str = response.json()["position"]
    return position
