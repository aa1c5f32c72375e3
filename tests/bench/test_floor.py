"""bench/floor.py: a quick run answers every request, and every 201 is a record in the log."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_support import run_quick

from bench._common import cpu_per_answer


def test_cpu_per_answer_is_the_process_cores_over_the_answer_rate() -> None:
    cpu = {"cores": {"floor app": 0.9, "broker": 0.1}}

    assert cpu_per_answer(cpu, "floor app", 1000).value == "0.90 ms"
    # No such process (an external broker), or no answers: nothing to divide.
    assert cpu_per_answer(cpu, "PostgreSQL", 1000).value == "-"
    assert cpu_per_answer(cpu, "broker", 0).value == "-"


@pytest.mark.integration
def test_a_quick_run_writes_one_record_per_answer(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    figures = run_quick(
        "floor.py",
        tmp_path / "floor.json",
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KAFKA_TOPIC_PREFIX": topic_prefix,
            # The embedded broker's short fetch wait, as the dev stack sets it: with the
            # default 500 ms the baseline's round trips take seconds each.
            "KAFKA_FETCH_MAX_WAIT_MS": "10",
        },
    )
    (rate,) = figures["rates"]
    assert rate["outcomes"]["held"] == rate["requests"] > 0
    assert rate["error_rate"] == 0
    # The broker is the test harness's, not the run's: its CPU is not the run's to count.
    assert set(rate["cpu"]["cores"]) == {"load generator (this process)", "floor app"}
    check = figures["check"]
    assert check["ok"] is True
    # The warm-up's 50 and the measured ones: each 201 is one record.
    assert check["in_the_log"] == check["answered_201"] == 50 + rate["requests"]
