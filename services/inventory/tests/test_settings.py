"""Settings that cannot work together are refused at start, naming both."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from omnistock.inventory.settings import InventorySettings


def test_a_verdict_margin_as_long_as_the_shortest_hold_is_refused() -> None:
    with pytest.raises(ValidationError, match="INVENTORY_HELD_VERDICT_MARGIN_S"):
        InventorySettings(min_ttl_seconds=2, held_verdict_margin_s=5)
    assert InventorySettings(min_ttl_seconds=2, held_verdict_margin_s=1).held_verdict_margin_s == 1
