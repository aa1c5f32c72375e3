"""Small helpers shared by the embedded process wrappers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def free_port(host: str) -> int:
    """A TCP port that was free on ``host`` a moment ago.

    The port is released before the caller binds it, so another process can
    take it in between; callers that picked it this way retry with a new one.
    """
    return free_ports(host, 1)[0]


def free_ports(host: str, count: int) -> list[int]:
    """``count`` different TCP ports that were free on ``host`` a moment ago.

    Picked while all are held open: ports picked one at a time can repeat, because
    the kernel may hand a just-released port out again.
    """
    with contextlib.ExitStack() as held:
        ports: list[int] = []
        for _ in range(count):
            sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(sock.getsockname()[1])
        return ports


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file, for error messages."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else f"(log at {path} is empty)"


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code.

    It runs in a thread of its own with a fresh event loop, so it also works when
    the calling thread is inside a running loop (an async test that restarts a
    broker), where ``asyncio.run`` would refuse.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="omnistock-devstack") as pool:
        return pool.submit(asyncio.run, coro).result()
