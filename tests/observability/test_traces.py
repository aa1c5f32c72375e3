"""One trace per business flow, across HTTP and every Kafka hop, per the messaging conventions.

The services run in the test's process, tracing into an in-memory exporter.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator, Sequence

import httpx
import pytest
from inventory_support import receive, register_demo_locations
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes import messaging_attributes as msg
from opentelemetry.trace import SpanKind
from pos_support import line, transaction

from omnistock.devstack.postgres import drop_database, ensure_database
from omnistock.devstack.serving import serving
from omnistock.devstack.waiting import eventually
from omnistock.events import tracing
from omnistock.events.admin import ensure_topics
from omnistock.events.logs import JsonFormatter
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import (
    INVENTORY_RESERVATIONS,
    INVENTORY_STOCK,
    POS_TRANSACTIONS,
    TOPICS,
)
from omnistock.inventory.handlers import RESERVATIONS_GROUP, STOCK_GROUP, TRANSLATOR_GROUP
from omnistock.inventory.main import create_inventory_app
from omnistock.inventory.settings import InventorySettings
from omnistock.pos_gateway.main import create_pos_gateway_app
from omnistock.pos_gateway.settings import PosGatewaySettings

HOLD_REQUESTED = "io.omnistock.inventory.HoldRequested"
HOLD_OUTCOME = "io.omnistock.inventory.HoldOutcome"
RESERVATION_HELD = "io.omnistock.inventory.ReservationHeld"
POS_RECORDED = "io.omnistock.pos.PosTransactionRecorded"
POS_LINE_APPLIED = "io.omnistock.inventory.PosLineApplied"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.install(None)


class Trace:
    def __init__(self, spans: Sequence[ReadableSpan]) -> None:
        self.spans = list(spans)
        self.by_id = {span.context.span_id: span for span in self.spans}

    def parent(self, span: ReadableSpan) -> ReadableSpan | None:
        return self.by_id.get(span.parent.span_id) if span.parent is not None else None

    def find(
        self, name: str, kind: SpanKind, event_type: str, group: str | None = "*"
    ) -> list[ReadableSpan]:
        attributes = [(s, s.attributes or {}) for s in self.spans]
        return [
            s
            for s, a in attributes
            if s.name == name
            and s.kind == kind
            and a.get("cloudevents.event_type") == event_type
            and (group == "*" or a.get(msg.MESSAGING_CONSUMER_GROUP_NAME) == group)
        ]


def trace_of(exporter: InMemorySpanExporter, trace_id: int) -> Trace:
    return Trace([s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id])


def server_span(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    [span] = [
        s for s in exporter.get_finished_spans() if s.name == name and s.kind == SpanKind.SERVER
    ]
    return span


def check_process_span(trace: Trace, span: ReadableSpan, topic: str, group: str | None) -> None:
    """A CONSUMER span per the conventions, parented on the send span and linked to it."""
    a = span.attributes or {}
    assert a[msg.MESSAGING_SYSTEM] == "kafka"
    assert a[msg.MESSAGING_OPERATION_TYPE] == "process"
    assert a[msg.MESSAGING_DESTINATION_NAME] == topic
    assert isinstance(a[msg.MESSAGING_KAFKA_OFFSET], int)
    assert a[msg.MESSAGING_DESTINATION_PARTITION_ID].isdigit()
    assert a[msg.MESSAGING_MESSAGE_ID]
    assert a.get(msg.MESSAGING_CONSUMER_GROUP_NAME) == group
    producer = trace.parent(span)
    assert producer is not None
    assert producer.kind == SpanKind.PRODUCER
    assert producer.name == f"send {topic}"
    assert (producer.attributes or {})[msg.MESSAGING_MESSAGE_ID] == a[msg.MESSAGING_MESSAGE_ID]
    linked = [(link.context.trace_id, link.context.span_id) for link in span.links]
    assert linked == [(producer.context.trace_id, producer.context.span_id)]


def check_send_span(span: ReadableSpan, topic: str) -> None:
    a = span.attributes or {}
    assert span.name == f"send {topic}"
    assert a[msg.MESSAGING_SYSTEM] == "kafka"
    assert a[msg.MESSAGING_OPERATION_TYPE] == "send"
    assert a[msg.MESSAGING_DESTINATION_NAME] == topic
    assert isinstance(a[msg.MESSAGING_KAFKA_OFFSET], int)
    assert a[msg.MESSAGING_KAFKA_MESSAGE_KEY]


async def follow_a_reservation(
    inventory: httpx.AsyncClient, exporter: InMemorySpanExporter, kafka: KafkaSettings
) -> None:
    await register_demo_locations(inventory)
    await receive(inventory, "rc-t1", "wh-kassel", SKU_T1=5, SKU_T2=5)
    exporter.clear()
    response = await inventory.post(
        "/v1/reservations",
        json={
            "reservation_id": "res-traced",
            "lines": [{"sku": "SKU-T1", "quantity": 1}, {"sku": "SKU-T2", "quantity": 2}],
        },
    )
    assert response.status_code == 201, response.text
    request = server_span(exporter, "POST /v1/reservations")
    assert (request.attributes or {})["http.response.status_code"] == 201
    stock = INVENTORY_STOCK.physical(kafka.topic_prefix)
    reservations = INVENTORY_RESERVATIONS.physical(kafka.topic_prefix)

    def complete() -> Trace | None:
        trace = trace_of(exporter, request.context.trace_id)
        held = trace.find(f"send {reservations}", SpanKind.PRODUCER, RESERVATION_HELD)
        return trace if held else None

    trace = await eventually(complete, timeout=30, message="the saga's answer is traced")
    # Request -> the holds into each SKU's stock partition, sent under the request's span.
    hold_sends = trace.find(f"send {stock}", SpanKind.PRODUCER, HOLD_REQUESTED)
    assert len(hold_sends) == 2
    for send in hold_sends:
        check_send_span(send, stock)
        assert trace.parent(send) is request
    # -> the partition owner decides each hold in its process span ...
    owners = trace.find(f"process {stock}", SpanKind.CONSUMER, HOLD_REQUESTED, STOCK_GROUP)
    assert len(owners) == 2
    for owner in owners:
        check_process_span(trace, owner, stock, STOCK_GROUP)
    # ... and relays the outcome from within it;
    outcome_sends = trace.find(f"send {reservations}", SpanKind.PRODUCER, HOLD_OUTCOME)
    assert {trace.parent(s) for s in outcome_sends} == set(owners)
    # -> the saga coordinator folds the outcomes and writes the reservation's answer;
    coordinator = trace.find(
        f"process {reservations}", SpanKind.CONSUMER, HOLD_OUTCOME, RESERVATIONS_GROUP
    )
    assert len(coordinator) == 2
    for span in coordinator:
        check_process_span(trace, span, reservations, RESERVATIONS_GROUP)
    [held] = trace.find(f"send {reservations}", SpanKind.PRODUCER, RESERVATION_HELD)
    assert trace.parent(held) in coordinator
    # -> and back: the outcomes reach the replica whose request waits for them.
    back = trace.find(f"process {reservations}", SpanKind.CONSUMER, HOLD_OUTCOME, None)
    assert len(back) == 2
    for span in back:
        check_process_span(trace, span, reservations, None)
    assert {s.context.trace_id for s in trace.spans} == {request.context.trace_id}


async def follow_a_pos_sale(
    gateway: httpx.AsyncClient,
    inventory: httpx.AsyncClient,
    exporter: InMemorySpanExporter,
    kafka: KafkaSettings,
) -> None:
    await receive(inventory, "rc-t2", "store-berlin", SKU_T3=4)
    exporter.clear()
    sale = transaction("pos-traced", store_id="store-berlin", lines=[line("SKU-T3", 3)])
    response = await gateway.post("/v1/pos/transactions", json=sale)
    assert response.status_code == 201, response.text
    request = server_span(exporter, "POST /v1/pos/transactions")
    pos = POS_TRANSACTIONS.physical(kafka.topic_prefix)
    stock = INVENTORY_STOCK.physical(kafka.topic_prefix)

    def applied() -> Trace | None:
        trace = trace_of(exporter, request.context.trace_id)
        owner = trace.find(f"process {stock}", SpanKind.CONSUMER, POS_LINE_APPLIED, STOCK_GROUP)
        return trace if owner else None

    trace = await eventually(applied, timeout=30, message="the sale reaches the stock owner")
    [send] = trace.find(f"send {pos}", SpanKind.PRODUCER, POS_RECORDED)
    check_send_span(send, pos)
    assert trace.parent(send) is request
    [translator] = trace.find(f"process {pos}", SpanKind.CONSUMER, POS_RECORDED, TRANSLATOR_GROUP)
    check_process_span(trace, translator, pos, TRANSLATOR_GROUP)
    [line_send] = trace.find(f"send {stock}", SpanKind.PRODUCER, POS_LINE_APPLIED)
    assert trace.parent(line_send) is translator
    [owner] = trace.find(f"process {stock}", SpanKind.CONSUMER, POS_LINE_APPLIED, STOCK_GROUP)
    check_process_span(trace, owner, stock, STOCK_GROUP)

    async def on_hand() -> bool:
        body = (await inventory.get("/v1/stock/SKU-T3")).json()
        return any(
            loc["location_id"] == "store-berlin" and loc["on_hand"] == 1
            for loc in body["locations"]
        )

    await eventually(on_hand, timeout=30, message="the sale is in the stock read model")


async def test_one_trace_follows_a_reservation_and_a_pos_sale(
    spans: InMemorySpanExporter, kafka_settings: KafkaSettings, postgres_url: str
) -> None:
    await ensure_topics(kafka_settings, TOPICS)
    databases = {n: f"traces_{n}_{uuid.uuid4().hex[:8]}" for n in ("inventory", "pos")}
    urls = {n: await ensure_database(postgres_url, db) for n, db in databases.items()}
    inventory_app = create_inventory_app(
        InventorySettings(
            database_url=urls["inventory"], kafka=kafka_settings, instance_id="inventory-traced"
        )
    )
    gateway_app = create_pos_gateway_app(
        PosGatewaySettings(database_url=urls["pos"], kafka=kafka_settings, instance_id="pos-traced")
    )
    try:
        async with serving(inventory_app) as inventory, serving(gateway_app) as gateway:
            await follow_a_reservation(inventory, spans, kafka_settings)
            await follow_a_pos_sale(gateway, inventory, spans, kafka_settings)
    finally:
        for db in databases.values():
            await drop_database(postgres_url, db)


def test_log_lines_carry_the_trace_and_span(spans: InMemorySpanExporter) -> None:
    formatter = JsonFormatter("inventory")
    record = logging.LogRecord("omnistock.test", logging.INFO, __file__, 1, "held %s", ("r",), None)
    provider = TracerProvider()
    with provider.get_tracer("test").start_as_current_span("work") as span:
        entry = json.loads(formatter.format(record))
    context = span.get_span_context()
    assert entry["message"] == "held r"
    assert entry["service"] == "inventory"
    assert entry["trace_id"] == format(context.trace_id, "032x")
    assert entry["span_id"] == format(context.span_id, "016x")
    assert "trace_id" not in json.loads(formatter.format(record))


def test_tracing_is_off_unless_an_otlp_endpoint_is_configured() -> None:
    assert not tracing.configure_from_env("inventory", {})
    assert not tracing.configure_from_env(
        "inventory",
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"},
    )
    assert not tracing.configure_from_env(
        "inventory",
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"},
    )
    assert not tracing.enabled()
    assert tracing.current_trace_context() == (None, None)
