"""bench/visibility.py: a quick run sees every change, and nothing is lost (no timing)."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_support import run_quick

from bench import visibility


def test_on_hand_reads_the_one_location_and_zero_elsewhere() -> None:
    stock = {"locations": [{"location_id": "A", "on_hand": 3}, {"location_id": "B", "on_hand": 9}]}

    assert visibility.on_hand(stock, "B") == 9
    assert visibility.on_hand(stock, "C") == 0


def test_samples_never_seen_are_counted_apart_from_the_latencies() -> None:
    seen = visibility.Sample("a", sent=0.0, accepted=0.01, visible=0.05, polls=4, poll_s=0.04)
    lost = visibility.Sample("b", sent=0.0, accepted=0.01, visible=None, polls=10, poll_s=0.1)

    figures = visibility.summarise([seen, lost])

    assert figures["samples"] == 2
    assert figures["visible"] == 1
    assert figures["never_visible"] == 1
    assert figures["accepted_to_visible_ms"]["count"] == 1
    assert figures["accepted_to_visible_ms"]["p50"] == pytest.approx(40.0)
    assert figures["polls_per_sample"] == 7
    assert figures["poll_ms"] == pytest.approx(10.0)


@pytest.mark.integration
def test_a_quick_run_sees_every_receipt_and_sale(
    kafka_bootstrap: str, postgres_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    figures = run_quick(
        "visibility.py",
        tmp_path / "visibility.json",
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KAFKA_TOPIC_PREFIX": topic_prefix,
            "KAFKA_FETCH_MAX_WAIT_MS": "10",
            "DATABASE_URL": postgres_url,
        },
    )
    for kind in ("receipt", "pos_sale"):
        phase = figures[kind]
        assert phase["samples"] == phase["visible"] == visibility.QUICK_SAMPLES
        assert phase["accepted_to_visible_ms"]["count"] == visibility.QUICK_SAMPLES
        assert phase["polls_per_sample"] >= 1
    assert figures["checks"] == {"skus": 2 * visibility.QUICK_SAMPLES, "wrong": [], "ok": True}
