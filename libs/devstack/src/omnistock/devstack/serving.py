"""Run a service for a test: its ASGI app inside the test's event loop, or a process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from omnistock.devstack._support import free_port
from omnistock.devstack.credentials import admin_headers
from omnistock.devstack.waiting import eventually
from omnistock.events.service import DEFAULT_KEEP_ALIVE_S

#: Services under test listen on the loopback only.
HOST = "127.0.0.1"


@contextlib.asynccontextmanager
async def serving(
    app: Any, *, ready_timeout: float = 60.0, headers: Mapping[str, str] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """Start ``app`` with uvicorn (lifespan and all), wait until /readyz says ready, and
    yield a client for it, sending ``headers`` (default: the test session's admin
    credential); shut it down gracefully afterwards."""
    port = free_port(HOST)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=HOST,
            port=port,
            log_level="warning",
            lifespan="on",
            # As in production: the client closes idle connections first.
            timeout_keep_alive=DEFAULT_KEEP_ALIVE_S,
        )
    )
    task = asyncio.create_task(server.serve())
    base = f"http://{HOST}:{port}"
    try:
        async with httpx.AsyncClient(
            base_url=base, timeout=30, headers=admin_headers() if headers is None else headers
        ) as client:

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


class ServiceProcess:
    """A service in a process of its own, for tests that kill it (``kill -9``) mid-flight."""

    def __init__(self, name: str, env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.env = dict(env)
        self.log_path = log_path
        self.port = free_port(HOST)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _launch(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [
                    sys.executable,
                    "-m",
                    "omnistock.events.service",
                    self.name,
                    "--port",
                    str(self.port),
                ],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def start(self, ready_timeout: float = 60.0) -> None:
        self._launch()
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as client:

            async def ready() -> bool:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise AssertionError(
                        f"{self.name} exited with {self.process.returncode}: "
                        + self.log_path.read_text()[-3000:]
                    )
                try:
                    return (await client.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(
                ready, timeout=ready_timeout, interval=0.05, message=f"{self.name} ready"
            )

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no final commits, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
