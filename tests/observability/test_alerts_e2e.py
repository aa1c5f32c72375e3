"""End to end: a real Prometheus scrapes running services and its alerts fire.

The services run as processes of their own (as in production, one registry each);
Prometheus scrapes them every second and evaluates the real rules file, with every
``for:`` shortened in the test's copy. A scripted stock-out (POS sales of every SKU
a store holds) makes the low-stock alert fire; stopping a service makes
service-down fire. The same run checks each service's ``/metrics``: it parses, holds
the shared and the service's own families, and no label carries an id or a SKU.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pos_support import line, transaction
from prometheus_client.parser import text_string_to_metric_families

from omnistock.devstack.credentials import admin_headers
from omnistock.devstack.postgres import drop_database, ensure_database
from omnistock.devstack.prometheus import PrometheusServer, fast_rules, scrape_job
from omnistock.devstack.serving import ServiceProcess
from omnistock.devstack.waiting import eventually
from omnistock.events.admin import ensure_topics
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import TOPICS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "helm/omnistock/files/prometheus/omnistock.rules.yaml"
DASHBOARD = ROOT / "helm/omnistock/files/grafana/omnistock-overview.json"
SERVICES = ("inventory", "orders", "pos-gateway")
STORE = "store-berlin"
SKUS = [f"SKU-E2E-{n:02d}" for n in range(12)]
RESERVATION = "res-e2e-1"
SALE = "pos-e2e-1"

SHARED_FAMILIES = {
    "omnistock_http_requests",
    "omnistock_http_request_duration_seconds",
    "omnistock_service_ready",
    "omnistock_events_produced",
    "omnistock_events_consumed",
    "omnistock_handler_errors",
    "omnistock_dlq_messages",
    "omnistock_consumer_lag_messages",
    "omnistock_consumer_oldest_unprocessed_age_seconds",
    "omnistock_consumer_batch_seconds",
    "omnistock_replay_events",
    "omnistock_replay_progress_ratio",
    "omnistock_replay_events_per_second",
}
OWN_FAMILIES = {
    "inventory": {
        "omnistock_inventory_reservations",
        "omnistock_inventory_skus",
        "omnistock_inventory_skus_zero_available",
    },
    "orders": set(),
    "pos-gateway": {"omnistock_pos_units", "omnistock_pos_revenue"},
}
#: Label names that would mean one series per entity.
ENTITY_LABELS = {
    "sku",
    "id",
    "event_id",
    "reservation_id",
    "order_id",
    "transaction_id",
    "terminal_id",
    "customer_id",
    "receipt_id",
}


@dataclass
class Stack:
    services: dict[str, ServiceProcess]
    prometheus: PrometheusServer

    def client(self, service: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.services[service].url, timeout=15, headers=admin_headers()
        )


def service_env(kafka: KafkaSettings, database_url: str, name: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "KAFKA_FETCH_MAX_WAIT_MS": str(kafka.fetch_max_wait_ms),
        "KAFKA_SESSION_TIMEOUT_MS": str(kafka.session_timeout_ms),
        "KAFKA_HEARTBEAT_INTERVAL_MS": str(kafka.heartbeat_interval_ms),
        "DATABASE_URL": database_url,
        "INSTANCE_ID": f"{name}-e2e",
        "INVENTORY_STOCK_GAUGES_INTERVAL_S": "0.5",
        # Tracing stays off whatever the environment says: this test is about metrics.
        "OTEL_SDK_DISABLED": "true",
    }


@pytest.fixture
async def stack(
    kafka_settings: KafkaSettings, postgres_url: str, tmp_path: Path
) -> AsyncIterator[Stack]:
    await ensure_topics(kafka_settings, TOPICS)
    databases = {name: f"e2e_{name.replace('-', '_')}_{uuid.uuid4().hex[:8]}" for name in SERVICES}
    urls = {name: await ensure_database(postgres_url, db) for name, db in databases.items()}
    services = {
        name: ServiceProcess(
            name, service_env(kafka_settings, urls[name], name), tmp_path / f"{name}.log"
        )
        for name in SERVICES
    }
    prometheus = PrometheusServer(
        tmp_path / "prometheus",
        {scrape_job(name): [f"127.0.0.1:{s.port}"] for name, s in services.items()},
        rule_files=[fast_rules(RULES, tmp_path / "omnistock.rules.yaml")],
    )
    try:
        await asyncio.gather(*(s.start(ready_timeout=90) for s in services.values()))
        await prometheus.start()
        yield Stack(services, prometheus)
    finally:
        prometheus.stop()
        for service in services.values():
            service.stop()
        for db in databases.values():
            await drop_database(postgres_url, db)


async def firing(prometheus: PrometheusServer, alertname: str) -> list[dict[str, str]]:
    return [
        alert["labels"]
        for alert in await prometheus.alerts()
        if alert["labels"]["alertname"] == alertname and alert["state"] == "firing"
    ]


async def value(prometheus: PrometheusServer, expr: str) -> float | None:
    result = await prometheus.query(expr)
    return float(result[0]["value"][1]) if result else None


async def stock_up_and_use(stack: Stack) -> None:
    """A store with 12 SKUs, one unit each; a reservation, a stock query, an unknown path."""
    async with stack.client("inventory") as inventory:
        response = await inventory.put(
            f"/v1/locations/{STORE}",
            json={
                "name": "Berlin",
                "kind": "store",
                "region": "DE",
                "latitude": 52.52,
                "longitude": 13.41,
                "fulfils_online": True,
            },
        )
        assert response.status_code == 200, response.text
        response = await inventory.post(
            "/v1/receipts",
            json={
                "receipt_id": "rcpt-e2e-1",
                "location_id": STORE,
                "lines": [{"sku": sku, "quantity": 2} for sku in SKUS],
            },
        )
        assert response.status_code == 201, response.text
        response = await inventory.post(
            "/v1/reservations",
            json={"reservation_id": RESERVATION, "lines": [{"sku": SKUS[0], "quantity": 1}]},
        )
        assert response.status_code == 201, response.text
        assert response.json()["status"] == "held"
        release = await inventory.post(f"/v1/reservations/{RESERVATION}/release", json={})
        assert release.status_code in (200, 202), release.text
        assert (await inventory.get(f"/v1/stock/{SKUS[1]}")).status_code == 200
        assert (await inventory.get(f"/v1/nowhere/{SKUS[2]}")).status_code == 404


async def sell_everything(stack: Stack) -> None:
    """The store sells every unit of every SKU at its tills."""
    async with stack.client("pos-gateway") as gateway:
        sale = transaction(SALE, store_id=STORE, lines=[line(sku, 2) for sku in SKUS])
        response = await gateway.post("/v1/pos/transactions", json=sale)
        assert response.status_code == 201, response.text


def check_metrics(service: str, text: str) -> None:
    families = {family.name: family for family in text_string_to_metric_families(text)}
    missing = (SHARED_FAMILIES | OWN_FAMILIES[service]) - set(families)
    assert not missing, f"{service}'s /metrics lacks {sorted(missing)}"
    entities = [*SKUS, RESERVATION, SALE, "rcpt-e2e-1"]
    for family in families.values():
        for sample in family.samples:
            assert not ENTITY_LABELS & set(sample.labels), (service, sample)
            for label, label_value in sample.labels.items():
                assert not any(entity in label_value for entity in entities), (
                    f"{service}: {sample.name}{{{label}={label_value!r}}} names an entity"
                )


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def grafana_free(expr: str) -> str:
    """The query as Grafana sends it, with its rate interval resolved."""
    return expr.replace("$__rate_interval", "1m")


def routes(text: str) -> set[str]:
    return {
        sample.labels["route"]
        for family in text_string_to_metric_families(text)
        if family.name == "omnistock_http_requests"
        for sample in family.samples
    }


async def test_stock_out_and_a_stopped_service_fire_their_alerts(stack: Stack) -> None:
    prometheus = stack.prometheus
    await eventually(
        lambda: _all_up(prometheus), timeout=30, message="prometheus scrapes every service"
    )
    await stock_up_and_use(stack)
    stocked = f'max(omnistock_inventory_skus{{location_id="{STORE}"}})'
    out = f'max(omnistock_inventory_skus_zero_available{{location_id="{STORE}"}})'

    async def stocked_and_available() -> bool:
        return await value(prometheus, stocked) == len(SKUS) and await value(prometheus, out) == 0

    await eventually(stocked_and_available, timeout=30, message="stock gauges scraped")
    assert await firing(prometheus, "OmnistockManySkusOutOfStock") == []
    await sell_everything(stack)

    async def stock_out_alert() -> list[dict[str, str]]:
        return await firing(prometheus, "OmnistockManySkusOutOfStock")

    [alert] = await eventually(stock_out_alert, timeout=45, message="low-stock alert fires")
    assert alert["location_id"] == STORE
    assert alert["severity"] == "warning"
    assert await value(prometheus, out) == len(SKUS)
    assert await value(prometheus, 'sum(omnistock_pos_units_total{store_id="store-berlin"})') == (
        2 * len(SKUS)
    )
    reservations = await prometheus.query(
        "sum by (outcome) (omnistock_inventory_reservations_total)"
    )
    assert {r["metric"]["outcome"] for r in reservations} >= {"held", "released"}

    async with httpx.AsyncClient(timeout=15) as http:
        for name, service in stack.services.items():
            text = (await http.get(f"{service.url}/metrics")).text
            check_metrics(name, text)
            if name == "inventory":
                assert {"/v1/stock/{sku}", "/v1/reservations", "unmatched"} <= routes(text)

    # Every dashboard query is valid PromQL on a real server; the business panels have data.
    answers = {expr: await prometheus.query(grafana_free(expr)) for expr in dashboard_queries()}
    [sales] = [expr for expr in answers if "omnistock_pos_units_total" in expr]
    assert {r["metric"]["store_id"] for r in answers[sales]} == {STORE}
    [stock_outs] = [expr for expr in answers if "skus_zero_available" in expr]
    assert answers[stock_outs][0]["metric"]["location_id"] == STORE

    assert await firing(prometheus, "OmnistockServiceDown") == []
    stack.services["orders"].kill()

    async def service_down() -> list[dict[str, str]]:
        return await firing(prometheus, "OmnistockServiceDown")

    [down] = await eventually(service_down, timeout=45, message="service-down alert fires")
    assert down["job"] == "omnistock-orders"
    assert down["severity"] == "critical"


async def _all_up(prometheus: PrometheusServer) -> bool:
    up = await prometheus.targets_up()
    return len(up) == len(SERVICES) and all(up.values())
