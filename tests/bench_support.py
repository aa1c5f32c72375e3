"""Running a benchmark script the way the README does, for the bench smoke tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Only a hang should trip it: a quick run starts services and measures a broker baseline.
CLI_TIMEOUT_S = 300


def run_quick(
    script: str,
    out: Path,
    env: Mapping[str, str],
    *args: str,
    timeout: float = CLI_TIMEOUT_S,
) -> dict[str, Any]:
    """``bench/<script> --quick --json-out out *args`` from the repository root, with
    ``env`` added to this environment; it must succeed and print the broker baseline.
    Returns the figures it wrote."""
    result = subprocess.run(
        [sys.executable, f"bench/{script}", "--quick", "--json-out", str(out), *args],
        cwd=REPO_ROOT,
        env={**os.environ, "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broker baseline" in result.stdout
    figures: dict[str, Any] = json.loads(out.read_text())["figures"]
    return figures
