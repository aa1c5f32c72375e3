"""The pos-gateway's Prometheus metrics.

Units and revenue carry the store: the business watches sales per store, and a
chain has a bounded number of stores. Store ids come from the terminals'
requests, though, so a typo or a flood of made-up ids must not mint series
nobody deletes: the first :data:`MAX_STORES` distinct stores a replica sees are
labelled, any further one counts as ``_other``. Terminal ids never are a label;
which terminal has gaps is answered by ``GET /v1/pos/terminals/...``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from omnistock.events.metrics import BoundedLabel

#: More stores than a chain runs; the rest of a flood of ids is one ``_other`` series.
MAX_STORES = 2_000
store_label = BoundedLabel(MAX_STORES)

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
    "Units in transactions this replica accepted, by store and type (rate() of it: units "
    "per second).",
    ["store_id", "type"],
)
REVENUE = Counter(
    "omnistock_pos_revenue_total",
    "Value of the lines of transactions this replica accepted, by store, type and ISO "
    "currency (net revenue = sale - return -/+ void).",
    ["store_id", "type", "currency"],
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
