"""bench/reserve.py: its load shape and bookkeeping, and a quick run end to end.

Smoke tests only: nothing here asserts how fast anything is. They check that the
schedule is the schedule, that every request is counted exactly once, and that a real
run's figures and books add up.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest
from bench_support import run_quick

from bench import reserve
from bench._common import (
    HELD,
    OUTCOMES,
    REJECTED,
    SERVER_ERROR,
    Prepared,
    Response,
    classify,
)


def test_carts_are_one_to_three_distinct_skus_of_the_catalogue() -> None:
    catalogue = reserve.make_catalogue(100, "t")
    rng = random.Random(3)
    stores = {s.location_id for s in catalogue.stores}

    carts = [reserve.make_cart(rng, catalogue) for _ in range(500)]

    assert {len(cart) for cart in carts} == {1, 2, 3}
    for cart in carts:
        skus = [line["sku"] for line in cart]
        assert len(set(skus)) == len(skus)
        assert set(skus) <= set(catalogue.skus)
        assert all(line.get("location_id") in {None, *stores} for line in cart)
        assert all(1 <= line["quantity"] <= 3 for line in cart)


def test_every_sku_is_stocked_and_the_scarce_ones_barely() -> None:
    catalogue = reserve.make_catalogue(200, "t")
    stock = catalogue.stock()

    for sku in catalogue.skus:
        total = sum(by_sku.get(sku, 0) for by_sku in stock.values())
        if sku in catalogue.scarce:
            assert total == reserve.SCARCE_UNITS
        else:
            assert total == 2 * reserve.WAREHOUSE_UNITS + 4 * reserve.STORE_UNITS
    assert 0 < len(catalogue.scarce) < len(catalogue.skus) // 10


def test_answers_are_classified_by_status_and_problem_type() -> None:
    assert classify(201) == HELD
    assert classify(409, b'{"type":"https://omnistock.io/problems/insufficient-stock"}') == REJECTED
    assert classify(409, b'{"type":"https://omnistock.io/problems/idempotency-conflict"}') == (
        "conflict"
    )
    assert classify(504) == SERVER_ERROR
    assert classify(422) == "client_error"
    assert classify(None) == "connection_error"


class FakeClient:
    """Answers every reservation at once with 201, holding its lines at WH-1."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send(self, request: Prepared) -> Response:
        self.sent.append(request.raw)
        body = json.loads(request.body or b"{}")
        lines = [{**line, "location_id": "WH-1"} for line in body["lines"]]
        answer = {"reservation_id": body["reservation_id"], "lines": lines, "position": "t:0:1"}
        return Response(201, json.dumps(answer).encode())

    def prepare(self, method: str, path: str, body: Any = None) -> Prepared:
        content = json.dumps(body).encode()
        return Prepared(method, path, content, content)


async def test_the_open_loop_keeps_its_schedule_and_counts_each_request_once() -> None:
    catalogue = reserve.make_catalogue(20, "t")
    client = FakeClient()
    planned = reserve.plan(random.Random(1), client, catalogue, "t", 40)  # type: ignore[arg-type]

    await reserve.open_loop(client, planned, rate=2000)  # type: ignore[arg-type]

    assert len(client.sent) == 40
    assert len({s.reservation_id for s in planned}) == 40
    gaps = [b.scheduled - a.scheduled for a, b in itertools.pairwise(planned)]
    assert gaps == pytest.approx([1 / 2000] * 39)
    # Latency runs from the schedule, so a late send can only add to it.
    assert all(s.finished >= s.started >= s.scheduled - 1e-3 for s in planned)
    figures = reserve.summarise(planned, 2000)
    assert sum(figures["outcomes"].values()) == figures["requests"] == 40
    assert figures["outcomes"][HELD] == 40
    assert figures["reject_rate"] == figures["error_rate"] == 0
    assert all(len(s.allocations) == len(s.lines) for s in planned)


def test_a_rate_that_leaves_most_requests_unanswered_stops_the_sweep() -> None:
    assert reserve.saturated({"error_rate": 0.9, "settle_s": 1.0})
    assert reserve.saturated({"error_rate": 0.0, "settle_s": None})
    assert not reserve.saturated({"error_rate": 0.1, "settle_s": 1.0})


def run_cli(args: list[str], env_extra: dict[str, str], out: Path) -> dict[str, Any]:
    return run_quick("reserve.py", out, env_extra, *args)


@pytest.fixture
def servers(kafka_bootstrap: str, postgres_url: str, topic_prefix: str) -> dict[str, str]:
    """The session's broker and PostgreSQL, as the benchmark finds them in its environment."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPIC_PREFIX": topic_prefix,
        "KAFKA_FETCH_MAX_WAIT_MS": "10",
        "DATABASE_URL": postgres_url,
    }


@pytest.mark.integration
def test_a_quick_sweep_counts_every_request_and_the_books_add_up(
    servers: dict[str, str], tmp_path: Path
) -> None:
    figures = run_cli([], servers, tmp_path / "reserve.json")

    assert figures["mode"] == "rates"
    assert figures["broker_baseline"]["round_trip"]["received"] > 0
    ran = figures["rates"]
    assert [r["offered_per_s"] for r in ran] + figures["skipped_rates"] == list(reserve.QUICK.rates)
    for rate in ran:
        expected = int(rate["offered_per_s"] * reserve.QUICK.duration_s)
        assert rate["requests"] == expected
        assert sum(rate["outcomes"][o] for o in OUTCOMES) == expected
        assert sum(rate["statuses"].values()) == expected
        assert rate["cpu"]["cores"]["inventory service"] > 0
    books = figures["books"]
    assert books["ok"] is True
    assert books["units_held_found"] == books["units_held_expected"] == books["units_held_in_log"]
    assert books["answered_201_not_held"] == 0
    assert books["mismatch_count"] == books["oversold_count"] == 0


@pytest.mark.integration
def test_a_quick_flash_sale_sells_exactly_the_units(
    servers: dict[str, str], tmp_path: Path
) -> None:
    figures = run_cli(["--flash-sale"], servers, tmp_path / "flash.json")

    units = reserve.QUICK.units
    assert figures["mode"] == "flash_sale"
    assert figures["shoppers"] == reserve.QUICK.shoppers
    assert sum(figures["outcomes"].values()) == figures["shoppers"]
    assert figures["sold_exactly"] is True
    assert figures["sold_by_stock_query"] == figures["books"]["units_held_in_log"] == units
    assert figures["stock_after"]["held"] == units
    assert figures["stock_after"]["available"] == 0
    assert figures["books"]["ok"] is True
    # Every unit went to exactly one shopper: by the answers, or by the log for those
    # who got no answer.
    answered = figures["sold_by_answers"]
    assert answered + figures["books"]["unknown_outcomes_held"] == units
