"""The system tests' own broker and PostgreSQL (faults pause, stop and restart them, so
they are not the session's shared ones), and one platform for the whole session: a
service start costs seconds of CPU on a loaded 2-core machine, so every test runs its own
trading day (its own SKUs and ids) on the same running services."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from system_scenario import DaySize, TradingDay
from system_stack import Platform

from omnistock.devstack.broker import EmbeddedBroker
from omnistock.devstack.postgres import EmbeddedPostgres

_days = itertools.count(1)


@pytest.fixture(scope="session")
def system_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(log_path=tmp_path_factory.mktemp("system") / "tansu.log") as broker:
        yield broker


@pytest.fixture(scope="session")
def system_postgres() -> Iterator[EmbeddedPostgres]:
    # Not under pytest's basetemp: as root the server runs as another user, which needs to
    # traverse the parent directories, and pytest resets its own to 0700.
    root = Path(tempfile.mkdtemp(prefix="omnistock-system-pg-"))
    try:
        with EmbeddedPostgres(root / "data") as server:
            yield server
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
async def running_platform(
    system_broker: EmbeddedBroker,
    system_postgres: EmbeddedPostgres,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Platform]:
    platform = Platform(system_broker, system_postgres, tmp_path_factory.mktemp("services"))
    try:
        await platform.start()
        yield platform
    finally:
        await platform.stop()


@pytest.fixture
async def platform(running_platform: Platform) -> AsyncIterator[Platform]:
    """The running platform; whatever a fault test did to it is undone afterwards, so a
    failed test leaves no paused broker or dead service to the next."""
    yield running_platform
    await running_platform.heal()


@pytest.fixture
def day(platform: Platform) -> TradingDay:
    """A trading day of this test's own (SKUs and ids tagged with its number)."""
    platform.apis.fresh_ledger()
    return TradingDay(platform.apis, DaySize(), tag=f"d{next(_days)}")
