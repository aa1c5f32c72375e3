"""The pos-gateway's Prometheus metrics.

No label carries a store or terminal id: ids come from the terminals' requests, so
a typo or a new store would mint series nobody deletes, and every replica exports
its own copy. Which terminal has gaps, and the sales of one store per minute, are
answered by ``GET /v1/pos/terminals/...`` and ``GET /v1/pos/sales``; the metrics
below say *that* something is wrong or how the chain sells as a whole.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

SUBMISSIONS = Counter(
    "omnistock_pos_transactions_total",
    "Transactions answered by this replica, by type and outcome (accepted, duplicate, rejected).",
    ["type", "outcome"],
)
REJECTIONS = Counter(
    "omnistock_pos_rejections_total",
    "Refused transactions by reason (invalid, future_timestamp, unknown_void_target, ...).",
    ["reason"],
)
UNITS = Counter(
    "omnistock_pos_units_total",
    "Units in transactions this replica accepted, by type (rate() of it: units per minute).",
    ["type"],
)
REVENUE = Counter(
    "omnistock_pos_revenue_total",
    "Value of the lines of transactions this replica accepted, by type and ISO currency "
    "(net revenue = sale - return -/+ void; per store: GET /v1/pos/sales).",
    ["type", "currency"],
)
MISSING_TRANSACTIONS = Gauge(
    "omnistock_pos_missing_transactions",
    "Sequence numbers never received, summed over every terminal (per terminal: "
    "GET /v1/pos/terminals/{store_id}/{terminal_id}).",
)
TERMINALS_WITH_GAPS = Gauge(
    "omnistock_pos_terminals_with_gaps",
    "Terminals with at least one sequence number never received.",
)
