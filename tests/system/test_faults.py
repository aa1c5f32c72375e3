"""Each fault injected in the middle of a trading day; every invariant holds afterwards and
every write the platform acknowledged is in its final state."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pytest
from system_invariants import check_day
from system_scenario import TradingDay
from system_stack import Platform

# Service restarts on a loaded 2-core machine take tens of seconds each.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

#: The broker stays frozen this long: a fault length, not a wait for anything.
BROKER_PAUSE_S = 10.0
#: PostgreSQL stays down this long.
POSTGRES_DOWN_S = 5.0


def checker(platform: Platform, day: TradingDay) -> Callable[[str], Awaitable[None]]:
    async def check(phase: str) -> None:
        await check_day(platform, day, phase)

    return check


@pytest.mark.soak
async def test_kill_9_of_each_service_in_turn(platform: Platform, day: TradingDay) -> None:
    names = list(platform.specs)
    phases = ("morning", "midday", "afternoon")
    victims = {phase: names[n :: len(phases)] for n, phase in enumerate(phases)}

    def killing(phase: str) -> Callable[[], Awaitable[None]]:
        async def fault() -> None:
            for name in victims[phase]:
                await platform.kill_and_restart(name)

        return fault

    await day.run(checker(platform, day), faults={p: killing(p) for p in phases})
    assert sum(platform.ledger.transport_errors.values()) > 0, "the kills cut requests off"


async def test_kill_9_of_every_service_at_once(platform: Platform, day: TradingDay) -> None:
    async def everything() -> None:
        await platform.kill_and_restart(*platform.specs)

    await day.run(checker(platform, day), faults={"midday": everything})
    assert sum(platform.ledger.transport_errors.values()) > 0, "the kills cut requests off"


async def test_broker_frozen_for_ten_seconds(platform: Platform, day: TradingDay) -> None:
    answered_while_frozen: list[tuple[str, float, str | None]] = []

    async def freeze() -> None:
        platform.pause_broker()
        await asyncio.sleep(BROKER_PAUSE_S)  # the length of the outage
        # Taken before the broker is back: these 503s came while it was gone.
        answered_while_frozen.extend(platform.ledger.unavailable)
        platform.resume_broker()

    await day.run(checker(platform, day), faults={"morning": freeze})
    # Writes were refused (503 + Retry-After) during the outage instead of hanging, and
    # every acknowledged write is in the final state (the checks above).
    assert answered_while_frozen, "no write was answered 503 while the broker was frozen"
    assert all(retry_after for _, _, retry_after in answered_while_frozen)


async def test_postgres_stopped_and_restarted(platform: Platform, day: TradingDay) -> None:
    async def outage() -> None:
        platform.stop_postgres()
        await asyncio.sleep(POSTGRES_DOWN_S)  # the length of the outage
        platform.start_postgres()

    await day.run(checker(platform, day), faults={"morning": outage, "afternoon": outage})


async def test_rebalance_storm(platform: Platform, day: TradingDay) -> None:
    """Extra replicas join and leave (gracefully or by kill -9) all day long."""
    stop = asyncio.Event()
    changes = 0

    async def storm() -> None:
        nonlocal changes
        crash = False
        while not stop.is_set():
            for name in ("inventory", "orders"):
                if stop.is_set():
                    return
                await platform.add_replica(name)
                changes += 1
                platform.remove_replica(name, crash=crash)
                changes += 1
                crash = not crash

    weather = asyncio.create_task(storm())
    try:
        await day.run(checker(platform, day))
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await weather
    assert changes >= 2, "replicas came and went during the day"
    await check_day(platform, day, "after the storm")


async def test_duplicated_and_reordered_redelivery(platform: Platform, day: TradingDay) -> None:
    copies = 0

    async def redeliver() -> None:
        nonlocal copies
        copies = await platform.redeliver()

    await day.run(checker(platform, day), faults={"afternoon": redeliver})
    assert copies > 0
    await platform.consumed_to_the_end()
    await check_day(platform, day, "after every copy was consumed")
