"""bench/replay.py: its simulated day is valid stock events, and a quick run adds up.

No timed assertions: the events/s figure is the benchmark's to report, not a test's.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from bench_support import run_quick

from bench import replay as bench_replay
from omnistock.events import codec
from omnistock.events.envelope import Position
from omnistock.events.fold import Fold
from omnistock.inventory.domain.stock import StockBook


def test_every_generated_record_is_a_valid_stock_event_the_fold_applies() -> None:
    day = bench_replay.Day(skus=50, stores=4, seed=7, run="t")
    fold = Fold(StockBook())
    types: Counter[str] = Counter()

    for offset, (key, value, headers) in enumerate(day.records(3_000)):
        envelope = codec.decode(value, headers, Position("t", 0, offset), 0)
        assert envelope.subject == key.decode()
        types[envelope.type.rsplit(".", 1)[-1]] += 1
        assert fold.apply(envelope)

    assert sum(types.values()) == 3_000
    assert types == day.counts
    assert set(types) == {
        "StockReceived",
        "HoldRequested",
        "HoldReleaseRequested",
        "HoldCommitRequested",
        "HoldExpired",
        "StockShipped",
        "PosLineApplied",
        "StockAdjusted",
    }
    book = fold.projection
    assert {h.status for h in book.holds.values()} >= {"held", "released", "committed"}


def test_the_same_seed_gives_the_same_day() -> None:
    first = list(bench_replay.Day(skus=20, stores=2, seed=1, run="x").records(500))
    second = list(bench_replay.Day(skus=20, stores=2, seed=1, run="x").records(500))

    assert first == second


def test_profile_samples_are_shared_out_by_the_innermost_known_frame(tmp_path: Path) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text(
        "replay (omnistock/events/replay.py:1);apply_record (omnistock/events/fold.py:2);"
        "decode (omnistock/events/codec.py:3);model_validate_json (pydantic/main.py:4) 6\n"
        "replay (omnistock/events/replay.py:1);apply (omnistock/events/fold.py:5);"
        "_hold_requested (omnistock/inventory/domain/stock.py:6) 3\n"
        "replay (omnistock/events/replay.py:1);getmany (aiokafka/consumer/consumer.py:7) 1\n"
        "replay (omnistock/events/replay.py:1);Fold.state_hash (omnistock/events/fold.py:9) 5\n"
        "_bootstrap (<frozen importlib._bootstrap>:1) 2\n"
    )

    summary = bench_replay.summarise_profile(raw)

    assert summary["samples"] == 10
    # Imports and the state hash after the clock stopped are not the rebuild's.
    assert summary["samples_outside_the_rebuild"] == 7
    assert summary["shares"] == {
        "pydantic model_validate_json": pytest.approx(0.6),
        "fold: StockBook": pytest.approx(0.3),
        "aiokafka: fetch, records, CRC": pytest.approx(0.1),
    }


@pytest.mark.integration
def test_a_quick_run_replays_everything_it_wrote(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    figures = run_quick(
        "replay.py",
        tmp_path / "replay.json",
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KAFKA_TOPIC_PREFIX": topic_prefix,
            "KAFKA_FETCH_MAX_WAIT_MS": "10",
        },
        "--no-profile",
    )
    written = figures["write"]["records"]
    assert written == figures["parameters"]["events"]
    assert sum(figures["mix"].values()) == written
    rebuilt = figures["rebuild"]
    assert rebuilt["events"] == written
    assert sum(rebuilt["stats"].values()) == written
    assert rebuilt["stats"]["poison"] == 0
    assert rebuilt["peak_rss_kb"] >= rebuilt["rss_before_kb"] > 0
    assert all(figures["checks"].values())
