"""The replenishment service's Prometheus metrics.

Labelled by ``location_id`` at most (registered stores and warehouses: hundreds, not
millions); never by SKU or request id. Each replica reports the locations whose
``replenishment.events`` partitions it owns, so a sum over replicas is the whole chain
(and the oldest request age is the max over replicas).
"""

from __future__ import annotations

from prometheus_client import Gauge

SKUS_BELOW_REORDER_POINT = Gauge(
    "omnistock_replenishment_skus_below_reorder_point",
    "SKUs with a reorder rule whose available + inbound is at or below the reorder point.",
    ["location_id"],
)
OPEN_REQUESTS = Gauge(
    "omnistock_replenishment_open_requests",
    "Replenishment requests requested or dispatched and not yet received.",
    ["location_id"],
)
OLDEST_OPEN_REQUEST_AGE = Gauge(
    "omnistock_replenishment_oldest_open_request_age_seconds",
    "Age of the oldest replenishment request not yet received (0 when none is open).",
)
