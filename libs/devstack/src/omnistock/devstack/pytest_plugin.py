"""pytest fixtures for tests against the real broker and PostgreSQL.

Loaded in every pytest run through the ``omnistock`` pytest11 entry point.
Servers start only when a test asks for them, once per session; each test then
isolates itself on them with its own topic prefix and its own database.
``KAFKA_BOOTSTRAP_SERVERS`` and ``DATABASE_URL`` point the session at external
servers instead of embedded ones.

Every service started by a test checks credentials as in production: the session
runs a local issuer (``local_issuer``) and points ``AUTH_*`` at it, and
:func:`omnistock.devstack.serving.serving` hands out clients carrying an admin token.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from omnistock.devstack._support import run_sync
from omnistock.devstack.broker import EMBEDDED_FETCH_MAX_WAIT_MS, EmbeddedBroker
from omnistock.devstack.credentials import LocalIssuer, use_session_issuer
from omnistock.devstack.postgres import (
    EmbeddedPostgres,
    asyncpg_url,
    drop_database,
    ensure_database,
)
from omnistock.events.settings import KafkaSettings


@pytest.fixture(scope="session", autouse=True)
def local_issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalIssuer]:
    """The session's token issuer; every service process and app trusts it (``AUTH_*``)."""
    issuer = LocalIssuer(tmp_path_factory.mktemp("auth"))
    with pytest.MonkeyPatch.context() as env:
        for name, value in issuer.env.items():
            env.setenv(name, value)
        # Tests drive services harder than any one production client; the limiter has
        # tests of its own.
        env.setenv("AUTH_RATE_PER_S", "1000000")
        env.setenv("AUTH_RATE_BURST", "1000000")
        use_session_issuer(issuer)
        try:
            yield issuer
        finally:
            use_session_issuer(None)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's broker: ``KAFKA_BOOTSTRAP_SERVERS``, else an embedded one."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    log_path = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log_path) as broker:
        yield broker.bootstrap_servers


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """Server-level SQLAlchemy URL (asyncpg): ``DATABASE_URL`` or an embedded server."""
    external = os.environ.get("DATABASE_URL")
    if external:
        yield asyncpg_url(external)
        return
    # Not under pytest's basetemp: as root the server runs as another user, which
    # needs to traverse the parent directories, and pytest resets its own to 0700.
    root = Path(tempfile.mkdtemp(prefix="omnistock-pg-"))
    try:
        with EmbeddedPostgres(root / "data") as server:
            yield server.url()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def topic_prefix() -> str:
    """A prefix unique to this test, so tests sharing a broker never see each other's topics."""
    return f"t{uuid.uuid4().hex[:8]}."


@pytest.fixture
def kafka_settings(kafka_bootstrap: str, topic_prefix: str) -> KafkaSettings:
    # Tansu completes a group join after about half the session timeout: keep joins quick.
    return KafkaSettings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=topic_prefix,
        session_timeout_ms=2_000,
        heartbeat_interval_ms=300,
        fetch_max_wait_ms=EMBEDDED_FETCH_MAX_WAIT_MS,
    )


@pytest.fixture
def database_url(postgres_url: str) -> Iterator[str]:
    """A fresh, empty database for this test (dropped afterwards); its asyncpg SQLAlchemy URL."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    url = run_sync(ensure_database(postgres_url, name))
    yield url
    run_sync(drop_database(postgres_url, name))


@pytest.fixture
def embedded_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of this test's own, to kill, restart or pause without disturbing other tests."""
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as broker:
        yield broker
