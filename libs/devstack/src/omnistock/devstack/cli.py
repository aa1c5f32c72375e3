"""``omnistock``: developer commands. ``omnistock dev up | status | down`` run the whole
system locally; see :mod:`omnistock.devstack.stack`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from omnistock.devstack._support import log_tail
from omnistock.devstack.credentials import DEFAULT_TTL_S, ROLES, LocalIssuer
from omnistock.devstack.stack import (
    DEFAULT_BROKER_PORT,
    DEFAULT_POSTGRES_PORT,
    DEFAULT_TIMEOUT_S,
    Check,
    StackConfig,
    StackError,
    StatePaths,
    check,
    ensure_not_running,
    parse_port,
    read_state,
    resolve_ports,
    stop_supervisor,
    supervise,
)
from omnistock.events.service import ENTRY_POINT_GROUP, ServiceSpec, discover

app = typer.Typer(help="omnistock developer tools.", no_args_is_help=True, add_completion=False)
dev = typer.Typer(
    help="The local stack: broker, PostgreSQL, every installed service and demo data.",
    no_args_is_help=True,
)
app.add_typer(dev, name="dev")
# Unwrapped, since a detached supervisor writes to a log file; no markup, since messages
# carry log lines and paths, in which brackets are text.
console = Console(highlight=False, soft_wrap=True, markup=False)

# The background supervisor fails on its own within --timeout; this only bounds a hang.
_DETACH_MARGIN_S = 30.0
_POLL_INTERVAL_S = 0.1

StateDir = Annotated[
    Path | None,
    typer.Option(
        envvar="OMNISTOCK_STATE_DIR",
        help="Where the stack keeps dev.json, logs and PostgreSQL's data "
        "(default: .omnistock in the repository root).",
        file_okay=False,
    ),
]


@dev.command()
def up(
    *,
    detach: Annotated[
        bool,
        typer.Option(
            "--detach", "-d", help="Run in the background; return once everything is ready."
        ),
    ] = False,
    broker_port: Annotated[
        int,
        typer.Option(
            envvar="OMNISTOCK_BROKER_PORT",
            min=1,
            max=65535,
            help="Port of the embedded broker (unused when KAFKA_BOOTSTRAP_SERVERS is set).",
        ),
    ] = DEFAULT_BROKER_PORT,
    postgres_port: Annotated[
        int,
        typer.Option(
            envvar="OMNISTOCK_POSTGRES_PORT",
            min=1,
            max=65535,
            help="Port of the embedded PostgreSQL (unused when DATABASE_URL is set).",
        ),
    ] = DEFAULT_POSTGRES_PORT,
    port: Annotated[
        list[str] | None,
        typer.Option(
            "--port",
            metavar="NAME=PORT",
            help="A service's port, e.g. --port inventory=9001 (repeatable); "
            "also OMNISTOCK_<NAME>_PORT. Default: the service's own.",
        ),
    ] = None,
    state_dir: StateDir = None,
    log_level: Annotated[
        str, typer.Option(envvar="LOG_LEVEL", help="The services' log level.")
    ] = "info",
    timeout: Annotated[
        float, typer.Option(min=1, help="Seconds allowed from start to ready, demo data included.")
    ] = DEFAULT_TIMEOUT_S,
    demo: Annotated[
        bool, typer.Option("--demo/--no-demo", help="Load the demo stores, warehouse and stock.")
    ] = True,
) -> None:
    """Start the broker, PostgreSQL and every installed service; load demo data; run until
    Ctrl-C (or `omnistock dev down`)."""
    try:
        config = _config(
            state_dir=state_dir,
            broker_port=broker_port,
            postgres_port=postgres_port,
            port_options=port or [],
            log_level=log_level,
            timeout=timeout,
            demo=demo,
        )
        ensure_not_running(config.paths)
    except StackError as error:
        console.print("omnistock dev up:", style="red", end=" ")
        console.print(str(error))
        raise typer.Exit(1) from None
    if detach:
        raise typer.Exit(_detach(config))
    raise typer.Exit(asyncio.run(supervise(config, console, _print_ready)))


@dev.command()
def status(state_dir: StateDir = None) -> None:
    """Check every component of the running stack; exit 1 when one is down."""
    paths = StatePaths.at(state_dir)
    state = read_state(paths)
    if state is None:
        console.print(f"no omnistock dev stack is running (no {paths.state_file})")
        raise typer.Exit(1)
    checks = asyncio.run(check(state, paths))
    console.print(f"state in {paths.state_file}")
    console.print(_table(state, checks))
    down = [c.component for c in checks if not c.ok]
    if down:
        console.print(f"down: {', '.join(down)}", style="red")
        raise typer.Exit(1)
    console.print("everything is up", style="green")


@dev.command()
def down(state_dir: StateDir = None) -> None:
    """Stop the running stack (services, then PostgreSQL, then the broker)."""
    paths = StatePaths.at(state_dir)
    began = time.monotonic()
    try:
        pid = stop_supervisor(paths)
    except StackError as error:
        console.print("omnistock dev down:", style="red", end=" ")
        console.print(str(error))
        raise typer.Exit(1) from None
    if pid is None:
        console.print(f"no omnistock dev stack is running from {paths.root}")
        return
    console.print(
        f"stopped the dev stack (supervisor pid {pid}) in {time.monotonic() - began:.1f}s"
    )


@dev.command()
def token(
    *,
    role: Annotated[str, typer.Option(help=f"One of: {', '.join(ROLES)}.", show_default=False)],
    store: Annotated[
        str | None,
        typer.Option(help="The location id a pos key is bound to (required for pos)."),
    ] = None,
    ttl: Annotated[
        int, typer.Option(min=60, max=7 * 86_400, help="Seconds a JWT stays valid.")
    ] = DEFAULT_TTL_S,
    state_dir: StateDir = None,
) -> None:
    """Print a fresh credential for ROLE on the last line: a JWT from the stack's issuer,
    or for pos an API key bound to --store. Use it as `Authorization: Bearer <it>`."""
    paths = StatePaths.at(state_dir)
    if not (paths.auth / "issuer-key.pem").exists():
        console.print(f"no dev issuer in {paths.auth}: start the stack (omnistock dev up)")
        raise typer.Exit(1)
    try:
        credential = LocalIssuer(paths.auth).token(role, store_id=store, ttl_s=ttl)
    except ValueError as error:
        console.print(f"omnistock dev token: {error}", style="red")
        raise typer.Exit(2) from None
    scopes = " ".join(ROLES[role])
    bound = f", store {store}" if store else ""
    kind = "API key" if role == "pos" else f"JWT valid {ttl}s"
    console.print(f"{role}: {kind}, scopes {scopes}{bound}")
    # Alone on the last line, unwrapped, for $(... | tail -1).
    print(credential)


def _config(
    *,
    state_dir: Path | None,
    broker_port: int,
    postgres_port: int,
    port_options: list[str],
    log_level: str,
    timeout: float,
    demo: bool,
) -> StackConfig:
    services = _installed_services()
    overrides: dict[str, int] = {}
    for option in port_options:
        name, separator, value = option.partition("=")
        if not separator or not name:
            raise StackError(f"--port {option!r}: expected NAME=PORT, e.g. inventory=9001")
        overrides[name] = parse_port(value, f"--port {option}")
    return StackConfig(
        paths=StatePaths.at(state_dir),
        services=services,
        service_ports=resolve_ports(services, overrides, os.environ),
        broker_port=broker_port,
        postgres_port=postgres_port,
        external_kafka=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None,
        external_database=os.environ.get("DATABASE_URL") or None,
        log_level=log_level,
        timeout=timeout,
        demo=demo,
    )


def _installed_services() -> dict[str, ServiceSpec]:
    try:
        return discover()
    # Whatever a broken entry point raises, it is named as it is.
    except Exception as error:
        raise StackError(
            f"cannot load the installed services (entry point group {ENTRY_POINT_GROUP}): "
            f"{type(error).__name__}: {error}"
        ) from None


def _detach(config: StackConfig) -> int:
    """Run the supervisor in a session of its own; return once ``dev.json`` says it is ready."""
    paths = config.paths
    paths.logs.mkdir(parents=True, exist_ok=True)
    with paths.supervisor_log.open("wb") as log:
        supervisor = subprocess.Popen(  # noqa: S603 - this interpreter and our own argv
            _supervisor_argv(config),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    console.print(f"starting the dev stack in the background (pid {supervisor.pid})")
    allowed = config.timeout + _DETACH_MARGIN_S
    deadline = time.monotonic() + allowed
    while True:
        state = read_state(paths)
        if state is not None and state.get("pid") == supervisor.pid and state.get("ready"):
            break
        try:
            # Doubles as the poll interval and as the early-exit check.
            code = supervisor.wait(timeout=_POLL_INTERVAL_S)
        except subprocess.TimeoutExpired:
            if time.monotonic() < deadline:
                continue
            supervisor.terminate()
            console.print(f"the dev stack was not ready within {allowed:g}s", style="red")
            console.print(
                f"stopping it. Last lines of {paths.supervisor_log}:\n"
                f"{log_tail(paths.supervisor_log)}"
            )
            return 1
        console.print(f"the dev stack exited with code {code} while starting", style="red")
        console.print(f"last lines of {paths.supervisor_log}:\n{log_tail(paths.supervisor_log)}")
        return 1
    _print_ready(state)
    console.print(f"running in the background, log {paths.supervisor_log}")
    console.print("stop it with: omnistock dev down")
    return 0


def _supervisor_argv(config: StackConfig) -> list[str]:
    argv = [sys.executable, "-m", "omnistock.devstack.cli", "dev", "up"]
    argv += ["--state-dir", str(config.paths.root)]
    argv += ["--broker-port", str(config.broker_port)]
    argv += ["--postgres-port", str(config.postgres_port)]
    for name, service_port in config.service_ports.items():
        argv += ["--port", f"{name}={service_port}"]
    argv += ["--log-level", config.log_level, "--timeout", str(config.timeout)]
    argv.append("--demo" if config.demo else "--no-demo")
    return argv


def _print_ready(state: Mapping[str, Any]) -> None:
    console.print(_table(state))
    root = Path(state["state_dir"])
    console.print(f"ready in {state['ready_after_s']}s; logs in {root / 'logs'}")
    console.print(f"state in {root / 'dev.json'}")


def _table(state: Mapping[str, Any], checks: list[Check] | None = None) -> Table:
    """Every component with its URL; with ``checks``, their live status."""
    table = Table(title="omnistock dev stack")
    table.add_column("component")
    # Folded rather than cut: a URL is only useful whole.
    table.add_column("URL", overflow="fold")
    table.add_column("pid")
    rows: list[tuple[str, str, str]] = []
    if checks is not None:
        table.add_column("status", overflow="fold")
        rows.append(("supervisor", "", str(state.get("pid", ""))))
    for component in ("broker", "postgres"):
        server = state.get(component)
        if isinstance(server, Mapping):
            url = server.get("bootstrap_servers", server.get("url", ""))
            pid = str(server["pid"]) if server.get("embedded") else "external"
            rows.append(("PostgreSQL" if component == "postgres" else "broker", str(url), pid))
    services = state.get("services")
    if isinstance(services, Mapping):
        rows += [(name, str(s["docs"]), str(s["pid"])) for name, s in services.items()]
    status = {c.component: c for c in checks or []}
    for row in rows:
        found = status.get(row[0])
        if checks is None:
            table.add_row(*row)
        elif found is None:
            table.add_row(*row, "-")
        else:
            table.add_row(*row, Text(found.detail, style="green" if found.ok else "red"))
    return table


if __name__ == "__main__":
    app()
