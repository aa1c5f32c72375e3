"""Who may call the inventory API, and what hostile input does to it (nothing)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from inventory_support import receive, register_demo_locations
from security_support import (
    Service,
    check_body_limits,
    check_hostile_fields,
    check_refusals_write_nothing,
    check_schemathesis,
    log_size,
    send_json,
    service_resources,
    with_field,
)

from omnistock.devstack.credentials import LocalIssuer, bearer
from omnistock.devstack.serving import serving
from omnistock.events.auth import route_scopes
from omnistock.inventory.main import create_inventory_app
from omnistock.inventory.settings import InventorySettings

pytestmark = pytest.mark.integration

#: The scope table of README's "Who may do what", for this service.
SCOPES = {
    ("PUT", "/v1/locations/{location_id}"): ("admin",),
    ("GET", "/v1/locations"): ("stock:read",),
    ("POST", "/v1/receipts"): ("receipts:write",),
    ("POST", "/v1/adjustments"): ("stock:adjust",),
    ("POST", "/v1/reservations"): ("reservations:write",),
    ("GET", "/v1/reservations/{reservation_id}"): ("reservations:write",),
    ("POST", "/v1/reservations/{reservation_id}/commit"): ("reservations:write",),
    ("POST", "/v1/reservations/{reservation_id}/release"): ("reservations:write",),
    ("POST", "/v1/reservations/{reservation_id}/extend"): ("reservations:write",),
    ("GET", "/v1/stock/{sku}"): ("stock:read",),
    ("GET", "/v1/locations/{location_id}/stock"): ("stock:read",),
    ("GET", "/v1/stock/{sku}/movements"): ("stock:read",),
}


@pytest.fixture(scope="module")
async def service(kafka_bootstrap: str, postgres_url: str) -> AsyncIterator[Service]:
    async with service_resources(kafka_bootstrap, postgres_url, "inventory") as (kafka, database):
        settings = InventorySettings(
            database_url=database,
            kafka=kafka,
            instance_id="inventory-security-0",
            decision_timeout_s=2.0,
            consistency_timeout_s=0.5,
        )
        async with serving(create_inventory_app(settings)) as client:
            await register_demo_locations(client)
            await receive(client, "rc-sec-1", "wh-kassel", SKU_1=10)
            yield Service(client, kafka)


def test_every_route_requires_its_scope() -> None:
    assert route_scopes(create_inventory_app()) == SCOPES


async def test_bad_credentials_401_missing_scope_403_nothing_written(
    service: Service, local_issuer: LocalIssuer, tmp_path: Path
) -> None:
    await check_refusals_write_nothing(service, SCOPES, local_issuer, tmp_path)
    # Each role does what it is for.
    client = service.client
    staff = bearer(local_issuer.token("staff"))
    assert (await client.get("/v1/stock/SKU-1", headers=staff)).status_code == 200
    ec = bearer(local_issuer.token("ec"))
    held = await client.post(
        "/v1/reservations",
        json={"reservation_id": "sec-cart-1", "lines": [{"sku": "SKU-1", "quantity": 1}]},
        headers=ec,
    )
    assert held.status_code == 201, held.text
    warehouse = bearer(local_issuer.token("warehouse"))
    received = await client.post(
        "/v1/receipts",
        json={
            "receipt_id": "sec-rc-2",
            "location_id": "wh-kassel",
            "lines": [{"sku": "SKU-1", "quantity": 1}],
        },
        headers=warehouse,
    )
    assert received.status_code == 201, received.text
    # ...and not what it is not for.
    refused = await client.post(
        "/v1/receipts",
        json={"receipt_id": "sec-rc-3", "location_id": "wh-kassel", "lines": []},
        headers=ec,
    )
    assert refused.status_code == 403


async def test_hostile_input_is_refused_and_nothing_is_written(service: Service) -> None:
    before = await log_size(service.kafka)
    client = service.client
    await check_body_limits(
        client, "POST", "/v1/reservations", InventorySettings().auth.max_body_bytes
    )
    await check_hostile_fields(
        client,
        "POST",
        "/v1/reservations",
        {"reservation_id": "hostile-1", "lines": [{"sku": "SKU-1", "quantity": 1}]},
        id_fields=("reservation_id", "lines.0.sku"),
        quantity_fields=("lines.0.quantity", "ttl_seconds"),
        lists={"lines": 100},
    )
    await check_hostile_fields(
        client,
        "POST",
        "/v1/receipts",
        {
            "receipt_id": "hostile-2",
            "location_id": "wh-kassel",
            "lines": [{"sku": "S", "quantity": 1}],
        },
        id_fields=("receipt_id", "location_id", "lines.0.sku"),
        quantity_fields=("lines.0.quantity",),
        lists={"lines": 1000},
    )
    location = {
        "name": "X",
        "kind": "store",
        "region": "DE",
        "latitude": 1.0,
        "longitude": 1.0,
        "fulfils_online": False,
    }
    for field, value in (
        ("name", "a\u0000b"),
        ("name", "line\nbreak"),
        ("name", "\ud800"),
        ("name", "x" * 201),
        ("region", "\u0007"),
        ("latitude", 91),
        ("longitude", -181),
        ("kind", "moon"),
    ):
        response = await send_json(
            client, "PUT", "/v1/locations/store-x", with_field(location, field, value)
        )
        assert response.status_code == 422, (field, value, response.text)
    for path in (
        "/v1/stock/%F0%9F%92%A5",
        "/v1/stock/a%00b",
        "/v1/stock/abc%0A",
        "/v1/stock/" + "x" * 10_000,
    ):
        response = await client.get(path)
        assert 400 <= response.status_code < 500, (path, response.text)
    page = await client.get("/v1/locations/wh-kassel/stock", params={"limit": 100_000})
    assert page.status_code == 422
    assert await log_size(service.kafka) == before


async def test_schemathesis_finds_no_server_error_or_schema_violation(service: Service) -> None:
    await check_schemathesis(service)
