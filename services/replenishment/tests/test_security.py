"""Who may call the replenishment API, and what hostile input does to it (nothing)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from security_support import (
    Service,
    check_body_limits,
    check_hostile_fields,
    check_refusals_write_nothing,
    check_schemathesis,
    log_size,
    service_resources,
)

from omnistock.devstack.credentials import LocalIssuer, bearer
from omnistock.devstack.serving import serving
from omnistock.events.auth import route_scopes
from omnistock.replenishment.main import create_replenishment_app
from omnistock.replenishment.settings import ReplenishmentSettings

pytestmark = pytest.mark.integration

READ = ("stock:read", "rules:write")
#: The scope table of README's "Who may do what", for this service.
SCOPES = {
    ("PUT", "/v1/rules"): ("rules:write",),
    ("PUT", "/v1/rules/{location_id}/{sku}"): ("rules:write",),
    ("GET", "/v1/rules"): READ,
    ("GET", "/v1/replenishments"): READ,
    ("GET", "/v1/replenishments/{replenishment_id}"): READ,
    ("POST", "/v1/replenishments/{replenishment_id}/dispatch"): ("receipts:write",),
    ("GET", "/v1/suggestions"): READ,
}

RULE = {"reorder_point": 5, "order_up_to": 20, "lead_time_hours": 24, "source_location_id": "wh"}


@pytest.fixture(scope="module")
async def service(kafka_bootstrap: str, postgres_url: str) -> AsyncIterator[Service]:
    async with service_resources(kafka_bootstrap, postgres_url, "replenishment") as (
        kafka,
        database,
    ):
        settings = ReplenishmentSettings(
            database_url=database, kafka=kafka, instance_id="replenishment-security-0"
        )
        async with serving(create_replenishment_app(settings)) as client:
            yield Service(client, kafka)


def test_every_route_requires_its_scope() -> None:
    assert route_scopes(create_replenishment_app()) == SCOPES


async def test_bad_credentials_401_missing_scope_403_nothing_written(
    service: Service, local_issuer: LocalIssuer, tmp_path: Path
) -> None:
    await check_refusals_write_nothing(service, SCOPES, local_issuer, tmp_path)
    # Staff read what the merchandisers set up.
    staff = bearer(local_issuer.token("staff"))
    listed = await service.client.get("/v1/replenishments", headers=staff)
    assert listed.status_code == 200, listed.text


async def test_hostile_input_is_refused_and_nothing_is_written(service: Service) -> None:
    before = await log_size(service.kafka)
    client = service.client
    limit = ReplenishmentSettings().auth.max_body_bytes
    await check_body_limits(client, "PUT", "/v1/rules/store-1/SKU-1", limit)
    await check_hostile_fields(
        client,
        "PUT",
        "/v1/rules/store-1/SKU-1",
        RULE,
        id_fields=("source_location_id",),
        quantity_fields=("reorder_point", "order_up_to", "safety_stock", "pack_size"),
    )
    for method, path in (
        ("PUT", "/v1/rules/%F0%9F%92%A5/SKU-1"),
        ("PUT", "/v1/rules/store-1/a%00b"),
        ("GET", "/v1/replenishments/abc%0A"),
        ("POST", "/v1/replenishments/abc%0A/dispatch"),
    ):
        response = await client.request(method, path, json=RULE if method == "PUT" else None)
        assert response.status_code == 422, (method, path, response.text)
    page = await client.get("/v1/replenishments", params={"limit": 100_000})
    assert page.status_code == 422
    assert await log_size(service.kafka) == before


async def test_schemathesis_finds_no_server_error_or_schema_violation(service: Service) -> None:
    await check_schemathesis(service)
