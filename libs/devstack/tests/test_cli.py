"""``omnistock dev up | status | down`` end to end: the CLI as a user runs it, with every
installed service, on free ports and a state directory of the test's own.

The two runs share the state directory, as two ``dev up`` in one checkout do: the
second finds PostgreSQL's data from the first and a new, empty broker log.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from typer.testing import CliRunner

from omnistock.devstack import demo
from omnistock.devstack._support import free_ports
from omnistock.devstack.cli import app
from omnistock.devstack.credentials import ROLES
from omnistock.devstack.stack import StatePaths, stop_supervisor
from omnistock.devstack.waiting import eventually
from omnistock.events.service import discover

pytestmark = pytest.mark.integration

_READY_TIMEOUT_S = 120.0
_STOP_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class _Stack:
    state_dir: Path
    argv: list[str]
    env: dict[str, str]
    ports: list[int]

    def cli(self, *args: str, timeout: float = _STOP_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "omnistock.devstack.cli",
                "dev",
                *args,
                "--state-dir",
                str(self.state_dir),
            ],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def state(self) -> dict[str, Any] | None:
        try:
            loaded: dict[str, Any] = json.loads((self.state_dir / "dev.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return loaded


@pytest.fixture(scope="module")
def stack() -> Iterator[_Stack]:
    # Outside pytest's basetemp: PostgreSQL runs as another user when we are root and
    # must traverse the parents, which pytest keeps at 0700.
    root = Path(tempfile.mkdtemp(prefix="omnistock-dev-cli-"))
    services = discover()
    broker_port, postgres_port, *service_ports = free_ports("127.0.0.1", 2 + len(services))
    ports = dict(zip(services, service_ports, strict=True))
    argv = ["--broker-port", str(broker_port), "--postgres-port", str(postgres_port)]
    for name, port in ports.items():
        argv += ["--port", f"{name}={port}"]
    env = dict(os.environ)
    # On an external broker (KAFKA_BOOTSTRAP_SERVERS) the run keeps to topics of its own.
    env["KAFKA_TOPIC_PREFIX"] = f"t{uuid.uuid4().hex[:8]}."
    # Tansu completes a group join after about half the session timeout; the services'
    # consumer groups join one after another, so this is most of their start-up time.
    env["KAFKA_SESSION_TIMEOUT_MS"] = "2000"
    env["KAFKA_HEARTBEAT_INTERVAL_MS"] = "300"
    state = _Stack(root / "state", argv, env, [broker_port, postgres_port, *ports.values()])
    yield state
    stop_supervisor(StatePaths(state.state_dir))  # whatever a failed test left running
    shutil.rmtree(root, ignore_errors=True)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _pids(state: dict[str, Any]) -> list[int]:
    pids = [state["pid"], *(s["pid"] for s in state["services"].values())]
    pids += [state[server]["pid"] for server in ("broker", "postgres") if state[server]["embedded"]]
    return pids


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _assert_everything_answers(stack: _Stack, state: dict[str, Any]) -> None:
    assert state["ready"] is True
    assert set(state["services"]) == set(discover())
    for name, service in state["services"].items():
        assert service["docs"] == f"{service['url']}/docs"
        assert service["log"] == str(stack.state_dir / "logs" / f"{name}.log")
        assert httpx.get(service["docs"]).status_code == 200
        assert httpx.get(f"{service['url']}/readyz").status_code == 200
        if service["database"] is not None:
            assert service["database"] == "omnistock_" + name.replace("-", "_")
    assert "password" not in state["postgres"]["url"]

    status = stack.cli("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "everything is up" in status.stdout
    _assert_credentials_work(stack, state)


def _assert_credentials_work(stack: _Stack, state: dict[str, Any]) -> None:
    """A credential per role in dev.json, and `dev token` mints working ones."""
    assert set(state["credentials"]) == set(ROLES)
    if "inventory" not in state["services"]:
        return
    url = f"{state['services']['inventory']['url']}/v1/locations"
    assert httpx.get(url).status_code == 401
    minted = stack.cli("token", "--role", "staff")
    assert minted.returncode == 0, minted.stdout + minted.stderr
    staff = minted.stdout.strip().splitlines()[-1]
    assert httpx.get(url, headers={"Authorization": f"Bearer {staff}"}).status_code == 200


def _stock(state: dict[str, Any], sku: str) -> dict[str, Any]:
    response = httpx.get(
        f"{state['services']['inventory']['url']}/v1/stock/{sku}",
        headers={"Authorization": f"Bearer {state['credentials']['staff']}"},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _assert_demo_stock(state: dict[str, Any]) -> None:
    if "inventory" not in state["services"]:
        return
    for sku in ("SKU-000001", "SKU-000500", "SKU-001000"):
        on_hand = {
            entry["location_id"]: entry["on_hand"] for entry in _stock(state, sku)["locations"]
        }
        assert on_hand == {loc.location_id: demo.quantity(sku, loc) for loc in demo.LOCATIONS}


async def test_up_in_the_foreground_runs_until_ctrl_c(stack: _Stack) -> None:
    supervisor = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "omnistock.devstack.cli",
        "dev",
        "up",
        *stack.argv,
        "--no-demo",  # the detached run loads it, twice
        "--state-dir",
        str(stack.state_dir),
        env=stack.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    # Read as it comes, so a full pipe can never stall the supervisor.
    output = asyncio.ensure_future(supervisor.communicate())
    try:
        state = await eventually(
            lambda: (found := stack.state()) is not None and found["ready"] and found,
            timeout=_READY_TIMEOUT_S,
            interval=0.1,
            message="dev.json says ready",
        )
        assert state["pid"] == supervisor.pid
        assert state["demo"] == []
        _assert_everything_answers(stack, state)

        supervisor.send_signal(signal.SIGINT)
        printed = (await asyncio.wait_for(output, _STOP_TIMEOUT_S))[0].decode()
    except BaseException:
        if supervisor.returncode is None:
            supervisor.terminate()  # so that it stops what it started
        try:
            printed = (await asyncio.wait_for(asyncio.shield(output), _STOP_TIMEOUT_S))[0].decode()
        finally:
            if supervisor.returncode is None:
                supervisor.kill()
        print(printed)  # shown by pytest with the failure
        raise
    assert supervisor.returncode == 0, printed
    assert "omnistock dev stack" in printed  # the table
    assert f"{stack.state_dir}/dev.json" in printed
    assert [pid for pid in _pids(state) if not _gone(pid)] == []
    assert [port for port in stack.ports if not _port_free(port)] == []
    assert stack.state() is None


async def test_up_detached_then_down_on_the_same_state(stack: _Stack) -> None:
    started = stack.cli("up", "--detach", *stack.argv, timeout=_READY_TIMEOUT_S + 60)

    assert started.returncode == 0, started.stdout + started.stderr
    assert "omnistock dev stack" in started.stdout
    state = stack.state()
    assert state is not None
    assert not _gone(state["pid"])
    _assert_everything_answers(stack, state)
    _assert_demo_stock(state)

    # Loading again changes nothing: every id is the same as the first time.
    urls = {name: service["url"] for name, service in state["services"].items()}
    admin = {"Authorization": f"Bearer {state['credentials']['admin']}"}
    await demo.load(urls, report=lambda _: None, timeout=60, headers=admin)
    _assert_demo_stock(state)

    stopped = stack.cli("down")

    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert f"supervisor pid {state['pid']}" in stopped.stdout
    assert [pid for pid in _pids(state) if not _gone(pid)] == []
    assert [port for port in stack.ports if not _port_free(port)] == []
    assert stack.state() is None
    # With nothing running: no subprocess needed, the commands only read the state dir.
    runner = CliRunner()
    again = runner.invoke(app, ["dev", "down", "--state-dir", str(stack.state_dir)])
    assert (again.exit_code, again.output) == (
        0,
        f"no omnistock dev stack is running from {stack.state_dir}\n",
    )
    status = runner.invoke(app, ["dev", "status", "--state-dir", str(stack.state_dir)])
    assert status.exit_code == 1
    assert "no omnistock dev stack is running" in status.output
