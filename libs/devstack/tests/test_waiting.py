"""eventually: the one way tests wait."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import pytest

from omnistock.devstack.waiting import eventually


async def test_returns_the_first_truthy_value_of_a_sync_condition() -> None:
    calls = itertools.count(1)
    assert await eventually(lambda: next(calls) >= 3 and "ready") == "ready"
    assert next(calls) == 4


async def test_awaits_an_async_condition() -> None:
    values: Iterator[dict[str, int] | None] = iter([None, {}, {"stock": 5}])

    async def condition() -> dict[str, int] | None:
        await asyncio.sleep(0)
        return next(values)

    assert await eventually(condition) == {"stock": 5}


async def test_times_out_with_the_message_and_last_value() -> None:
    with pytest.raises(AssertionError, match=r"hold granted: still false after 0.1s") as failure:
        await eventually(lambda: 0, timeout=0.1, message="hold granted")
    assert "last value: 0" in str(failure.value)


async def test_a_hanging_async_condition_is_cut_at_the_deadline() -> None:
    async def never() -> bool:
        await asyncio.Event().wait()
        return True

    with pytest.raises(AssertionError, match="was still running and was cancelled"):
        await eventually(never, timeout=0.05, message="answer")


async def test_an_exception_in_the_condition_propagates() -> None:
    def broken() -> bool:
        raise KeyError("sku")

    with pytest.raises(KeyError):
        await eventually(broken)


async def test_the_conditions_own_timeout_is_not_reported_as_ours() -> None:
    async def slow_io() -> bool:
        await asyncio.wait_for(asyncio.Event().wait(), timeout=0.01)
        return True

    with pytest.raises(TimeoutError):
        await eventually(slow_io, timeout=5)
