"""Prometheus metrics of the shared plumbing, one naming scheme for every service.

``omnistock_`` prefix, base units (seconds, bytes), ``_total`` counters. Labels never
carry an id or a SKU: a label value set must stay bounded by the deployment (topics,
consumer groups, routes, locations), or every new id would mint series nobody deletes.
"""

from __future__ import annotations

import threading

from prometheus_client import Counter, Gauge, Histogram

#: Resolve 1-100 ms (the reserve target is a 25 ms p99) and still place the slow tail.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)

HTTP_REQUESTS = Counter(
    "omnistock_http_requests_total",
    "HTTP requests answered, by route template and status code.",
    ["method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "omnistock_http_request_duration_seconds",
    "Time from request to the end of the response, by route template.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
SERVICE_READY = Gauge(
    "omnistock_service_ready",
    "1 once the service has caught up with the log and serves; 0 while it replays or starts.",
)

EVENTS_PRODUCED = Counter(
    "omnistock_events_produced_total",
    "Events durably written to the log (acks=all).",
    ["topic", "type"],
)
PRODUCE_FAILURES = Counter(
    "omnistock_produce_failures_total",
    "Writes given up on after bounded retries (the caller saw BrokerUnavailable).",
    ["topic"],
)
PRODUCE_SECONDS = Histogram(
    "omnistock_produce_seconds",
    "Time from send to broker acknowledgement.",
    ["topic"],
    buckets=LATENCY_BUCKETS,
)
EVENTS_CONSUMED = Counter(
    "omnistock_events_consumed_total",
    "Events handled by a consumer group.",
    ["topic", "type", "group"],
)
BATCH_SECONDS = Histogram(
    "omnistock_consumer_batch_seconds",
    "Time to handle one partition's batch, including its unit of work and offset commit.",
    ["group", "stage"],
    buckets=LATENCY_BUCKETS,
)
HANDLER_ERRORS = Counter(
    "omnistock_handler_errors_total",
    "Handler failures that will be retried (the record is not committed).",
    ["topic", "group"],
)
DLQ_MESSAGES = Counter(
    "omnistock_dlq_messages_total",
    "Records parked in a dead-letter topic, by reason.",
    ["topic", "reason", "group"],
)
READ_MODEL_OVERTAKEN = Counter(
    "omnistock_read_model_writes_overtaken_total",
    "Read-model writes left out because another member had already written the partition "
    "at least as far: a member finishing a batch after a rebalance gave its partitions away.",
    ["topic", "group"],
)
CONSUMER_LAG = Gauge(
    "omnistock_consumer_lag_messages",
    "Log end offset minus the consumer's position, per partition.",
    ["topic", "partition", "group"],
)
OLDEST_UNPROCESSED_AGE = Gauge(
    "omnistock_consumer_oldest_unprocessed_age_seconds",
    "Age of the oldest record fetched and not yet handled (0 when caught up); keeps growing "
    "while a handler is stuck retrying.",
    ["group"],
)
REPLAY_EVENTS = Counter(
    "omnistock_replay_events_total",
    "Events folded while rebuilding state from the log.",
    ["name"],
)
REPLAY_PROGRESS = Gauge(
    "omnistock_replay_progress_ratio",
    "Share of the log a running rebuild has folded (1 once done).",
    ["name"],
)
REPLAY_RATE = Gauge(
    "omnistock_replay_events_per_second",
    "Events per second of the running or last rebuild.",
    ["name"],
)

#: What a bounded label reports once it has seen ``limit`` distinct values.
OVERFLOW = "_other"


class BoundedLabel:
    """Admits the first ``limit`` distinct values of a label that comes from outside (a store
    id a terminal sends) and reports any further one as ``_other``: a typo or a flood of
    made-up ids then costs one series, not one each."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) < self.limit:
                self._seen.add(value)
                return value
        return OVERFLOW
