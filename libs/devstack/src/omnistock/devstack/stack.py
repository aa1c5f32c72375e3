"""The developer stack: a broker, PostgreSQL and every installed service, run by one supervisor.

``omnistock dev up`` runs :func:`supervise` in the foreground or, with ``--detach``,
in a background process. The supervisor starts every process of the stack and
is the only one that stops them; other commands find it through its state directory:

- ``dev.lock``, held (``flock``) by the supervisor for its whole life: whether a
  stack is running never depends on a pid that may have been reused;
- ``dev.json``, what runs where, with ``"ready": true`` once everything answers;
- ``logs/<service>.log``, ``logs/broker.log``, and ``logs/dev.log`` for a detached supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from rich.console import Console
from rich.text import Text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError

from omnistock.devstack import demo
from omnistock.devstack._support import log_tail
from omnistock.devstack.broker import EMBEDDED_FETCH_MAX_WAIT_MS, EmbeddedBroker
from omnistock.devstack.credentials import ROLES, LocalIssuer, bearer
from omnistock.devstack.errors import EmbeddedProcessError
from omnistock.devstack.postgres import EmbeddedPostgres, asyncpg_url, ensure_database
from omnistock.events.admin import cluster_id, ensure_topics
from omnistock.events.producer import BrokerUnavailable
from omnistock.events.service import ServiceSpec
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import TOPICS

HOST = "127.0.0.1"
DEFAULT_BROKER_PORT = 9092
DEFAULT_POSTGRES_PORT = 55432
DEFAULT_TIMEOUT_S = 90.0
STATE_DIR_NAME = ".omnistock"
#: The store the demo POS key in ``dev.json`` is bound to.
DEMO_POS_STORE = "store-berlin"

# uvicorn gives open requests and the consumers 20 s (timeout_graceful_shutdown) to finish.
_SERVICE_STOP_GRACE_S = 30.0
# Services, then PostgreSQL (its own 30 s fast-shutdown limit), then the broker.
SUPERVISOR_STOP_TIMEOUT_S = _SERVICE_STOP_GRACE_S + 45.0
_POLL_INTERVAL_S = 0.1
_PROBE_TIMEOUT_S = 3.0
_LOG_LINES = 30


class StackError(Exception):
    """The stack cannot start or stop as asked; the message says why, with log tails."""


def find_repo_root(start: Path) -> Path:
    """The nearest folder from ``start`` upwards whose pyproject.toml declares the uv
    workspace; ``start`` itself when there is none."""
    for folder in (start, *start.parents):
        if _declares_workspace(folder / "pyproject.toml"):
            return folder
    return start


def _declares_workspace(pyproject: Path) -> bool:
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return False
    return "workspace" in data.get("tool", {}).get("uv", {})


@dataclass(frozen=True, slots=True)
class StatePaths:
    """Where a stack keeps its state, logs and PostgreSQL cluster."""

    root: Path

    @classmethod
    def at(cls, state_dir: Path | None) -> StatePaths:
        """``state_dir``, or ``.omnistock`` in the repository root found from the cwd."""
        root = state_dir if state_dir is not None else find_repo_root(Path.cwd()) / STATE_DIR_NAME
        # Absolute, because PostgreSQL runs with its data directory as cwd.
        return cls(root.absolute())

    @property
    def state_file(self) -> Path:
        return self.root / "dev.json"

    @property
    def lock_file(self) -> Path:
        return self.root / "dev.lock"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def supervisor_log(self) -> Path:
        return self.logs / "dev.log"

    @property
    def broker_log(self) -> Path:
        return self.logs / "broker.log"

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"

    @property
    def auth(self) -> Path:
        """The dev token issuer's key, JWKS and API keys file."""
        return self.root / "auth"

    def service_log(self, service: str) -> Path:
        return self.logs / f"{service}.log"


def database_name(service: str) -> str:
    """The database of ``service``: one each, never shared (pos-gateway → omnistock_pos_gateway)."""
    return "omnistock_" + re.sub(r"[^a-z0-9_]", "_", service.lower())


def port_variable(service: str) -> str:
    """The environment variable that moves ``service`` to another port."""
    return f"OMNISTOCK_{re.sub(r'[^A-Z0-9]', '_', service.upper())}_PORT"


def parse_port(text: str, source: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise StackError(f"{source}: {text!r} is not a TCP port (1-65535)")
    return port


def resolve_ports(
    services: Mapping[str, ServiceSpec],
    overrides: Mapping[str, int],
    environ: Mapping[str, str],
) -> dict[str, int]:
    """Each service's port: ``--port name=port``, else ``OMNISTOCK_<NAME>_PORT``, else its
    default."""
    unknown = sorted(set(overrides) - set(services))
    if unknown:
        raise StackError(
            f"--port names {', '.join(unknown)}, which is not an installed service "
            f"(installed: {', '.join(services) or 'none'})"
        )
    ports: dict[str, int] = {}
    for name, spec in services.items():
        variable = port_variable(name)
        if name in overrides:
            ports[name] = overrides[name]
        elif environ.get(variable):
            ports[name] = parse_port(environ[variable], variable)
        else:
            ports[name] = spec.default_port
    return ports


@dataclass(frozen=True, slots=True)
class StackConfig:
    paths: StatePaths
    services: Mapping[str, ServiceSpec]
    #: Every service's port (see :func:`resolve_ports`).
    service_ports: Mapping[str, int]
    broker_port: int = DEFAULT_BROKER_PORT
    postgres_port: int = DEFAULT_POSTGRES_PORT
    #: ``KAFKA_BOOTSTRAP_SERVERS`` of a broker to use instead of the embedded one.
    external_kafka: str | None = None
    #: ``DATABASE_URL`` of a server to use instead of the embedded one.
    external_database: str | None = None
    log_level: str = "info"
    #: Seconds from start to ready, demo data included.
    timeout: float = DEFAULT_TIMEOUT_S
    demo: bool = True


# --- the state file and the lock -------------------------------------------------------------


def read_state(paths: StatePaths) -> dict[str, Any] | None:
    try:
        state = json.loads(paths.state_file.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return state if isinstance(state, dict) else None


def write_state(paths: StatePaths, state: Mapping[str, Any]) -> None:
    # Replaced in one step: `status` and a waiting `up --detach` read it at any moment.
    temporary = paths.state_file.with_name(f".{paths.state_file.name}.{os.getpid()}")
    temporary.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    temporary.replace(paths.state_file)


def supervisor_running(paths: StatePaths) -> bool:
    """Whether a supervisor holds this state directory's lock."""
    try:
        handle = paths.lock_file.open("rb")
    except FileNotFoundError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


@contextlib.contextmanager
def _exclusive(paths: StatePaths) -> Iterator[None]:
    paths.root.mkdir(parents=True, exist_ok=True)
    # Not inherited by children (PEP 446), so the lock ends with the supervisor itself.
    with paths.lock_file.open("ab") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _already_running(paths) from None
        yield


def ensure_not_running(paths: StatePaths) -> None:
    """Fail early when a stack already runs from ``paths`` (the supervisor's lock decides,
    race-free, once it starts)."""
    if supervisor_running(paths):
        raise _already_running(paths)


def _already_running(paths: StatePaths) -> StackError:
    state = read_state(paths) or {}
    return StackError(
        f"an omnistock dev stack is already running from {paths.root} "
        f"(supervisor pid {state.get('pid', '?')}); stop it with `omnistock dev down`"
    )


def demo_credentials(issuer: LocalIssuer) -> dict[str, str]:
    """A credential per role for ``dev.json`` (a day long; the pos key is the Berlin
    store's). ``omnistock dev token`` mints fresh ones."""
    return {
        role: issuer.token(role, store_id=DEMO_POS_STORE if role == "pos" else None, ttl_s=86_400)
        for role in ROLES
    }


# --- the stack -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Service:
    name: str
    port: int
    log: Path
    process: asyncio.subprocess.Process
    database: str | None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


class Stack:
    """The processes of one dev stack. ``start`` records each one as it comes up, so
    ``stop`` cleans up whatever a failed or interrupted start left behind."""

    def __init__(self, config: StackConfig, console: Console) -> None:
        self._config = config
        self._console = console
        self._broker: EmbeddedBroker | None = None
        self._postgres: EmbeddedPostgres | None = None
        self._services: dict[str, _Service] = {}
        self._bootstrap = ""
        self._server_url = ""
        self._began = time.monotonic()
        self._issuer: LocalIssuer | None = None

    @property
    def running(self) -> bool:
        """Whether any of its processes was started and not yet stopped."""
        return bool(self._services) or self._broker is not None or self._postgres is not None

    async def start(self) -> dict[str, Any]:
        """Start everything, wait until each service is ready, load the demo data; return
        what runs where (the components of ``dev.json``)."""
        config = self._config
        self._began = time.monotonic()
        deadline = asyncio.get_running_loop().time() + config.timeout
        config.paths.logs.mkdir(parents=True, exist_ok=True)
        self._check_ports()
        # The services check credentials as in production; the stack is their issuer.
        self._issuer = LocalIssuer(config.paths.auth)
        broker = self._start_broker()
        kafka = KafkaSettings(bootstrap_servers=self._bootstrap)
        try:
            created = await ensure_topics(kafka, TOPICS)
        except BrokerUnavailable as error:
            raise StackError(f"{error}; is the broker up?") from None
        self._say(f"topics: {len(created)} in the registry, on {self._bootstrap}")
        postgres = self._start_postgres()
        databases = {
            name: await self._ensure_database(name)
            for name, spec in config.services.items()
            if spec.needs_database
        }
        for name in config.services:
            await self._spawn(name, databases.get(name))
        await self._wait_ready(deadline)
        urls = {name: service.url for name, service in self._services.items()}
        demo_data = await self._load_demo(urls, deadline) if config.demo else []
        return {
            "credentials": demo_credentials(self._issuer),
            "broker": broker,
            "postgres": postgres,
            "services": {
                name: {
                    "url": service.url,
                    "docs": f"{service.url}/docs",
                    "port": service.port,
                    "pid": service.process.pid,
                    "log": str(service.log),
                    "database": database_name(name) if service.database else None,
                }
                for name, service in self._services.items()
            },
            "demo": demo_data,
        }

    async def _load_demo(self, urls: Mapping[str, str], deadline: float) -> list[str]:
        remaining = max(1.0, deadline - asyncio.get_running_loop().time())
        try:
            assert self._issuer is not None
            admin = bearer(self._issuer.token("admin"))
            return await demo.load(urls, report=self._say, timeout=remaining, headers=admin)
        except (demo.DemoDataError, httpx.HTTPError) as error:
            raise StackError(
                f"loading the demo data failed: {str(error) or type(error).__name__}"
            ) from None

    async def stop(self) -> bool:
        """Stop services, then PostgreSQL, then the broker; True if each stopped cleanly.

        A failure to stop one does not keep the others running.
        """
        # Services first: on the way out they commit to the broker and PostgreSQL.
        results = await asyncio.gather(*(self._stop_service(s) for s in self._services.values()))
        clean = all(results)
        self._services.clear()
        for server in (self._postgres, self._broker):
            if server is None:
                continue
            try:
                server.stop()
            except EmbeddedProcessError as error:
                self._console.print(Text(str(error), style="red"))
                clean = False
        self._postgres = self._broker = None
        return clean

    async def watch(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set, say so when a service exits on its own; the rest keeps running."""
        exits = {
            asyncio.ensure_future(service.process.wait()): service
            for service in self._services.values()
        }
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                done, _ = await asyncio.wait(
                    {stopping, *exits}, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done - {stopping}:
                    service = exits.pop(task)
                    self._console.print(
                        Text(f"{service.name} {_ended(task.result())}", style="red"),
                        Text(f"last lines of {service.log}:\n{log_tail(service.log, _LOG_LINES)}"),
                    )
        finally:
            for task in (stopping, *exits):
                task.cancel()

    def _say(self, message: str) -> None:
        # Seconds since start on every line: where start-up time goes is the first question.
        self._console.print(Text(f"{time.monotonic() - self._began:5.1f}s {message}"))

    def _check_ports(self) -> None:
        """Fail before starting anything when a port is taken or asked for twice."""
        config = self._config
        wanted = [
            (f"service {name}", port, f"--port {name}=PORT or {port_variable(name)}")
            for name, port in config.service_ports.items()
        ]
        if config.external_kafka is None:
            wanted.append(("broker", config.broker_port, "--broker-port or OMNISTOCK_BROKER_PORT"))
        if config.external_database is None:
            wanted.append(
                ("PostgreSQL", config.postgres_port, "--postgres-port or OMNISTOCK_POSTGRES_PORT")
            )
        owners: dict[int, str] = {}
        for component, port, option in wanted:
            if port in owners:
                raise StackError(f"{component} and {owners[port]} are both given port {port}")
            owners[port] = component
            if _port_taken(port):
                raise StackError(
                    f"port {port} for {component} is already in use on {HOST} (another dev "
                    f"stack, or something else); free it or choose another port with {option}"
                )

    def _start_broker(self) -> dict[str, Any]:
        config = self._config
        if config.external_kafka is not None:
            self._bootstrap = config.external_kafka
            self._say(f"broker: {self._bootstrap} (KAFKA_BOOTSTRAP_SERVERS)")
            return {"bootstrap_servers": self._bootstrap, "embedded": False}
        # Every start is a new, empty log with a new cluster id (the broker keeps it in
        # memory); services recognise the new id and rebuild their databases from it.
        broker = EmbeddedBroker(HOST, config.broker_port, log_path=config.paths.broker_log)
        try:
            broker.start()
        except EmbeddedProcessError as error:
            raise StackError(str(error)) from None
        self._broker = broker
        self._bootstrap = broker.bootstrap_servers
        self._say(f"broker: embedded Tansu on {self._bootstrap}, cluster id {broker.cluster_id}")
        return {
            "bootstrap_servers": self._bootstrap,
            "embedded": True,
            "pid": broker.pid,
            "cluster_id": broker.cluster_id,
            "log": str(broker.log_path),
        }

    def _start_postgres(self) -> dict[str, Any]:
        config = self._config
        if config.external_database is not None:
            self._server_url = asyncpg_url(config.external_database)
            self._say(f"PostgreSQL: {display_url(self._server_url)} (DATABASE_URL)")
            return {"url": display_url(self._server_url), "embedded": False}
        postgres = EmbeddedPostgres(config.paths.pgdata, config.postgres_port, host=HOST)
        try:
            postgres.start()
        except EmbeddedProcessError as error:
            raise StackError(str(error)) from None
        self._postgres = postgres
        self._server_url = postgres.url()
        self._say(f"PostgreSQL: embedded on {HOST}:{postgres.port}, data in {postgres.data_dir}")
        return {
            "url": display_url(self._server_url),
            "embedded": True,
            "pid": postgres.pid,
            "data_dir": str(postgres.data_dir),
            "log": str(postgres.log_path),
        }

    async def _ensure_database(self, service: str) -> str:
        try:
            return await ensure_database(self._server_url, database_name(service))
        except (OSError, SQLAlchemyError) as error:
            raise StackError(
                f"cannot create database {database_name(service)} on "
                f"{display_url(self._server_url)}: {error}"
            ) from None

    async def _spawn(self, name: str, database: str | None) -> None:
        config = self._config
        port = config.service_ports[name]
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self._bootstrap,
            "INSTANCE_ID": f"{name}-0",
            "LOG_LEVEL": config.log_level,
        }
        assert self._issuer is not None
        env.update(self._issuer.env)
        if self._broker is not None:
            # Tansu holds every fetch for the whole wait, which would be every consumer's latency.
            env.setdefault("KAFKA_FETCH_MAX_WAIT_MS", str(EMBEDDED_FETCH_MAX_WAIT_MS))
        # A service without a database must not see the server-level URL the user exported.
        env.pop("DATABASE_URL", None)
        if database is not None:
            env["DATABASE_URL"] = database
        log = config.paths.service_log(name)
        with log.open("wb") as output:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "omnistock.events.service",
                name,
                "--host",
                HOST,
                "--port",
                str(port),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                # Its own session: a Ctrl-C in the terminal reaches only the supervisor,
                # which stops the services before the servers they depend on.
                start_new_session=True,
            )
        self._services[name] = _Service(name, port, log, process, database)
        self._say(f"{name}: started (pid {process.pid}) on {HOST}:{port}, log {log}")

    async def _wait_ready(self, deadline: float) -> None:
        """Until every service's /readyz answers 200; fail at once when one exits."""
        loop = asyncio.get_running_loop()
        last: dict[str, str] = {}
        pending = dict(self._services)
        async with httpx.AsyncClient(timeout=_PROBE_TIMEOUT_S) as client:
            while pending:
                for name, service in list(pending.items()):
                    code = service.process.returncode
                    if code is not None:
                        raise StackError(
                            f"{name} {_ended(code)} while starting; last lines of "
                            f"{service.log}:\n{log_tail(service.log, _LOG_LINES)}"
                        )
                    ready, last[name] = await _probe_ready(client, service.url)
                    if ready:
                        del pending[name]
                        self._say(f"{name}: ready at {service.url}")
                if pending and loop.time() > deadline:
                    raise StackError(
                        f"not ready within {self._config.timeout:g}s: "
                        + "; ".join(
                            f"{name} (last /readyz: {last[name]}); last lines of "
                            f"{service.log}:\n{log_tail(service.log, _LOG_LINES)}"
                            for name, service in pending.items()
                        )
                    )
                if pending:
                    await asyncio.sleep(_POLL_INTERVAL_S)

    async def _stop_service(self, service: _Service) -> bool:
        process = service.process
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), _SERVICE_STOP_GRACE_S)
            except TimeoutError:
                self._console.print(
                    Text(
                        f"{service.name} did not stop within {_SERVICE_STOP_GRACE_S:g}s of "
                        f"SIGTERM; killing it (log: {service.log})",
                        style="red",
                    )
                )
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
                return False
        return True


def _ended(code: int) -> str:
    return f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"


def display_url(url: str) -> str:
    """A server URL to show people: libpq form (what psql takes), no password, no database."""
    parsed = make_url(url)
    return URL.create(
        "postgresql", username=parsed.username, host=parsed.host, port=parsed.port
    ).render_as_string()


def _port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers bind: a port held only by connections in TIME_WAIT is free to them.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
        return False


async def _probe_ready(client: httpx.AsyncClient, base_url: str) -> tuple[bool, str]:
    """Whether the service at ``base_url`` is ready, and what it said."""
    try:
        response = await client.get(f"{base_url}/readyz")
    except httpx.TransportError as error:
        return False, f"no answer ({type(error).__name__})"
    if response.status_code == 200:
        return True, "ready"
    return False, f"{response.status_code} {response.text.strip()[:300]}"


# --- the supervisor --------------------------------------------------------------------------


async def run(
    config: StackConfig,
    console: Console,
    stop: asyncio.Event,
    on_ready: Callable[[dict[str, Any]], None],
) -> int:
    """Start the stack, call ``on_ready`` with ``dev.json``'s content, run until ``stop``
    is set, stop everything. Returns the exit code: 0 for a clean stop."""
    with _exclusive(config.paths):
        started_at = datetime.now(UTC)
        state: dict[str, Any] = {
            "ready": False,
            "pid": os.getpid(),
            "started_at": started_at.isoformat(),
            "state_dir": str(config.paths.root),
        }
        write_state(config.paths, state)
        stack = Stack(config, console)
        try:
            code = await _start_and_serve(
                stack, state=state, config=config, console=console, stop=stop, on_ready=on_ready
            )
        finally:
            stopping = stack.running
            if stopping:
                console.print(Text("stopping the dev stack"))
            clean = await stack.stop()
            config.paths.state_file.unlink(missing_ok=True)
        if not clean:
            console.print(Text("stopped, not cleanly", style="red"))
        elif stopping:
            console.print(Text("stopped"))
        return code if clean else 1


async def _start_and_serve(
    stack: Stack,
    *,
    state: dict[str, Any],
    config: StackConfig,
    console: Console,
    stop: asyncio.Event,
    on_ready: Callable[[dict[str, Any]], None],
) -> int:
    began = time.monotonic()
    starting = asyncio.ensure_future(stack.start())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not starting.done():
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError, StackError):
            await starting
        console.print(Text("stop requested while starting"))
        return 0
    try:
        components = starting.result()
    except StackError as error:
        console.print(Text("omnistock dev up failed:", style="red"), Text(str(error)))
        return 1
    state.update(components, ready=True, ready_after_s=round(time.monotonic() - began, 1))
    write_state(config.paths, state)
    on_ready(state)
    await stack.watch(stop)
    return 0


async def supervise(
    config: StackConfig, console: Console, on_ready: Callable[[dict[str, Any]], None]
) -> int:
    """:func:`run` until SIGINT (Ctrl-C), SIGTERM (`omnistock dev down`) or SIGHUP (the
    terminal closed)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        return await run(config, console, stop, on_ready)
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


# --- the other commands' view of a running stack --------------------------------------------


def stop_supervisor(paths: StatePaths, timeout: float = SUPERVISOR_STOP_TIMEOUT_S) -> int | None:
    """SIGTERM the running supervisor and wait until it has stopped everything and exited.

    Returns its pid, or None when no stack is running (a stale ``dev.json`` is removed).
    """
    state = read_state(paths)
    if not supervisor_running(paths):
        paths.state_file.unlink(missing_ok=True)
        return None
    pid = state.get("pid") if state is not None else None
    if not isinstance(pid, int):
        raise StackError(
            f"a supervisor holds {paths.lock_file} but {paths.state_file} names no pid; "
            "it may still be starting, try again"
        )
    try:
        # Held from here on, so a pid reused after the supervisor exits is not mistaken for it.
        supervisor: psutil.Process | None = psutil.Process(pid)
    except psutil.NoSuchProcess:
        supervisor = None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    # The lock is released once everything is stopped, a moment before the process exits.
    while supervisor_running(paths) or (supervisor is not None and _alive(supervisor)):
        if time.monotonic() > deadline:
            raise StackError(
                f"the supervisor (pid {pid}) did not stop within {timeout:g}s; "
                f"see {paths.supervisor_log} or its terminal"
            )
        time.sleep(_POLL_INTERVAL_S)
    return pid


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@dataclass(frozen=True, slots=True)
class Check:
    component: str
    url: str
    ok: bool
    detail: str


async def check(state: Mapping[str, Any], paths: StatePaths) -> list[Check]:
    """A live check of every component ``state`` (a ``dev.json``) names."""
    running = supervisor_running(paths)
    ready = bool(state.get("ready"))
    checks = [
        Check(
            "supervisor",
            str(paths.state_file),
            running and ready,
            ("ready" if ready else "starting") + ("" if running else ", but gone"),
        )
    ]
    broker = state.get("broker")
    if isinstance(broker, dict):
        checks.append(await _check_broker(broker))
    postgres = state.get("postgres")
    if isinstance(postgres, dict):
        checks.append(await _check_postgres(postgres))
    services = state.get("services")
    if isinstance(services, dict):
        async with httpx.AsyncClient(timeout=_PROBE_TIMEOUT_S) as client:
            for name, service in services.items():
                ready, said = await _probe_ready(client, str(service["url"]))
                checks.append(Check(name, str(service["docs"]), ready, said))
    return checks


async def _check_broker(broker: Mapping[str, Any]) -> Check:
    bootstrap = str(broker["bootstrap_servers"])
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT_S):
            found = await cluster_id(KafkaSettings(bootstrap_servers=bootstrap))
    # Whatever the client raises means "not reachable", and is named as it is.
    except Exception as error:
        return Check("broker", bootstrap, False, f"not reachable ({type(error).__name__})")
    expected = broker.get("cluster_id")
    if expected is not None and found != expected:
        # The embedded log lives in memory: another cluster id is another, empty log.
        return Check("broker", bootstrap, False, f"another broker (cluster {found}) answers")
    return Check("broker", bootstrap, True, "reachable")


async def _check_postgres(postgres: Mapping[str, Any]) -> Check:
    url = str(postgres["url"])
    parsed = make_url(url)
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT_S):
            _, writer = await asyncio.open_connection(parsed.host, parsed.port or 5432)
    except (OSError, TimeoutError) as error:
        return Check("PostgreSQL", url, False, f"not reachable ({type(error).__name__})")
    writer.close()
    await writer.wait_closed()
    return Check("PostgreSQL", url, True, "accepting connections")
