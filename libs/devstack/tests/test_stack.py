"""The dev stack's supervisor, run in this process against real servers, and its rules."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from rich.console import Console

from omnistock.devstack._support import free_port, free_ports
from omnistock.devstack.stack import (
    StackConfig,
    StackError,
    StatePaths,
    database_name,
    find_repo_root,
    port_variable,
    resolve_ports,
    run,
    supervisor_running,
)
from omnistock.events.service import ServiceSpec

_START_TIMEOUT_S = 60.0


def _spec(name: str, port: int) -> ServiceSpec:
    return ServiceSpec(name, "unused:factory", port, f"the {name} service")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def state_dir() -> Iterator[Path]:
    # Outside pytest's basetemp: PostgreSQL runs as another user when we are root and
    # must traverse the parents, which pytest keeps at 0700.
    root = Path(tempfile.mkdtemp(prefix="omnistock-dev-test-"))
    yield root / "state"
    shutil.rmtree(root, ignore_errors=True)


def _config(state_dir: Path, **overrides: Any) -> StackConfig:
    broker_port, postgres_port = free_ports("127.0.0.1", 2)
    settings: dict[str, Any] = {
        "paths": StatePaths(state_dir),
        "services": {},
        "service_ports": {},
        "broker_port": broker_port,
        "postgres_port": postgres_port,
        "timeout": _START_TIMEOUT_S,
    } | overrides
    return StackConfig(**settings)


class _Running:
    """A supervisor run as a task of this test's loop, stopped through its event."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.output = io.StringIO()
        self.stop = asyncio.Event()
        self.ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.task = asyncio.ensure_future(
            run(config, Console(file=self.output, soft_wrap=True), self.stop, self.ready.set_result)
        )

    async def until_ready(self) -> dict[str, Any]:
        await asyncio.wait(
            {self.ready, self.task}, timeout=_START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
        assert self.ready.done(), f"not ready; output:\n{self.output.getvalue()}"
        return self.ready.result()

    async def stopped(self) -> int:
        self.stop.set()
        return await asyncio.wait_for(self.task, _START_TIMEOUT_S)


@pytest.fixture
async def no_services(state_dir: Path) -> AsyncIterator[_Running]:
    running = _Running(_config(state_dir))
    yield running
    if not running.task.done():
        await running.stopped()


def test_repo_root_is_the_uv_workspace_above_the_cwd(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.uv.workspace]\nmembers = ["libs/a"]\n')
    member = tmp_path / "libs" / "a"
    member.mkdir(parents=True)
    # A member's own pyproject.toml is not the root.
    (member / "pyproject.toml").write_text('[project]\nname = "a"\n')
    assert find_repo_root(member) == tmp_path
    assert find_repo_root(tmp_path) == tmp_path


def test_without_a_workspace_the_cwd_is_the_root(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("not toml [")
    assert find_repo_root(tmp_path) == tmp_path


def test_every_service_gets_its_own_database_and_port_variable() -> None:
    assert database_name("inventory") == "omnistock_inventory"
    assert database_name("pos-gateway") == "omnistock_pos_gateway"
    assert port_variable("pos-gateway") == "OMNISTOCK_POS_GATEWAY_PORT"


def test_ports_come_from_the_option_then_the_environment_then_the_spec() -> None:
    services = {
        "inventory": _spec("inventory", 8001),
        "orders": _spec("orders", 8002),
        "pos-gateway": _spec("pos-gateway", 8003),
    }
    environ = {"OMNISTOCK_INVENTORY_PORT": "9101", "OMNISTOCK_POS_GATEWAY_PORT": "9103"}

    ports = resolve_ports(services, {"inventory": 9201}, environ)

    assert ports == {"inventory": 9201, "orders": 8002, "pos-gateway": 9103}


def test_port_settings_that_name_nothing_or_no_port_are_refused() -> None:
    services = {"inventory": _spec("inventory", 8001)}
    with pytest.raises(StackError, match=r"--port names orders, .*installed: inventory"):
        resolve_ports(services, {"orders": 9000}, {})
    with pytest.raises(StackError, match="OMNISTOCK_INVENTORY_PORT: 'x' is not a TCP port"):
        resolve_ports(services, {}, {"OMNISTOCK_INVENTORY_PORT": "x"})


@pytest.mark.integration
async def test_without_services_the_stack_runs_the_servers_and_stops_clean(
    no_services: _Running,
) -> None:
    config = no_services.config
    state = await no_services.until_ready()

    assert json.loads(config.paths.state_file.read_text()) == state
    assert state["ready"] is True
    assert state["pid"] == os.getpid()
    assert state["services"] == {}
    assert state["broker"]["bootstrap_servers"] == f"127.0.0.1:{config.broker_port}"
    assert state["postgres"]["url"] == f"postgresql://postgres@127.0.0.1:{config.postgres_port}"
    assert all(" is not installed" in line for line in state["demo"])
    assert supervisor_running(config.paths)

    status = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "omnistock.devstack.cli",
        "dev",
        "status",
        "--state-dir",
        str(config.paths.root),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await status.communicate()
    assert status.returncode == 0, output.decode()
    assert b"everything is up" in output

    assert await no_services.stopped() == 0
    assert not config.paths.state_file.exists()
    assert not supervisor_running(config.paths)
    assert _gone(state["broker"]["pid"])
    assert _gone(state["postgres"]["pid"])
    assert _port_free(config.broker_port)
    assert _port_free(config.postgres_port)


@pytest.mark.integration
async def test_a_second_stack_on_the_same_state_dir_is_refused(no_services: _Running) -> None:
    await no_services.until_ready()
    # The running stack's ports are taken, but the lock is what answers first.
    second = _Running(no_services.config)
    with pytest.raises(StackError, match="already running"):
        await asyncio.wait_for(second.task, _START_TIMEOUT_S)
    assert json.loads(no_services.config.paths.state_file.read_text())["ready"] is True


@pytest.mark.integration
async def test_a_taken_port_fails_the_start_before_anything_runs(state_dir: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        config = _config(
            state_dir,
            services={"inventory": _spec("inventory", 8001)},
            service_ports={"inventory": taken},
        )
        running = _Running(config)

        assert await asyncio.wait_for(running.task, _START_TIMEOUT_S) == 1

    output = running.output.getvalue()
    assert f"port {taken} for service inventory is already in use" in output
    assert "--port inventory=PORT or OMNISTOCK_INVENTORY_PORT" in output
    assert "broker:" not in output  # nothing was started
    assert not config.paths.state_file.exists()


@pytest.mark.integration
async def test_two_components_on_one_port_are_refused(state_dir: Path) -> None:
    port = free_port("127.0.0.1")
    running = _Running(_config(state_dir, broker_port=port, postgres_port=port))

    assert await asyncio.wait_for(running.task, _START_TIMEOUT_S) == 1
    assert f"PostgreSQL and broker are both given port {port}" in running.output.getvalue()


def test_ports_picked_together_are_different_and_free() -> None:
    # The CLI test gives every component its own port; picked one at a time, two of them
    # once came out the same and the stack refused to start.
    ports = free_ports("127.0.0.1", 64)
    assert len(set(ports)) == 64
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
