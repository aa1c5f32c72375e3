"""Run a service's ASGI app inside the test's own event loop, on a real port."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn

from omnistock.devstack.waiting import eventually


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def serving(app: Any, *, ready_timeout: float = 60.0) -> AsyncIterator[httpx.AsyncClient]:
    """Start ``app`` with uvicorn (lifespan and all), wait until /readyz says ready, and
    yield a client for it; shut it down gracefully afterwards."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:

            async def ready() -> bool:
                if task.done():
                    task.result()  # start-up failed: raise its error here
                try:
                    return (await client.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(ready, timeout=ready_timeout, interval=0.05, message=f"{base} ready")
            yield client
    finally:
        server.should_exit = True
        await task
