"""Helpers shared by the replenishment tests: POS sales, stock figures, log counts, hashes."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy.ext.asyncio import create_async_engine

from omnistock.events import codec
from omnistock.events.envelope import utcnow
from omnistock.events.fold import Fold, state_hash
from omnistock.events.positions import log_end_offsets
from omnistock.events.replay import replay
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import REPLENISHMENT
from omnistock.replenishment import projections as rm
from omnistock.replenishment.domain.planner import ReplenishmentBook


class Till:
    """One POS terminal of a store, posting sales with rising sequence numbers."""

    def __init__(self, pos: httpx.AsyncClient, store_id: str) -> None:
        self.pos = pos
        self.store_id = store_id
        self.sequence = 0

    async def sell(self, sku: str, quantity: int) -> None:
        self.sequence += 1
        response = await self.pos.post(
            "/v1/pos/transactions",
            json={
                "transaction_id": f"tx-{uuid.uuid4().hex[:12]}",
                "store_id": self.store_id,
                "terminal_id": "till-1",
                "sequence": self.sequence,
                "occurred_at": (utcnow() - timedelta(seconds=1)).isoformat(),
                "type": "sale",
                "lines": [
                    {"sku": sku, "quantity": quantity, "unit_price": "4.99", "currency": "EUR"}
                ],
            },
        )
        assert response.status_code == 201, response.text


async def figures(inventory: httpx.AsyncClient, sku: str) -> dict[str, dict[str, int]]:
    """Inventory's figures of ``sku`` per location, plus ``totals``."""
    response = await inventory.get(f"/v1/stock/{sku}")
    assert response.status_code == 200, response.text
    body = response.json()
    return {"totals": body["totals"], **{row["location_id"]: row for row in body["locations"]}}


def chain_units(stock: dict[str, dict[str, int]]) -> int:
    """Every unit of a SKU in the chain: on shelves and on the road."""
    return stock["totals"]["on_hand"] + stock["totals"]["incoming"]


async def requests_of(replenishment: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    response = await replenishment.get("/v1/replenishments", params=params)
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body


async def records_by_type(kafka: KafkaSettings) -> Counter[str]:
    """Every record of replenishment.events by CloudEvents type, duplicates included."""
    name = REPLENISHMENT.physical(kafka.topic_prefix)
    partitions = [TopicPartition(name, p) for p in range(REPLENISHMENT.partitions)]
    ends = await log_end_offsets(kafka, partitions)
    counts: Counter[str] = Counter()
    consumer = AIOKafkaConsumer(**kafka.client_options(), group_id=None)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        remaining = {tp for tp in partitions if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(timeout_ms=200)
            for tp, records in batches.items():
                for record in records:
                    counts[
                        dict(record.headers or ())[codec.H_TYPE].decode().rsplit(".", 1)[-1]
                    ] += 1
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return counts


async def read_model_hash(database_url: str) -> str:
    engine = create_async_engine(database_url)
    try:
        return state_hash(await rm.every_row(engine))
    finally:
        await engine.dispose()


async def replayed_hash(kafka: KafkaSettings) -> str:
    """The planner's state a fold of replenishment.events from offset 0 yields, hashed."""
    fold = Fold(ReplenishmentBook())
    await replay(kafka, [REPLENISHMENT], fold, name="replenishment", progress=False)
    return state_hash(fold.projection.rows())
