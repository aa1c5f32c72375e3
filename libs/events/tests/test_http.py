"""The shared HTTP kit: problem details for every failure, health endpoints."""

from __future__ import annotations

import httpx
from asyncpg.exceptions import CannotConnectNowError
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from omnistock.devstack.credentials import admin_headers
from omnistock.events.http import Health, Problem, create_app
from omnistock.events.producer import BrokerUnavailable
from omnistock.events.settings import AuthSettings


class Body(BaseModel):
    quantity: int


def app_with_routes(health: Health) -> httpx.AsyncClient:
    app = create_app(title="t", description="t", version="0", health=health, auth=AuthSettings())

    @app.post("/unavailable")
    async def unavailable() -> None:
        raise BrokerUnavailable("Kafka did not confirm", retry_after_seconds=2)

    @app.post("/conflict")
    async def conflict() -> None:
        raise Problem(409, "stock", "Insufficient stock", lines=[{"sku": "A"}])

    @app.post("/validate")
    async def validate(body: Body) -> None:
        del body

    @app.post("/database-down")
    async def database_down() -> None:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError(111, "refused"))

    @app.post("/database-restarting")
    async def database_restarting() -> None:
        # As SQLAlchemy's asyncpg dialect raises it: generic, the reason two causes down.
        try:
            try:
                raise CannotConnectNowError("the database system is starting up")
            except CannotConnectNowError as error:
                raise RuntimeError("asyncpg adapter error") from error
        except RuntimeError as error:
            raise DBAPIError("connect", {}, error) from error

    @app.post("/bad-statement")
    async def bad_statement() -> None:
        raise ProgrammingError("SELECT nope", {}, Exception("column nope does not exist"))

    @app.post("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    # Starlette re-raises after answering 500 so the server logs it; the client got the 500.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://t", headers=admin_headers())


async def test_an_unconfirmed_write_is_503_with_retry_after() -> None:
    async with app_with_routes(Health()) as client:
        response = await client.post("/unavailable")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/log-unavailable")


async def test_an_unreachable_database_is_503_with_retry_after_not_500() -> None:
    async with app_with_routes(Health()) as client:
        for path in ("/database-down", "/database-restarting"):
            response = await client.post(path)
            assert response.status_code == 503, path
            assert response.headers["retry-after"] == "1"
            assert response.json()["type"].endswith("/read-model-unavailable")
        # A statement that is wrong stays a 500: retrying it would not help.
        assert (await client.post("/bad-statement")).status_code == 500


async def test_problems_keep_their_extensions_and_validation_names_the_field() -> None:
    async with app_with_routes(Health()) as client:
        conflict = await client.post("/conflict")
        invalid = await client.post("/validate", json={"quantity": "many"})
        malformed = await client.post(
            "/validate", content=b"{", headers={"content-type": "application/json"}
        )
    assert conflict.status_code == 409
    assert conflict.json()["lines"] == [{"sku": "A"}]
    assert invalid.status_code == 422
    assert invalid.json()["errors"][0]["field"] == "quantity"
    assert malformed.status_code == 400
    assert malformed.json()["type"].endswith("/malformed-json")


async def test_an_unexpected_error_is_a_500_problem_without_internals() -> None:
    async with app_with_routes(Health()) as client:
        response = await client.post("/boom")
    assert response.status_code == 500
    assert "secret" not in response.text


async def test_readiness_follows_health() -> None:
    health = Health()
    async with app_with_routes(health) as client:
        assert (await client.get("/readyz")).status_code == 503
        health.unblock("starting")
        assert (await client.get("/readyz")).json() == {"status": "ready"}
        assert (await client.get("/healthz")).status_code == 200
