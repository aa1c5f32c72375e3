"""Prometheus metrics of the shared plumbing. Labels never carry an id or a SKU."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
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
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
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
CONSUMER_LAG = Gauge(
    "omnistock_consumer_lag_messages",
    "Log end offset minus the consumer's position.",
    ["topic", "partition", "group"],
)
OLDEST_UNPROCESSED_AGE = Gauge(
    "omnistock_consumer_oldest_unprocessed_age_seconds",
    "Age of the oldest fetched record not yet handled, per group (0 when caught up).",
    ["group"],
)
REPLAY_EVENTS = Counter(
    "omnistock_replay_events_total",
    "Events folded while rebuilding state from the log.",
    ["name"],
)
REPLAY_RATE = Gauge(
    "omnistock_replay_events_per_second",
    "Events per second of the last completed rebuild.",
    ["name"],
)
