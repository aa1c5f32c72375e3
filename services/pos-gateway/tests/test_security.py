"""Who may call the pos-gateway, a terminal's key bound to its store, and what hostile
input does to it (nothing)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pos_support import transaction
from security_support import (
    Service,
    check_body_limits,
    check_hostile_fields,
    check_refusals_write_nothing,
    check_schemathesis,
    log_size,
    send_as,
    service_resources,
)

from omnistock.devstack.credentials import LocalIssuer, bearer
from omnistock.devstack.serving import serving
from omnistock.events.auth import route_scopes
from omnistock.pos_gateway.main import create_pos_gateway_app
from omnistock.pos_gateway.settings import PosGatewaySettings

pytestmark = pytest.mark.integration

#: The scope table of README's "Who may do what", for this service. pos:write is bound
#: to the key's store; stock:read sees every store.
SCOPES = {
    ("POST", "/v1/pos/transactions"): ("pos:write",),
    ("GET", "/v1/pos/terminals/{store_id}/{terminal_id}"): ("stock:read", "pos:write"),
    ("GET", "/v1/pos/sales"): ("stock:read", "pos:write"),
}


@pytest.fixture(scope="module")
async def service(kafka_bootstrap: str, postgres_url: str) -> AsyncIterator[Service]:
    async with service_resources(kafka_bootstrap, postgres_url, "pos") as (kafka, database):
        settings = PosGatewaySettings(
            database_url=database, kafka=kafka, instance_id="pos-gateway-security-0"
        )
        async with serving(create_pos_gateway_app(settings)) as client:
            yield Service(client, kafka)


def test_every_route_requires_its_scope() -> None:
    assert route_scopes(create_pos_gateway_app()) == SCOPES


async def test_bad_credentials_401_missing_scope_403_nothing_written(
    service: Service, local_issuer: LocalIssuer, tmp_path: Path
) -> None:
    await check_refusals_write_nothing(service, SCOPES, local_issuer, tmp_path)


async def test_a_terminal_key_posts_for_its_own_store_only(
    service: Service, local_issuer: LocalIssuer
) -> None:
    client = service.client
    berlin = bearer(local_issuer.token("pos", store_id="store-berlin"))
    hamburg = transaction("sec-hh-1", store_id="store-hamburg")
    before = await log_size(service.kafka)

    other_store = await send_as(client, "POST", "/v1/pos/transactions", berlin, json=hamburg)
    assert other_store.status_code == 403, other_store.text
    assert other_store.headers["content-type"] == "application/problem+json"
    # One foreign transaction in a batch refuses the whole batch: nothing is recorded.
    mixed = {"transactions": [transaction("sec-b-1", sequence=1), hamburg]}
    batch = await send_as(client, "POST", "/v1/pos/transactions", berlin, json=mixed)
    assert batch.status_code == 403, batch.text
    for path in ("/v1/pos/terminals/store-hamburg/t1", "/v1/pos/sales?store_id=store-hamburg"):
        assert (await send_as(client, "GET", path, berlin)).status_code == 403, path
    assert await log_size(service.kafka) == before

    own = await send_as(
        client, "POST", "/v1/pos/transactions", berlin, json=transaction("sec-b-2", sequence=2)
    )
    assert own.status_code == 201, own.text
    terminal = await send_as(client, "GET", "/v1/pos/terminals/store-berlin/t1", berlin)
    assert terminal.status_code == 200, terminal.text
    # Staff (stock:read) see every store's figures, and post nothing.
    staff = bearer(local_issuer.token("staff"))
    sales = await send_as(client, "GET", "/v1/pos/sales?store_id=store-hamburg", staff)
    assert sales.status_code == 200
    posted = await send_as(client, "POST", "/v1/pos/transactions", staff, json=hamburg)
    assert posted.status_code == 403


async def test_hostile_input_is_refused_and_nothing_is_written(service: Service) -> None:
    before = await log_size(service.kafka)
    client = service.client
    settings = PosGatewaySettings()
    await check_body_limits(client, "POST", "/v1/pos/transactions", settings.auth.max_body_bytes)
    await check_hostile_fields(
        client,
        "POST",
        "/v1/pos/transactions",
        transaction("hostile-1"),
        id_fields=("transaction_id", "store_id", "terminal_id", "lines.0.sku"),
        quantity_fields=("lines.0.quantity",),
        lists={"lines": 500},
        # A single invalid transaction is 422 (a batch answers per item); the gateway's
        # JSON parser refuses a lone surrogate outright (400).
        expect=lambda r: r.status_code in (400, 422),
    )
    huge = {"transactions": [transaction(f"h-{n}", sequence=n) for n in range(1001)]}
    response = await client.post("/v1/pos/transactions", json=huge)
    assert response.status_code == 413, response.text
    sequence = await client.post(
        "/v1/pos/transactions", json=transaction("hostile-2", sequence=2**63)
    )
    assert sequence.status_code == 422, sequence.text
    assert await log_size(service.kafka) == before


async def test_schemathesis_finds_no_server_error_or_schema_violation(service: Service) -> None:
    await check_schemathesis(service)
