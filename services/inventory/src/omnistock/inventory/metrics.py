"""The inventory service's own Prometheus metrics (the plumbing's are in omnistock.events).

Locations are a label: a retailer has hundreds, registered through the API. SKUs and
reservation ids never are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge

#: What the stock gauges report for stock rows at a location nobody registered (a POS sale
#: from an unknown store id): one series for all of them.
UNREGISTERED = "_unregistered"

RESERVATIONS = Counter(
    "omnistock_inventory_reservations_total",
    "Reservations reaching an outcome (held, rejected, expired, committed, released), counted "
    "once by the owner of their inventory.reservations partition as the log decides them.",
    ["outcome"],
)
SKUS = Gauge(
    "omnistock_inventory_skus",
    "SKUs with a stock level at the location (read model, refreshed periodically).",
    ["location_id"],
)
SKUS_ZERO_AVAILABLE = Gauge(
    "omnistock_inventory_skus_zero_available",
    "SKUs whose available quantity at the location is zero or below: nothing more can be "
    "reserved or sold there (read model, refreshed periodically).",
    ["location_id"],
)


def audit_metrics(registry: CollectorRegistry) -> tuple[Gauge, Gauge, Gauge]:
    """The audit's results, in a registry of its own: it runs as a job and hands them to a
    Pushgateway or a node-exporter textfile, not to a scrape of a long-running process."""
    violations = Gauge(
        "omnistock_inventory_audit_violations",
        "Invariant violations the last audit of the log found, by invariant (I1-I4).",
        ["invariant"],
        registry=registry,
    )
    events = Gauge(
        "omnistock_inventory_audit_events",
        "Events the last audit replayed.",
        registry=registry,
    )
    finished = Gauge(
        "omnistock_inventory_audit_last_run_timestamp_seconds",
        "When the last audit finished (Unix time).",
        registry=registry,
    )
    return violations, events, finished


def publish_stock_counts(counts: Mapping[str, tuple[int, int]], registered: Iterable[str]) -> None:
    """Set the stock gauges from ``counts`` (per location: SKUs, SKUs at zero available).
    Every registered location gets a value (0 without stock rows); the rest share one."""
    figures = {location_id: (0, 0) for location_id in registered}
    stray = [0, 0]
    for location_id, (skus, zero) in counts.items():
        if location_id in figures:
            figures[location_id] = (skus, zero)
        else:
            stray[0] += skus
            stray[1] += zero
    if any(stray):
        figures[UNREGISTERED] = (stray[0], stray[1])
    for location_id, (skus, zero) in figures.items():
        SKUS.labels(location_id).set(skus)
        SKUS_ZERO_AVAILABLE.labels(location_id).set(zero)
