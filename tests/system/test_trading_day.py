"""A compressed trading day on the whole platform, undisturbed: the reference the fault
tests are compared with."""

from __future__ import annotations

import pytest
from system_invariants import check_day
from system_scenario import TradingDay
from system_stack import Platform

# Service restarts on a loaded 2-core machine take tens of seconds each.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


async def test_a_quiet_trading_day_keeps_every_invariant(
    platform: Platform, day: TradingDay
) -> None:
    async def check(phase: str) -> None:
        await check_day(platform, day, phase)

    await day.run(check)

    ledger = platform.ledger
    assert ledger.count("reservation") >= day.size.carts // 2
    assert ledger.count("order") > 0
    assert ledger.count("shipment") > 0
    assert ledger.count("cancel") > 0
    assert ledger.count("release") > 0
    assert any(c.status == "expired" for c in day.book.carts.values())
    assert day.book.replenishments, "the day's sales opened no replenishment request"
    assert not ledger.transport_errors, f"nothing was down: {ledger.transport_error_kinds}"
