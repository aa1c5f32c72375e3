"""How a service declares itself, and the one way every service process is started.

Each service package publishes a :class:`ServiceSpec` under the ``omnistock.services``
entry point group. The dev stack, the container images and the Helm chart all
start services with ``python -m omnistock.events.service <name>``, so there is a
single start-up path to reason about.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import typer
import uvicorn

from omnistock.events import tracing
from omnistock.events.logs import configure_logging

ENTRY_POINT_GROUP = "omnistock.services"
#: Seconds an idle HTTP connection stays open (``HTTP_KEEP_ALIVE_S`` overrides it). Longer
#: than the idle timeout of the clients and load balancers in front (60 s is common): the
#: side that closes an idle connection first must be the client, or a request sent on it
#: as the server closes it is lost in transit (uvicorn's default of 5 s equals httpx's
#: pool expiry and made exactly that race).
DEFAULT_KEEP_ALIVE_S = 75


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """What the platform needs to know to run a service."""

    name: str
    #: ``module:callable`` returning the ASGI app (a factory, so import has no side effects).
    app_factory: str
    default_port: int
    description: str
    needs_database: bool = True

    def create_app(self) -> Any:
        module, _, attribute = self.app_factory.partition(":")
        return getattr(importlib.import_module(module), attribute)()


def discover() -> dict[str, ServiceSpec]:
    """Every installed service, by name, in port order."""
    specs = [ep.load() for ep in entry_points(group=ENTRY_POINT_GROUP)]
    return {spec.name: spec for spec in sorted(specs, key=lambda s: s.default_port)}


def main(
    name: str = typer.Argument(..., help="Service to run, e.g. inventory."),
    host: str = typer.Option(os.environ.get("HOST", "127.0.0.1"), help="Interface to bind."),
    port: int = typer.Option(0, help="Port; 0 means the service's default."),
    log_level: str = typer.Option(os.environ.get("LOG_LEVEL", "info")),
    log_format: str = typer.Option(
        os.environ.get("LOG_FORMAT", "json"), help="json (one object per line) or text."
    ),
) -> None:
    """Run one omnistock service's HTTP API and its consumers in this process."""
    services = discover()
    if name not in services:
        raise typer.BadParameter(f"unknown service {name!r}; installed: {', '.join(services)}")
    spec = services[name]
    if log_format not in ("json", "text"):
        raise typer.BadParameter(f"log format {log_format!r} is neither json nor text")
    configure_logging(log_level, service=name, fmt="json" if log_format == "json" else "text")
    tracing.configure_from_env(f"omnistock-{name}")
    uvicorn.run(
        spec.create_app(),
        host=host,
        port=port or spec.default_port,
        log_level=log_level.lower(),
        # Kubernetes and the dev stack send SIGTERM; consumers need time to commit and leave.
        timeout_graceful_shutdown=20,
        timeout_keep_alive=int(os.environ.get("HTTP_KEEP_ALIVE_S", DEFAULT_KEEP_ALIVE_S)),
        # Consumer hops were seen taking 100-500 ms under uvloop in a first measurement and
        # milliseconds on the standard loop; bench/ re-measures this before it changes.
        loop="asyncio",
        access_log=False,
        # Keep the handler configure_logging installed (uvicorn would add its own).
        log_config=None,
    )


if __name__ == "__main__":
    typer.run(main)
