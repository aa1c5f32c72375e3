"""The read model is derived: dropped, it comes back identical; ahead of its log, it is
thrown away; snapshots only shorten the way back (ARCHITECTURE rule 2, I4)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from fastapi import FastAPI
from inventory_support import Clock, receive, register_demo_locations
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool
from test_audit import run_scenario

from omnistock.devstack.broker import EmbeddedBroker
from omnistock.devstack.postgres import drop_database, ensure_database
from omnistock.devstack.serving import serving
from omnistock.devstack.waiting import eventually
from omnistock.events.admin import ensure_topics
from omnistock.events.fold import Fold
from omnistock.events.positions import load_positions, log_end_offsets
from omnistock.events.replay import replay
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import INVENTORY_RESERVATIONS, INVENTORY_STOCK, TOPICS
from omnistock.inventory.audit import AuditTap, LogAudit, run_audit
from omnistock.inventory.domain.reservations import SagaBook
from omnistock.inventory.handlers import (
    RESERVATIONS_GROUP,
    STOCK_GROUP,
    ReservationCoordinator,
    StockOwner,
)
from omnistock.inventory.main import create_inventory_app
from omnistock.inventory.settings import InventorySettings

pytestmark = pytest.mark.integration

#: Every row of the read model, in a stable order. Nothing is left out: each column,
#: times included, is derived from the log.
READ_MODEL = {
    "stock_levels": "sku, location_id",
    "stock_movements": '"partition", "offset", seq',
    "reservations": "reservation_id",
}


async def read_model_rows(database_url: str) -> dict[str, list[dict[str, Any]]]:
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return {
                table: [
                    dict(row._mapping)
                    for row in await connection.execute(
                        text(f"SELECT * FROM {table} ORDER BY {order}")
                    )
                ]
                for table, order in READ_MODEL.items()
            }
    finally:
        await engine.dispose()


async def caught_up(kafka: KafkaSettings, database_url: str) -> bool:
    """Whether the read model has taken in every record of the log (a quiet service)."""
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            stored = {
                **(await load_positions(connection, STOCK_GROUP)).offsets,
                **(await load_positions(connection, RESERVATIONS_GROUP)).offsets,
            }
    finally:
        await engine.dispose()
    partitions = [
        TopicPartition(topic.physical(kafka.topic_prefix), p)
        for topic in (INVENTORY_STOCK, INVENTORY_RESERVATIONS)
        for p in range(topic.partitions)
    ]
    ends = await log_end_offsets(kafka, partitions)
    return all(stored.get(tp, 0) == end for tp, end in ends.items())


async def test_dropping_the_read_model_rebuilds_it_identically(
    make_settings: Callable[..., InventorySettings],
    provisioned: KafkaSettings,
    clock: Clock,
    postgres_url: str,
    database_url: str,
) -> None:
    settings = make_settings()
    async with serving(create_inventory_app(settings, clock=clock)) as client:
        await run_scenario(client, provisioned, clock)
        await eventually(lambda: caught_up(provisioned, database_url), message="read model")
    before = await read_model_rows(database_url)
    assert all(before.values()), {table: len(rows) for table, rows in before.items()}

    name = make_url(database_url).database
    assert name is not None
    await drop_database(postgres_url, name)
    await ensure_database(postgres_url, name)
    async with serving(create_inventory_app(settings, clock=clock)):
        # Ready means caught up with the log as it was at start: the rows are all back.
        after = await read_model_rows(database_url)
    assert after == before
    report = await run_audit(provisioned, database_url=database_url, progress=False)
    assert report.ok, [f.message for f in report.violations]


async def test_a_database_ahead_of_its_log_is_rebuilt_not_served(
    embedded_broker: EmbeddedBroker,
    database_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def settings_for(broker: EmbeddedBroker) -> InventorySettings:
        kafka = KafkaSettings(
            bootstrap_servers=broker.bootstrap_servers,
            session_timeout_ms=2_000,
            heartbeat_interval_ms=300,
            fetch_max_wait_ms=10,
        )
        return InventorySettings(
            database_url=database_url, kafka=kafka, instance_id="inventory-test-0"
        )

    old = settings_for(embedded_broker)
    await ensure_topics(old.kafka, TOPICS)
    async with serving(create_inventory_app(old)) as client:
        await register_demo_locations(client)
        position = await receive(client, "rc-1", "wh-kassel", SKU_1=5)
        reserved = await client.post(
            "/v1/reservations",
            json={"reservation_id": "r-1", "lines": [{"sku": "SKU-1", "quantity": 2}]},
        )
        assert reserved.status_code == 201, reserved.text
        seen = await client.get("/v1/stock/SKU-1", params={"consistent_with": position})
        assert seen.json()["totals"]["on_hand"] == 5

        async def reservation_stored() -> bool:
            return (await client.get("/v1/reservations/r-1")).status_code == 200

        await eventually(reservation_stored, message="r-1 in the read model")

    # Another broker: another cluster id and an empty log (a dev broker restarted, a
    # service pointed at another cluster) while the database still has the old rows.
    with EmbeddedBroker(log_path=tmp_path / "other-broker.log") as other:
        new = settings_for(other)
        await ensure_topics(new.kafka, TOPICS)
        with caplog.at_level(logging.WARNING, logger="omnistock.inventory.projections"):
            async with serving(create_inventory_app(new)) as client:
                stock = (await client.get("/v1/stock/SKU-1")).json()
                assert stock["locations"] == []
                assert set(stock["totals"].values()) == {0}
                assert (await client.get("/v1/stock/SKU-1/movements")).json() == []
                assert (await client.get("/v1/reservations/r-1")).status_code == 404

                await register_demo_locations(client)
                position = await receive(client, "rc-9", "wh-kassel", SKU_1=1)
                now = await client.get("/v1/stock/SKU-1", params={"consistent_with": position})
                assert now.json()["totals"]["on_hand"] == 1
    assert f"the broker is '{other.cluster_id}'" in caplog.text
    assert "rebuilding from offset 0" in caplog.text


async def fold_hashes(app: FastAPI) -> tuple[dict[int, str], dict[int, str], int]:
    """Each partition's fold in the running service, and the events the owner folded."""
    owner: StockOwner = app.state.components["owner"]
    coordinator: ReservationCoordinator = app.state.components["coordinator"]
    stock = {tp.partition: part.fold.state_hash() for tp, part in owner.parts.items()}
    sagas = {tp.partition: part.fold.state_hash() for tp, part in coordinator.parts.items()}
    applied = sum(part.fold.stats.applied for part in owner.parts.values())
    return stock, sagas, applied


async def replayed_hashes(kafka: KafkaSettings) -> tuple[dict[int, str], dict[int, str]]:
    """The same partitions folded from offset 0 by a reader of the log."""
    audit = LogAudit(
        stock_topic=INVENTORY_STOCK.physical(kafka.topic_prefix),
        reservations_topic=INVENTORY_RESERVATIONS.physical(kafka.topic_prefix),
    )
    await replay(
        kafka, [INVENTORY_STOCK, INVENTORY_RESERVATIONS], AuditTap(audit), name="t", progress=False
    )
    empty = Fold(SagaBook()).state_hash()
    stock = {p: fold.state_hash() for p, fold in audit.stock.items()}
    sagas = {p: empty for p in range(INVENTORY_RESERVATIONS.partitions)}
    sagas.update({p: fold.state_hash() for p, fold in audit.sagas.items()})
    return stock, sagas


async def test_snapshots_change_nothing_but_restart_time(
    make_settings: Callable[..., InventorySettings],
    provisioned: KafkaSettings,
    database_url: str,
) -> None:
    settings = make_settings(snapshot_every=100)
    skus = [f"SKU-{n}" for n in range(800)]
    app = create_inventory_app(settings)
    async with serving(app) as client:
        await register_demo_locations(client)
        for n in range(3):  # 2,400 events, about 200 per partition: snapshots everywhere
            body = {
                "receipt_id": f"rc-{n}",
                "location_id": "wh-kassel",
                "lines": [{"sku": sku, "quantity": 10} for sku in skus],
            }
            assert (await client.post("/v1/receipts", json=body)).status_code == 201
        # Events after the snapshots: holds, a commit, a release, a shipment-free tail.
        for n, sku in enumerate(skus[:24]):
            lines = [{"sku": sku, "quantity": 2}, {"sku": skus[-1 - n], "quantity": 1}]
            response = await client.post(
                "/v1/reservations", json={"reservation_id": f"r-{n}", "lines": lines}
            )
            assert response.status_code == 201, response.text
        assert (await client.post("/v1/reservations/r-0/commit")).status_code == 200
        assert (await client.post("/v1/reservations/r-1/release")).status_code == 200
        position = await receive(client, "rc-tail", "store-berlin", SKU_1=4, SKU_2=4)
        await client.get("/v1/stock/SKU-2", params={"consistent_with": position})
        await eventually(lambda: caught_up(provisioned, database_url), message="read model")
    before = await read_model_rows(database_url)

    engine = create_async_engine(database_url, poolclass=NullPool)
    async with engine.connect() as connection:
        snapshot_offsets = (
            await connection.execute(text("SELECT partition, next_offset FROM snapshots"))
        ).all()
    assert len(snapshot_offsets) == INVENTORY_STOCK.partitions, snapshot_offsets

    with_snapshots = create_inventory_app(settings)
    async with serving(with_snapshots):
        stock, sagas, applied_from_snapshots = await fold_hashes(with_snapshots)
        assert (stock, sagas) == await replayed_hashes(provisioned)
    assert await read_model_rows(database_url) == before

    async with engine.begin() as connection:
        await connection.execute(text("DELETE FROM snapshots"))
    await engine.dispose()
    without_snapshots = create_inventory_app(settings)
    async with serving(without_snapshots):
        stock, sagas, applied_from_zero = await fold_hashes(without_snapshots)
        assert (stock, sagas) == await replayed_hashes(provisioned)
    assert await read_model_rows(database_url) == before
    # The snapshots spared the owner most of the log, and changed nothing else.
    assert applied_from_snapshots < applied_from_zero / 2, (
        applied_from_snapshots,
        applied_from_zero,
    )
