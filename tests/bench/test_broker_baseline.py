"""The broker baseline runs and its figures are complete and consistent.

Smoke tests only: nothing here asserts how fast anything is (that is bench/'s job,
and a timed assertion would fail on a busy CI machine, not on a regression).
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from bench._common import (
    EMBEDDED_TANSU,
    EXTERNAL,
    baseline_rows,
    broker_baseline,
    latency_summary_ms,
    machine_caption,
    print_table,
    resolve_broker,
    write_result,
)
from omnistock.events.admin import admin_client
from omnistock.events.settings import KafkaSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Generous: only a hang should trip it (on Tansu each round trip takes ~250 ms).
CLI_TIMEOUT_S = 180


def test_percentiles_interpolate_between_order_statistics() -> None:
    summary = latency_summary_ms([ms / 1000 for ms in range(100, 0, -1)])  # 1..100 ms, unsorted

    assert summary["count"] == 100
    assert summary["min"] == pytest.approx(1.0)
    assert summary["max"] == pytest.approx(100.0)
    assert summary["mean"] == pytest.approx(50.5)
    # Position p * (n - 1) in the sorted samples, as numpy.percentile's default.
    assert summary["p50"] == pytest.approx(50.5)
    assert summary["p95"] == pytest.approx(95.05)
    assert summary["p99"] == pytest.approx(99.01)


def test_a_single_sample_is_every_percentile() -> None:
    summary = latency_summary_ms([0.002])

    assert summary["p50"] == summary["p99"] == summary["max"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="no samples"):
        latency_summary_ms([])


@pytest.mark.integration
async def test_baseline_reads_back_everything_it_sent(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    figures = await broker_baseline(
        kafka_settings, messages=20, payload_bytes=64, concurrency=8, round_trip_budget_s=60
    )

    round_trip = figures["round_trip"]
    # 20 round trips fit the budget on any broker this runs against.
    assert round_trip["sent"] == round_trip["received"] == 20
    assert not round_trip["stopped_by_budget"]
    for summary in (round_trip["ms"], round_trip["ack_ms"]):
        assert summary["count"] == 20
        assert 0 < summary["min"] <= summary["p50"] <= summary["p95"]
        assert summary["p95"] <= summary["p99"] <= summary["max"]

    throughput = figures["throughput"]
    assert throughput["sent"] == throughput["received"] == throughput["received_distinct"] == 20
    assert throughput["failed"] == 0
    assert throughput["log_span"] == 20
    for rate in (throughput["produce"], throughput["consume"]):
        assert rate["seconds"] > 0
        assert math.isfinite(rate["messages_per_s"])
        assert rate["messages_per_s"] > 0

    assert figures["parameters"]["payload_bytes"] == 64
    assert figures["client"]["acks"] == "all"
    assert figures["client"]["linger_ms"] == kafka_settings.linger_ms
    assert figures["broker"]["bootstrap_servers"] == kafka_settings.bootstrap_servers
    expected_kind = EXTERNAL if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") else EMBEDDED_TANSU
    assert figures["broker"]["kind"] == expected_kind
    machine = figures["machine"]
    assert machine["cpu_count"] >= 1
    assert machine["python"] == ".".join(map(str, sys.version_info[:3]))

    # Everything a later benchmark does with the figures works on them.
    path = write_result("broker_baseline", figures, tmp_path / "baseline.json")
    written: dict[str, Any] = json.loads(path.read_text())
    assert written["name"] == "broker_baseline"
    assert written["figures"] == figures
    out = io.StringIO()
    print_table(
        "baseline",
        {"broker baseline": baseline_rows(figures)},
        caption=machine_caption(figures),
        console=Console(file=out, width=200),
    )
    assert "produce→consume round trip" in out.getvalue()


@pytest.mark.integration
async def test_baseline_leaves_no_topics_behind(kafka_settings: KafkaSettings) -> None:
    await broker_baseline(kafka_settings, messages=2, payload_bytes=0, concurrency=2)

    admin = admin_client(kafka_settings)
    await admin.start()
    try:
        left = [t for t in await admin.list_topics() if t.startswith(kafka_settings.topic_prefix)]
    finally:
        await admin.close()
    assert left == []


def test_results_go_to_bench_results_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench import _common

    monkeypatch.setattr(_common, "RESULTS_DIR", tmp_path)

    path = write_result("some_bench", {"x": 1})

    assert path.parent == tmp_path
    assert path.name.startswith("some_bench-")
    assert path.name.endswith("Z.json")
    assert json.loads(path.read_text())["figures"] == {"x": 1}


@pytest.mark.integration
def test_resolve_broker_starts_an_embedded_broker_without_kafka_bootstrap_servers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)

    with resolve_broker() as broker:
        assert broker.kind == EMBEDDED_TANSU
        assert broker.kafka.bootstrap_servers.startswith("127.0.0.1:")


def test_resolve_broker_uses_kafka_bootstrap_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka.example:9092")

    with resolve_broker() as broker:
        assert broker.kind == EXTERNAL
        assert broker.kafka.bootstrap_servers == "kafka.example:9092"


@pytest.mark.integration
def test_cli_prints_the_table_and_writes_the_json(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    out = tmp_path / "baseline.json"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPIC_PREFIX": topic_prefix,
    }

    # As the README runs it: a script, from the repository root.
    result = subprocess.run(
        [
            sys.executable,
            "bench/broker_baseline.py",
            "--messages",
            "5",
            "--payload-bytes",
            "16",
            "--concurrency",
            "2",
            "--json-out",
            str(out),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "produce→consume round trip" in result.stdout
    figures = json.loads(out.read_text())["figures"]
    assert figures["broker"]["kind"] == EXTERNAL
    assert figures["throughput"]["received"] == 5
    assert figures["round_trip"]["received"] == 5
