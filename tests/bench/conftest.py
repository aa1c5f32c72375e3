"""bench/ is a directory of scripts, not an installed package; its tests import it the
way the scripts do, as ``bench.<module>`` from the repository root."""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
