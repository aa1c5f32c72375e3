"""Who may call the orders API, and what hostile input does to it (nothing)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from orders_support import order_body
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
from omnistock.orders.main import create_orders_app
from omnistock.orders.settings import OrdersSettings

pytestmark = pytest.mark.integration

#: The scope table of README's "Who may do what", for this service.
SCOPES = {
    ("POST", "/v1/orders"): ("orders:write",),
    ("GET", "/v1/orders"): ("orders:write",),
    ("GET", "/v1/orders/{order_id}"): ("orders:write",),
    ("POST", "/v1/orders/{order_id}/cancel"): ("orders:write",),
    ("POST", "/v1/orders/{order_id}/fulfil"): ("orders:write",),
}


@pytest.fixture(scope="module")
async def service(kafka_bootstrap: str, postgres_url: str) -> AsyncIterator[Service]:
    async with service_resources(kafka_bootstrap, postgres_url, "orders") as (kafka, database):
        settings = OrdersSettings(
            database_url=database,
            kafka=kafka,
            instance_id="orders-security-0",
            # No inventory runs here: placed orders stay placed, answered 202 quickly.
            decision_timeout_s=0.2,
            consistency_timeout_s=0.5,
        )
        async with serving(create_orders_app(settings)) as client:
            yield Service(client, kafka)


def test_every_route_requires_its_scope() -> None:
    assert route_scopes(create_orders_app()) == SCOPES


async def test_bad_credentials_401_missing_scope_403_nothing_written(
    service: Service, local_issuer: LocalIssuer, tmp_path: Path
) -> None:
    await check_refusals_write_nothing(service, SCOPES, local_issuer, tmp_path)
    # The EC's own credential does what it is for.
    ec = bearer(local_issuer.token("ec"))
    placed = await service.client.post(
        "/v1/orders", json=order_body("sec-ok-1", "res-sec-ok-1", SKU_1=1), headers=ec
    )
    assert placed.status_code in (201, 202), placed.text


async def test_hostile_input_is_refused_and_nothing_is_written(service: Service) -> None:
    before = await log_size(service.kafka)
    client = service.client
    await check_body_limits(client, "POST", "/v1/orders", service_limit())
    await check_hostile_fields(
        client,
        "POST",
        "/v1/orders",
        order_body("hostile-1", "res-hostile-1", SKU_1=1),
        id_fields=("order_id", "reservation_id", "customer_id", "lines.0.sku"),
        quantity_fields=("lines.0.quantity",),
        lists={"lines": 100},
    )
    for path in ("/v1/orders/%F0%9F%92%A5", "/v1/orders/a%00b", "/v1/orders/abc%0A"):
        response = await client.get(path)
        assert response.status_code == 422, (path, response.text)
    page = await client.get("/v1/orders", params={"limit": 100_000})
    assert page.status_code == 422
    assert await log_size(service.kafka) == before


def service_limit() -> int:
    return OrdersSettings().auth.max_body_bytes


async def test_schemathesis_finds_no_server_error_or_schema_violation(service: Service) -> None:
    await check_schemathesis(service)
