"""Reorder rules through the API: bad ones are refused naming the field, a bulk upload
records its good rows and reports each bad one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from omnistock.devstack.serving import serving
from omnistock.devstack.waiting import eventually
from omnistock.events.catalogue import LocationRegistered
from omnistock.events.producer import EventProducer
from omnistock.replenishment.main import create_replenishment_app
from omnistock.replenishment.settings import ReplenishmentSettings

pytestmark = pytest.mark.integration

GOOD = {"reorder_point": 5, "order_up_to": 20, "lead_time_hours": 24, "source_location_id": "wh"}


def problem_fields(response: httpx.Response, status: int = 422) -> list[str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return [error["field"] for error in response.json()["errors"]]


async def test_rules_are_validated_one_by_one_and_in_bulk(
    make_settings: Callable[..., ReplenishmentSettings],
) -> None:
    settings = make_settings()
    async with EventProducer(settings.kafka, source="/test") as producer:
        for location_id, kind in (("wh", "warehouse"), ("s1", "store"), ("s2", "store")):
            await producer.publish(
                LocationRegistered(
                    location_id=location_id,
                    name=location_id,
                    kind=kind,
                    region="DE",
                    latitude=50.0,
                    longitude=9.0,
                    fulfils_online=False,
                )
            )
    async with serving(create_replenishment_app(settings)) as api:

        async def put(location_id: str, sku: str, **changes: Any) -> httpx.Response:
            return await api.put(f"/v1/rules/{location_id}/{sku}", json={**GOOD, **changes})

        assert (await put("s1", "SKU-1")).status_code == 200
        assert problem_fields(await put("s1", "SKU-1", order_up_to=4)) == ["order_up_to"]
        assert problem_fields(await put("s1", "SKU-1", reorder_point=-1)) == ["reorder_point"]
        assert problem_fields(await put("s1", "SKU-1", pack_size=0)) == ["pack_size"]
        assert problem_fields(await put("nowhere", "SKU-1")) == ["location_id"]
        assert problem_fields(await put("s1", "SKU-1", source_location_id="nowhere")) == [
            "source_location_id"
        ]
        assert problem_fields(await put("s1", "SKU-1", source_location_id="s1")) == [
            "source_location_id"
        ]

        csv = (
            "location_id,sku,reorder_point,order_up_to,lead_time_hours,source_location_id,"
            "pack_size\n"
            "s1,SKU-2,5,20,24,wh,6\n"
            "s1,SKU-3,10,4,24,wh,\n"  # order_up_to below the reorder point
            "s2,SKU-2,-3,20,24,wh,\n"  # negative
            "s9,SKU-2,5,20,24,wh,\n"  # unknown location
            "s2,SKU-3,1,2,48,wh,\n"
        )
        response = await api.put("/v1/rules", content=csv, headers={"content-type": "text/csv"})
        assert response.status_code == 200, response.text
        report = response.json()
        assert report["applied"] == 2
        assert [(r["row"], [e["field"] for e in r["errors"]]) for r in report["rejected"]] == [
            (2, ["order_up_to"]),
            (3, ["reorder_point"]),
            (4, ["location_id"]),
        ]

        bad_only = [{**GOOD, "location_id": "s1", "sku": "SKU-4", "lead_time_hours": -1}]
        assert problem_fields(await api.put("/v1/rules", json=bad_only)) == ["[1].lead_time_hours"]
        # The dev stack's demo sends its rules wrapped (see omnistock.devstack.demo).
        wrapped = await api.put("/v1/rules", json={"rules": bad_only})
        assert problem_fields(wrapped) == ["[1].lead_time_hours"]
        assert (
            await api.put("/v1/rules", content=b"x", headers={"content-type": "text/plain"})
        ).status_code == 415

        async def listed() -> list[tuple[str, str, int]]:
            rules = (await api.get("/v1/rules")).json()
            return [(r["location_id"], r["sku"], r["pack_size"]) for r in rules]

        expected = [("s1", "SKU-1", 1), ("s1", "SKU-2", 6), ("s2", "SKU-3", 1)]
        await eventually(
            lambda: _equal(listed, expected), timeout=30, message="the good rules listed"
        )
        only_s2 = (await api.get("/v1/rules", params={"location_id": "s2"})).json()
        assert [r["sku"] for r in only_s2] == ["SKU-3"]


async def _equal(read: Callable[[], Any], expected: object) -> bool:
    return bool(await read() == expected)
