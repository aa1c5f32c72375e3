"""bench/system.py: a quick run completes a checked trading day per step and draws its chart
(no timing is asserted)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bench_support import run_quick

from bench import system

#: A quick run is two checked trading days: longer than the other benches' quick runs.
CLI_TIMEOUT_S = 600
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def step(n: int, writes_per_s: float, reserve_p99: float) -> dict[str, Any]:
    ms = {"count": 10, "p50": reserve_p99 / 2, "p99": reserve_p99}
    return {
        "step": n,
        "parallel": 2**n,
        "writes": 10,
        "writes_per_s": writes_per_s,
        "endpoints_ms": {"reservation": ms, "pos": ms},
        "visibility_ms": None,
    }


def test_the_chart_is_a_png_of_every_step(tmp_path: Path) -> None:
    figures = {"steps": [step(1, 50.0, 8.0), step(2, 90.0, 30.0)]}

    path = system.chart(figures, tmp_path / "chart.png")

    assert path.read_bytes().startswith(PNG_MAGIC)


@pytest.mark.integration
@pytest.mark.soak
def test_a_quick_run_checks_every_day_and_writes_figures_and_chart(tmp_path: Path) -> None:
    out, png = tmp_path / "system.json", tmp_path / "system.png"

    figures = run_quick("system.py", out, {}, "--chart", str(png), timeout=CLI_TIMEOUT_S)

    assert [s["step"] for s in figures["steps"]] == [1, 2]
    for measured in figures["steps"]:
        # Every endpoint of the day was exercised and answered.
        assert {"reservation", "order", "pos", "shipment", "cancel", "release"} <= set(
            measured["endpoints_ms"]
        )
        assert measured["writes"] > 0
    assert figures["replay"]["events"] > 0
    assert set(figures["services"]) <= {n.split("[")[0] for n in figures["peak_rss_mib"]}
    assert png.read_bytes().startswith(PNG_MAGIC)
