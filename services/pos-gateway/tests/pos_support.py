"""Helpers shared by the pos-gateway tests."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
from aiokafka import TopicPartition

from omnistock.events.envelope import utcnow
from omnistock.events.positions import log_end_offsets
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import POS_TRANSACTIONS


def transaction(
    transaction_id: str,
    *,
    store_id: str = "store-berlin",
    terminal_id: str = "t1",
    sequence: int = 1,
    type: str = "sale",
    lines: list[dict[str, Any]] | None = None,
    occurred_at: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A transaction as a terminal posts it (one line of SKU-1 at 9.99 EUR by default)."""
    body: dict[str, Any] = {
        "transaction_id": transaction_id,
        "store_id": store_id,
        "terminal_id": terminal_id,
        "sequence": sequence,
        "occurred_at": (occurred_at or utcnow() - timedelta(minutes=5)).isoformat(),
        "type": type,
        **extra,
    }
    if type != "void" or lines is not None:
        body["lines"] = (
            lines
            if lines is not None
            else [{"sku": "SKU-1", "quantity": 1, "unit_price": "9.99", "currency": "EUR"}]
        )
    return body


def line(sku: str, quantity: int, price: str = "9.99") -> dict[str, Any]:
    return {"sku": sku, "quantity": quantity, "unit_price": price, "currency": "EUR"}


async def events_in_log(kafka: KafkaSettings) -> int:
    """How many records pos.transactions holds (to prove nothing was emitted)."""
    name = POS_TRANSACTIONS.physical(kafka.topic_prefix)
    ends = await log_end_offsets(
        kafka, [TopicPartition(name, p) for p in range(POS_TRANSACTIONS.partitions)]
    )
    return sum(ends.values())


async def on_hand(inventory: httpx.AsyncClient, sku: str, location_id: str) -> int | None:
    response = await inventory.get(f"/v1/stock/{sku}")
    assert response.status_code == 200, response.text
    for row in response.json()["locations"]:
        if row["location_id"] == location_id:
            value: int = row["on_hand"]
            return value
    return None
