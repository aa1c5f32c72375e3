"""The embedded PostgreSQL server and the per-test database fixtures."""

from __future__ import annotations

import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from omnistock.devstack.errors import EmbeddedProcessError
from omnistock.devstack.postgres import EmbeddedPostgres, drop_database, ensure_database

pytestmark = pytest.mark.integration

_databases_seen: set[str] = set()


async def _scalar(url: str, sql: str, **params: object) -> object:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.scalar(text(sql), params)
    finally:
        await engine.dispose()


async def _database_exists(server_url: str, name: str) -> bool:
    found = await _scalar(server_url, "SELECT count(*) FROM pg_database WHERE datname = :n", n=name)
    return found == 1


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Outside pytest's basetemp for the reason given in the plugin's postgres_url.
    with tempfile.TemporaryDirectory(prefix="omnistock-pg-test-") as root:
        yield Path(root) / "data"


async def test_query_through_sqlalchemy_asyncpg(database_url: str) -> None:
    assert make_url(database_url).drivername == "postgresql+asyncpg"
    assert (
        await _scalar(database_url, "SELECT current_database()") == make_url(database_url).database
    )


@pytest.mark.parametrize("run", ["first", "second"])
async def test_each_test_gets_a_fresh_database(database_url: str, run: str) -> None:
    name = make_url(database_url).database
    assert name not in _databases_seen
    _databases_seen.add(str(name))
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            # Fails in the second run if the database were shared.
            await conn.execute(text("CREATE TABLE marker (run text PRIMARY KEY)"))
            await conn.execute(text("INSERT INTO marker VALUES (:run)"), {"run": run})
            assert (await conn.execute(text("SELECT run FROM marker"))).scalars().all() == [run]
    finally:
        await engine.dispose()


async def test_ensure_is_idempotent_and_drop_disconnects_sessions(postgres_url: str) -> None:
    name = f"adhoc_{uuid.uuid4().hex[:8]}"
    url = await ensure_database(postgres_url, name)
    assert await ensure_database(postgres_url, name) == url

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT 1")) == 1
            await drop_database(postgres_url, name)
            assert not await _database_exists(postgres_url, name)
            with pytest.raises(DBAPIError):
                await conn.scalar(text("SELECT 1"))
    finally:
        await engine.dispose()
    await drop_database(postgres_url, name)  # dropping what is gone is fine


async def test_committed_rows_survive_a_crash_and_a_restart(data_dir: Path) -> None:
    with EmbeddedPostgres(data_dir) as server:
        url = server.create_database("durable")
        assert url == server.url("durable")
        engine = create_async_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.execute(text("CREATE TABLE facts (n int)"))
                await conn.execute(text("INSERT INTO facts VALUES (1), (2)"))
            session = await engine.connect()
            backend = psutil.Process(await session.scalar(text("SELECT pg_backend_pid()")))
            port = server.port

            server.kill()  # with a session open, as a crash would find it

            assert not server.running
            assert not backend.is_running() or backend.status() == psutil.STATUS_ZOMBIE
            with pytest.raises(DBAPIError) as lost:
                await session.scalar(text("SELECT 1"))
            # No "terminating connection" goodbye: the backend died without a word.
            assert "terminating connection" not in str(lost.value)
            await session.invalidate()
        finally:
            await engine.dispose()

        server.start()  # crash recovery replays the WAL
        assert server.port == port
        assert await _scalar(url, "SELECT sum(n) FROM facts") == 3

        server.stop()
        server.start()
        assert await _scalar(url, "SELECT sum(n) FROM facts") == 3
        server.drop_database("durable")
        assert not await _database_exists(server.url(), "durable")
    assert not server.running


def test_start_failures_say_why(data_dir: Path) -> None:
    with EmbeddedPostgres(data_dir) as server:
        twin = EmbeddedPostgres(data_dir)
        with pytest.raises(EmbeddedProcessError, match="already running"):
            twin.start()
        assert server.running  # the failed twin left it alone
        port = server.port

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(EmbeddedProcessError, match="Address already in use"):
            server.start()
    assert not server.running
