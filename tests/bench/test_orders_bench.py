"""bench/orders.py runs end to end and reports complete figures.

A smoke test only: nothing here asserts how fast anything is (bench/ measures that;
a timed assertion would fail on a busy CI machine, not on a regression).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from omnistock.events.settings import KafkaSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Generous: two services start and join their groups; only a hang should trip it.
CLI_TIMEOUT_S = 600


@pytest.mark.integration
def test_the_orders_bench_places_orders_and_writes_its_figures(
    kafka_settings: KafkaSettings, postgres_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "orders.json"
    # The test session's broker and PostgreSQL server, as an external cluster would be given.
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": kafka_settings.topic_prefix,
        "KAFKA_FETCH_MAX_WAIT_MS": str(kafka_settings.fetch_max_wait_ms),
        "DATABASE_URL": postgres_url,
    }
    result = subprocess.run(
        [sys.executable, "bench/orders.py", "--quick", "--client", "httpx", "--json-out", str(out)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "broker baseline" in result.stdout
    assert "place order at 20/s" in result.stdout
    figures = json.loads(out.read_text())["figures"]
    orders = figures["orders"]
    assert orders["orders"] == 40
    assert sum(orders["outcomes"].values()) == 40
    assert set(orders["outcomes"]) <= {"confirmed", "pending"}
    assert orders["latency_ms"]["count"] == 40
    assert figures["baseline"]["round_trip"]["received"] > 0
