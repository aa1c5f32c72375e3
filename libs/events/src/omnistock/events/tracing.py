"""OpenTelemetry traces across HTTP and Kafka hops, with W3C trace context in record headers.

Off unless an OTLP endpoint is configured through the standard ``OTEL_*`` variables
(:func:`configure_from_env`), and then nearly free: every entry point checks one
module global and hands back a shared no-op context manager. (Even the OpenTelemetry
API's no-op spans cost ~6% of the reserve path's CPU when they were always opened.)

Span shapes follow the OpenTelemetry messaging conventions: ``send <topic>``
(PRODUCER) around each write, ``process <topic>`` (CONSUMER) around each handler,
parented on the producer's context and linked to it. The aiokafka
auto-instrumentation ends its consumer span before our handler runs, which would
orphan every span made while handling; so the process span is opened here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import replace
from typing import Any, TypeVar

from aiokafka.structs import ConsumerRecord
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.semconv._incubating.attributes import messaging_attributes as msg
from opentelemetry.trace import Link, Span, SpanKind, Tracer

from omnistock.events.envelope import Envelope, Position

E = TypeVar("E", bound=Envelope[Any])

#: Set while tracing is on; None is the cheap path every hot call checks first.
_tracer: Tracer | None = None
_NOOP: AbstractContextManager[None] = nullcontext()

KAFKA = "kafka"


def enabled() -> bool:
    return _tracer is not None


def install(provider: TracerProvider | None) -> None:
    """Trace into ``provider`` (tests pass one with an in-memory exporter); None turns off."""
    global _tracer  # noqa: PLW0603 - the one switch every hot path reads
    _tracer = None if provider is None else provider.get_tracer("omnistock.events")


def configure_from_env(service_name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Export spans over OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the traces-only
    variant) is set; the exporter, sampler and resource read the other ``OTEL_*`` variables
    themselves. ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` keep it off."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").lower() == "none":
        return False
    endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if not any(env.get(name) for name in endpoints):
        return False
    # Imported here: the exporter pulls in protobuf and requests, which an untraced process
    # never needs.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )

    # OTEL_SERVICE_NAME, when set, names the service (Resource.create reads it).
    attributes = {} if env.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    install(provider)
    return True


def current_trace_context() -> tuple[str | None, str | None]:
    """The active span's ``traceparent`` and ``tracestate``, for an outgoing envelope."""
    if _tracer is None:
        return None, None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent"), carrier.get("tracestate")


def _extract(traceparent: str | None, tracestate: str | None) -> otel_context.Context:
    carrier = {"traceparent": traceparent} if traceparent else {}
    if tracestate:
        carrier["tracestate"] = tracestate
    return propagate.extract(carrier)


def send_span(topic: str, envelope: Envelope[Any]) -> AbstractContextManager[Span | None]:
    """A ``send <topic>`` PRODUCER span around one write (yields None when tracing is off).

    Parented on the active span; with none active (a write made after handling, e.g. a
    saga's follow-up in its batch's unit of work) on the trace the envelope carries."""
    if _tracer is None:
        return _NOOP
    return _send_span(_tracer, topic, envelope)


@contextmanager
def _send_span(tracer: Tracer, topic: str, envelope: Envelope[Any]) -> Iterator[Span]:
    parent = None
    if not trace.get_current_span().get_span_context().is_valid and envelope.traceparent:
        parent = _extract(envelope.traceparent, envelope.tracestate)
    attributes: dict[str, Any] = {
        msg.MESSAGING_SYSTEM: KAFKA,
        msg.MESSAGING_OPERATION_TYPE: "send",
        msg.MESSAGING_OPERATION_NAME: "send",
        msg.MESSAGING_DESTINATION_NAME: topic,
        msg.MESSAGING_MESSAGE_ID: envelope.id,
        "cloudevents.event_type": envelope.type,
    }
    key = envelope.subject
    if key is not None:
        attributes[msg.MESSAGING_KAFKA_MESSAGE_KEY] = key
    with tracer.start_as_current_span(
        f"send {topic}", context=parent, kind=SpanKind.PRODUCER, attributes=attributes
    ) as span:
        yield span


def stamped(envelope: E) -> E:
    """``envelope`` carrying the active span's context (inside :func:`send_span`: the
    consumer's process span is then parented on the send span)."""
    traceparent, tracestate = current_trace_context()
    if traceparent is None:
        return envelope
    return replace(envelope, traceparent=traceparent, tracestate=tracestate)


def sent(span: Span, position: Position) -> None:
    span.set_attribute(msg.MESSAGING_DESTINATION_PARTITION_ID, str(position.partition))
    span.set_attribute(msg.MESSAGING_KAFKA_OFFSET, position.offset)


def process_span(
    record: ConsumerRecord[bytes, bytes], envelope: Envelope[Any], consumer_group: str | None
) -> AbstractContextManager[Span | None]:
    """A ``process <topic>`` CONSUMER span around handling one record, parented on the
    producer's context and linked to it (no-op when tracing is off)."""
    if _tracer is None:
        return _NOOP
    return _process_span(_tracer, record, envelope, consumer_group)


@contextmanager
def _process_span(
    tracer: Tracer,
    record: ConsumerRecord[bytes, bytes],
    envelope: Envelope[Any],
    consumer_group: str | None,
) -> Iterator[Span]:
    parent = _extract(envelope.traceparent, envelope.tracestate)
    producer_context = trace.get_current_span(parent).get_span_context()
    links = [Link(producer_context)] if producer_context.is_valid else []
    attributes: dict[str, Any] = {
        msg.MESSAGING_SYSTEM: KAFKA,
        msg.MESSAGING_OPERATION_TYPE: "process",
        msg.MESSAGING_OPERATION_NAME: "process",
        msg.MESSAGING_DESTINATION_NAME: record.topic,
        msg.MESSAGING_DESTINATION_PARTITION_ID: str(record.partition),
        msg.MESSAGING_KAFKA_OFFSET: record.offset,
        msg.MESSAGING_MESSAGE_ID: envelope.id,
        "cloudevents.event_type": envelope.type,
    }
    if record.key is not None:
        attributes[msg.MESSAGING_KAFKA_MESSAGE_KEY] = record.key.decode(errors="replace")
    if consumer_group:
        attributes[msg.MESSAGING_CONSUMER_GROUP_NAME] = consumer_group
    with tracer.start_as_current_span(
        f"process {record.topic}",
        context=parent,
        kind=SpanKind.CONSUMER,
        links=links,
        attributes=attributes,
    ) as span:
        yield span


def server_span(
    method: str, path: str, headers: list[tuple[bytes, bytes]]
) -> AbstractContextManager[Span | None]:
    """An HTTP SERVER span, continuing the caller's trace when the request carries one; the
    caller names it ``<method> <route>`` once routing has found the route."""
    if _tracer is None:
        return _NOOP
    traceparent = tracestate = None
    for name, value in headers:
        if name == b"traceparent":
            traceparent = value.decode("latin-1")
        elif name == b"tracestate":
            tracestate = value.decode("latin-1")
    return _tracer.start_as_current_span(
        method,
        context=_extract(traceparent, tracestate),
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method, "url.path": path},
    )
