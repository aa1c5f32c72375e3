"""The gate in front of every API: authentication, rate limits, body limits, scopes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from omnistock.devstack.credentials import LocalIssuer, bearer
from omnistock.events.auth import Principal, require, require_store
from omnistock.events.http import Health, create_app
from omnistock.events.settings import AuthSettings, KafkaSettings


def client_for(settings: AuthSettings) -> httpx.AsyncClient:
    health = Health()
    health.unblock("starting")
    app = create_app(title="t", description="t", version="0", health=health, auth=settings)

    @app.get("/stock", dependencies=[require("stock:read")])
    async def stock() -> dict[str, str]:
        return {"ok": "yes"}

    @app.post("/stores/{store_id}/sales")
    async def sale(
        store_id: str, principal: Annotated[Principal, require("pos:write")]
    ) -> dict[str, str]:
        require_store(principal, [store_id])
        return {"by": principal.subject}

    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://t")


def settings_of(issuer: LocalIssuer, **overrides: object) -> AuthSettings:
    values = {name[5:].lower(): value for name, value in issuer.env.items()}
    return AuthSettings(**{**values, **overrides})


async def test_probes_metrics_and_the_api_description_are_open_the_rest_is_not(
    local_issuer: LocalIssuer,
) -> None:
    async with client_for(settings_of(local_issuer)) as client:
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
            assert (await client.get(path)).status_code == 200, path
        for path in ("/stock", "/nowhere"):
            # An unknown path is refused like a known one: 401 says nothing about routes.
            response = await client.get(path)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"].startswith('Bearer realm="omnistock"')
        schema = (await client.get("/openapi.json")).json()
        assert schema["paths"]["/stock"]["get"]["security"] == [{"HTTPBearer": ["stock:read"]}]


async def test_scopes_and_stores(local_issuer: LocalIssuer) -> None:
    async with client_for(settings_of(local_issuer)) as client:
        staff = bearer(local_issuer.token("staff"))
        assert (await client.get("/stock", headers=staff)).status_code == 200
        assert (await client.post("/stores/s1/sales", headers=staff)).status_code == 403
        pos = bearer(local_issuer.token("pos", store_id="s1"))
        assert (await client.post("/stores/s1/sales", headers=pos)).status_code == 200
        refused = await client.post("/stores/s2/sales", headers=pos)
        assert refused.status_code == 403
        assert refused.headers["content-type"] == "application/problem+json"
        assert (await client.get("/stock", headers=pos)).status_code == 403
        # A JWT with pos:write but no store binding acts for no store.
        unbound = bearer(local_issuer.jwt(["pos:write"], subject="till"))
        assert (await client.post("/stores/s1/sales", headers=unbound)).status_code == 403
        admin = bearer(local_issuer.token("admin"))
        assert (await client.post("/stores/s2/sales", headers=admin)).status_code == 200


async def test_a_credential_over_its_rate_gets_429_with_retry_after(
    local_issuer: LocalIssuer,
) -> None:
    settings = settings_of(local_issuer, rate_per_s=0.5, rate_burst=3)
    async with client_for(settings) as client:
        first = bearer(local_issuer.token("staff"))
        answers = [(await client.get("/stock", headers=first)).status_code for _ in range(4)]
        assert answers == [200, 200, 200, 429]
        limited = await client.get("/stock", headers=first)
        assert limited.headers["retry-after"] == "2"
        assert limited.headers["content-type"] == "application/problem+json"
        # Per credential: another caller is not slowed down by the first.
        other = bearer(local_issuer.jwt(["stock:read"], subject="someone-else"))
        assert (await client.get("/stock", headers=other)).status_code == 200


async def test_bodies_over_the_limit_are_413_before_any_route(local_issuer: LocalIssuer) -> None:
    async with client_for(settings_of(local_issuer, max_body_bytes=2048)) as client:
        admin = bearer(local_issuer.token("admin"))
        response = await client.post("/stores/s1/sales", headers=admin, content=b"x" * 2049)
        assert response.status_code == 413
        assert response.json()["max_bytes"] == 2048

        async def chunked():  # type: ignore[no-untyped-def]
            for _ in range(3):
                yield b"x" * 1000

        response = await client.post("/stores/s1/sales", headers=admin, content=chunked())
        assert response.status_code == 413
        # Authentication comes first: an anonymous caller cannot make us read a body.
        anonymous = await client.post("/stores/s1/sales", content=b"x" * 4096)
        assert anonymous.status_code == 401


async def test_revoked_keys_and_rotated_signing_keys_take_effect(
    local_issuer: LocalIssuer, tmp_path: Path
) -> None:
    issuer = LocalIssuer(tmp_path / "auth")
    async with client_for(settings_of(issuer)) as client:
        key = bearer(issuer.token("pos", store_id="s1"))
        assert (await client.post("/stores/s1/sales", headers=key)).status_code == 200
        token = bearer(issuer.token("staff"))
        assert (await client.get("/stock", headers=token)).status_code == 200
        # Revoke every key and rotate the signing key (the Secret mounts change).
        issuer.api_keys_file.write_text('{"keys": []}')
        (tmp_path / "auth" / "issuer-key.pem").unlink()
        rotated = LocalIssuer(tmp_path / "auth")

        async def refused(request: httpx.Request) -> bool:
            return (await client.send(request)).status_code == 401

        from omnistock.devstack.waiting import eventually

        await eventually(
            lambda: refused(client.build_request("POST", "/stores/s1/sales", headers=key)),
            timeout=10,
            message="revoked key refused",
        )
        await eventually(
            lambda: refused(client.build_request("GET", "/stock", headers=token)),
            timeout=10,
            message="token of the old key refused",
        )
        fresh = bearer(rotated.token("staff"))
        assert (await client.get("/stock", headers=fresh)).status_code == 200


def test_nothing_configured_refuses_to_start() -> None:
    with pytest.raises(ValueError, match="no credentials are configured"):
        client_for(AuthSettings(jwks_file=None, jwks_url=None, api_keys_file=None))


async def test_kafka_security_settings_reach_every_client() -> None:
    """SASL/SCRAM over TLS as configured reaches producer, consumer and admin clients.
    (No SASL broker runs here: this checks what the clients are built with.)"""
    kafka = KafkaSettings(
        bootstrap_servers="kafka-1:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="omnistock",
        sasl_password="s3cret",  # type: ignore[arg-type]
    )
    options = kafka.client_options()
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "omnistock"
    assert options["sasl_plain_password"] == "s3cret"
    assert options["ssl_context"] is not None
    assert "s3cret" not in repr(kafka)
    producer = AIOKafkaProducer(**options)
    consumer = AIOKafkaConsumer(**options, group_id=None)
    admin = AIOKafkaAdminClient(**options)
    for client in (producer.client, consumer._client, admin._client):
        assert client._security_protocol == "SASL_SSL"
        assert client._sasl_mechanism == "SCRAM-SHA-512"
        assert client._sasl_plain_username == "omnistock"
        assert client._sasl_plain_password == "s3cret"
        assert client._ssl_context is options["ssl_context"]
