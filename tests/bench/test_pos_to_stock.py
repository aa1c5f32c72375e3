"""bench/pos_to_stock.py runs end to end and writes complete figures (no timed assertions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Only a hang should trip it: two services and a broker baseline start in the run.
CLI_TIMEOUT_S = 300


def test_quick_run_reports_latency_and_throughput_beside_the_baseline(tmp_path: Path) -> None:
    out = tmp_path / "pos.json"
    result = subprocess.run(
        [sys.executable, "bench/pos_to_stock.py", "--quick", "--json-out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(out.read_text())["figures"]
    assert figures["sale_to_stock_ms"]["count"] == figures["parameters"]["sales"]
    assert figures["batch"]["transactions"] == 200
    assert figures["batch"]["answered_per_s"] > 0
    assert figures["broker_baseline"]["round_trip"]["received"] > 0
    assert "raw broker baseline" in result.stdout
