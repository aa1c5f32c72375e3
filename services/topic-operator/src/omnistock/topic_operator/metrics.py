"""The operator's Prometheus metrics (kopf has none of its own). Alert rules use these names."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILIATIONS = Counter(
    "omnistock_operator_reconciliations_total",
    "Handler runs, by handler (create, update, resume, drift, delete).",
    ["handler"],
)
FAILURES = Counter(
    "omnistock_operator_reconciliation_failures_total",
    "Handler runs that ended with Ready=False or an error (retried).",
    ["handler"],
)
DURATION = Histogram(
    "omnistock_operator_reconciliation_duration_seconds",
    "Time one handler run took, broker round trips included.",
    ["handler"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RESOURCES = Gauge("omnistock_operator_resources", "KafkaTopic resources the operator watches.")
PAUSED_RESOURCES = Gauge(
    "omnistock_operator_paused_resources",
    "KafkaTopic resources carrying the omnistock.io/paused annotation.",
)
