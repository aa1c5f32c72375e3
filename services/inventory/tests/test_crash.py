"""kill -9 of the replica owning the hot partition, in the middle of a checkout rush."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.partitioner import DefaultPartitioner
from inventory_support import receive, register_demo_locations

from omnistock.devstack.credentials import admin_headers
from omnistock.devstack.serving import ServiceProcess
from omnistock.devstack.waiting import eventually
from omnistock.events.envelope import Envelope, Event
from omnistock.events.fold import Fold
from omnistock.events.replay import replay
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import INVENTORY_STOCK

pytestmark = pytest.mark.integration

HOT = "SKU-HOT"
UNITS = 50


class Nothing:
    def apply(self, envelope: Envelope[Event]) -> None:
        pass

    def canonical(self) -> None:
        return None


async def owner_of(kafka: KafkaSettings, sku: str) -> str:
    """Which replica's claim holds the partition of ``sku``, according to the log."""
    partition = DefaultPartitioner()(sku.encode(), list(range(INVENTORY_STOCK.partitions)), [])
    fold = Fold(Nothing())
    await replay(kafka, [INVENTORY_STOCK], fold, name="owner", progress=False)
    return fold.owners[INVENTORY_STOCK.physical(kafka.topic_prefix), partition].rsplit("/", 1)[-1]


def env(kafka: KafkaSettings, database_url: str, instance: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "KAFKA_FETCH_MAX_WAIT_MS": str(kafka.fetch_max_wait_ms),
        "KAFKA_SESSION_TIMEOUT_MS": str(kafka.session_timeout_ms),
        "KAFKA_HEARTBEAT_INTERVAL_MS": str(kafka.heartbeat_interval_ms),
        "DATABASE_URL": database_url,
        "INSTANCE_ID": instance,
        "INVENTORY_MIN_TTL_SECONDS": "2",
        # Abandoned carts hold for 2 s: a 5 s margin would never report them held.
        "INVENTORY_HELD_VERDICT_MARGIN_S": "0.5",
        "INVENTORY_EXPIRY_INTERVAL_S": "0.1",
    }


async def test_killing_the_hot_partition_owner_loses_nothing_acknowledged(
    provisioned: KafkaSettings, database_url: str, tmp_path: Path
) -> None:
    replicas = {
        name: ServiceProcess(
            "inventory", env(provisioned, database_url, name), tmp_path / f"{name}.log"
        )
        for name in ("inventory-a", "inventory-b")
    }
    try:
        await asyncio.gather(*(r.start() for r in replicas.values()))
        async with httpx.AsyncClient(timeout=15, headers=admin_headers()) as http:
            first = httpx.AsyncClient(
                base_url=replicas["inventory-a"].url, timeout=15, headers=admin_headers()
            )
            async with first:
                await register_demo_locations(first)
                await receive(first, "rc-hot", "wh-kassel", SKU_HOT=30)
                await receive(first, "rc-hot-2", "store-berlin", SKU_HOT=20)
            victim_name = await owner_of(provisioned, HOT)
            victim = replicas[victim_name]
            survivor = next(r for n, r in replicas.items() if n != victim_name)

            acknowledged: list[str] = []
            abandoned: list[str] = []

            async def shopper(n: int) -> None:
                # Long holds for paying customers; 2 s holds for carts left behind.
                leaves = n % 4 == 0
                rid = f"{'gone' if leaves else 'buy'}-{n}"
                target = victim if n % 2 else survivor
                try:
                    response = await http.post(
                        f"{target.url}/v1/reservations",
                        json={
                            "reservation_id": rid,
                            "ttl_seconds": 2 if leaves else 600,
                            "lines": [{"sku": HOT, "quantity": 1}],
                        },
                    )
                except httpx.TransportError:
                    return  # the replica died under this request: nothing was acknowledged
                if response.status_code == 201:
                    (abandoned if leaves else acknowledged).append(rid)
                else:
                    assert response.status_code in (409, 503, 504), response.text

            rush = [asyncio.create_task(shopper(n)) for n in range(200)]
            await eventually(
                lambda: len(acknowledged) + len(abandoned) >= 10,
                timeout=60,
                message="the rush is under way",
            )
            victim.kill()
            await asyncio.gather(*rush)
            await victim.start()

            async def figures() -> dict[str, Any]:
                response = await http.get(f"{survivor.url}/v1/stock/{HOT}")
                totals: dict[str, Any] = response.json()["totals"]
                return totals

            # I1: never more held or committed than on hand, whatever happened.
            assert acknowledged, "some paying customers got their stock"
            assert len(acknowledged) + len(abandoned) <= UNITS
            assert (await figures())["held"] <= UNITS

            # I5: every acknowledged reservation is still held, on either replica.
            async def all_still_held() -> bool:
                for rid in acknowledged:
                    for replica in replicas.values():
                        got = await http.get(f"{replica.url}/v1/reservations/{rid}")
                        if got.status_code != 200 or got.json()["status"] != "held":
                            return False
                return True

            await eventually(all_still_held, timeout=30, message="acknowledged holds survive")

            # I6: the carts left behind (and holds whose answer was lost in the crash)
            # expire; what stays held is exactly the acknowledged reservations.
            async def only_acknowledged_held() -> bool:
                return (await figures())["held"] == len(acknowledged)

            await eventually(
                only_acknowledged_held, timeout=30, message="abandoned holds return at expiry"
            )
    finally:
        for replica in replicas.values():
            replica.stop()
