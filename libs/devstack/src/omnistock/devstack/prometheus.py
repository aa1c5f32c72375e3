"""A real Prometheus server for tests and dashboard snapshots (Debian's ``prometheus``).

It runs with a configuration and data directory of its own on a free port, so the
package's system service (if any) plays no part. ``scripts/setup`` installs it.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from omnistock.devstack._support import free_port, log_tail
from omnistock.devstack.waiting import eventually

HOST = "127.0.0.1"
_STOP_GRACE_S = 10.0


def scrape_job(service: str) -> str:
    """The Prometheus job of ``service``: the alert rules select and group by it. The Helm
    chart gives every ServiceMonitor the same job name, whatever the release is called."""
    return f"omnistock-{service}"


def fast_rules(source: Path, target: Path, hold: str = "1s") -> Path:
    """A copy of the rules file ``source`` with every ``for:`` set to ``hold``, so a test
    sees alerts fire within seconds of the condition (thresholds stay as they are)."""
    text = re.sub(r"(?m)^(\s*)for: \S+$", rf"\g<1>for: {hold}", source.read_text())
    target.write_text(text)
    return target


class PrometheusServer:
    """One Prometheus process scraping ``jobs`` (job name -> ``host:port`` targets) every
    ``interval`` and evaluating ``rule_files`` as often."""

    def __init__(
        self,
        workdir: Path,
        jobs: Mapping[str, Sequence[str]],
        *,
        rule_files: Sequence[Path] = (),
        interval: str = "1s",
    ) -> None:
        self.workdir = workdir
        self.jobs = {name: list(targets) for name, targets in jobs.items()}
        self.rule_files = list(rule_files)
        self.interval = interval
        self.port = free_port(HOST)
        self.log_path = workdir / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def config(self) -> dict[str, Any]:
        return {
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval},
            "rule_files": [str(path) for path in self.rule_files],
            "scrape_configs": [
                {
                    "job_name": name,
                    "scrape_interval": self.interval,
                    "scrape_timeout": self.interval,
                    "static_configs": [{"targets": targets}],
                }
                for name, targets in self.jobs.items()
            ],
        }

    def _launch(self) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is missing: run scripts/setup (Debian package)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - the packaged binary, our arguments
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address={HOST}:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def start(self, timeout: float = 60.0) -> None:  # noqa: ASYNC109 - start-up bound
        self._launch()
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as client:

            async def ready() -> bool:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"prometheus exited with {self.process.returncode}:\n"
                        + log_tail(self.log_path)
                    )
                try:
                    return (await client.get("/-/ready")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(ready, timeout=timeout, interval=0.1, message="prometheus ready")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    async def _get(self, path: str, **params: Any) -> Any:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            response = await client.get(path, params=params)
        response.raise_for_status()
        body = response.json()
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus {path} {params}: {body}")
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector: ``[{"metric": {...}, "value": [time, "value"]}, ...]``."""
        result: list[dict[str, Any]] = (await self._get("/api/v1/query", query=expr))["result"]
        return result

    async def query_range(
        self, expr: str, start: float, end: float, step: float
    ) -> list[dict[str, Any]]:
        data = await self._get("/api/v1/query_range", query=expr, start=start, end=end, step=step)
        result: list[dict[str, Any]] = data["result"]
        return result

    async def alerts(self) -> list[dict[str, Any]]:
        """``/api/v1/alerts``: every pending or firing alert with its labels and state."""
        result: list[dict[str, Any]] = (await self._get("/api/v1/alerts"))["alerts"]
        return result

    async def targets_up(self) -> dict[str, bool]:
        """Whether each job's last scrape succeeded."""
        return {
            sample["metric"]["job"]: sample["value"][1] == "1" for sample in await self.query("up")
        }
