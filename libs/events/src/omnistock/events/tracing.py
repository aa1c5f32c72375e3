"""W3C trace context across Kafka hops, with OpenTelemetry messaging spans.

The aiokafka auto-instrumentation ends its consumer span before our handler
runs, which orphans every span made while handling; so the process span is
opened here, around the handler, parented on the producer's context and linked
to it as the messaging semantic conventions describe.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import Link, Span, SpanKind

_tracer = trace.get_tracer("omnistock.events")


def current_trace_context() -> tuple[str | None, str | None]:
    """The active span's ``traceparent`` and ``tracestate``, for an outgoing envelope."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent"), carrier.get("tracestate")


@contextmanager
def send_span(topic: str, event_type: str) -> Iterator[Span]:
    with _tracer.start_as_current_span(
        f"send {topic}",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.destination.name": topic,
            "cloudevents.event_type": event_type,
        },
    ) as span:
        yield span


@contextmanager
def process_span(
    topic: str,
    *,
    partition: int,
    offset: int,
    consumer_group: str | None,
    traceparent: str | None,
    tracestate: str | None,
    event_type: str | None,
    event_id: str | None,
) -> Iterator[Span]:
    carrier = {k: v for k, v in (("traceparent", traceparent), ("tracestate", tracestate)) if v}
    parent = propagate.extract(carrier)
    producer_context = trace.get_current_span(parent).get_span_context()
    links = [Link(producer_context)] if producer_context.is_valid else []
    attributes: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": topic,
        "messaging.destination.partition.id": str(partition),
        "messaging.kafka.offset": offset,
    }
    if consumer_group:
        attributes["messaging.consumer.group.name"] = consumer_group
    if event_type:
        attributes["cloudevents.event_type"] = event_type
    if event_id:
        attributes["messaging.message.id"] = event_id
    with _tracer.start_as_current_span(
        f"process {topic}",
        context=parent,
        kind=SpanKind.CONSUMER,
        links=links,
        attributes=attributes,
    ) as span:
        yield span
