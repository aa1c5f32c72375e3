"""How tests wait: poll a condition until it holds, never sleep a guessed time."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

T = TypeVar("T")


@overload
async def eventually(
    condition: Callable[[], Awaitable[T]],
    *,
    timeout: float = ...,  # noqa: ASYNC109
    interval: float = ...,
    message: str = ...,
) -> T: ...


@overload
async def eventually(
    condition: Callable[[], T],
    *,
    timeout: float = ...,  # noqa: ASYNC109
    interval: float = ...,
    message: str = ...,
) -> T: ...


async def eventually(
    condition: Callable[[], object],
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 - the deadline of the whole poll, by design
    interval: float = 0.02,
    message: str = "condition",
) -> object:
    """Call ``condition`` (sync or async) until it returns something truthy; return that.

    At the deadline raise AssertionError naming ``message`` and the last value
    seen. An async condition still running at the deadline is cancelled. An
    exception raised by the condition propagates at once: a failing check is a
    finding, not a reason to retry.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    last: object = None
    checks = 0
    checking = False
    scope = asyncio.timeout_at(deadline)
    try:
        async with scope:
            while True:
                checking = True
                result = condition()
                last = await result if inspect.isawaitable(result) else result
                checking = False
                checks += 1
                if last:
                    return last
                await asyncio.sleep(interval)
    except TimeoutError:
        if not scope.expired():
            raise  # the condition's own timeout, not ours
        cut = "; the last check was still running and was cancelled" if checking else ""
        raise AssertionError(
            f"{message}: still false after {timeout:g}s ({checks} checks); "
            f"last value: {last!r}{cut}"
        ) from None
