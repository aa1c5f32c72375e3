"""The operator's Prometheus metrics, by the names the alert rules use."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY, generate_latest

from omnistock.topic_operator.domain.resources import ResourceRef
from omnistock.topic_operator.handlers import Outcome
from omnistock.topic_operator.main import _measured, _refresh_gauges


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_each_run_is_counted_timed_and_failures_are_told_apart() -> None:
    before = sample("omnistock_operator_reconciliations_total", handler="drift")
    failed_before = sample("omnistock_operator_reconciliation_failures_total", handler="drift")
    timed_before = sample(
        "omnistock_operator_reconciliation_duration_seconds_count", handler="drift"
    )

    with _measured("drift") as outcomes:
        outcomes.append(Outcome(ready=True))
    with _measured("drift") as outcomes:
        outcomes.append(Outcome(ready=False))  # e.g. BrokerCannotAlterConfigs
    with pytest.raises(RuntimeError), _measured("drift"):
        raise RuntimeError("broker unreachable")

    assert sample("omnistock_operator_reconciliations_total", handler="drift") == before + 3
    assert (
        sample("omnistock_operator_reconciliation_failures_total", handler="drift")
        == failed_before + 2
    )
    assert (
        sample("omnistock_operator_reconciliation_duration_seconds_count", handler="drift")
        == timed_before + 3
    )


def test_resources_and_paused_resources_come_from_the_claims_index() -> None:
    def ref(name: str) -> ResourceRef:
        return ResourceRef("shop", name, f"uid-{name}", "2026-11-21T10:00:00Z")

    # kopf's index: topicName -> the (ref, paused) of every resource naming it.
    index = {
        "orders.events": [(ref("a"), False), (ref("b"), True)],
        "inventory.stock": [(ref("c"), True)],
    }

    _refresh_gauges(index)  # type: ignore[arg-type]

    assert sample("omnistock_operator_resources") == 3
    assert sample("omnistock_operator_paused_resources") == 2
    exposed = generate_latest(REGISTRY).decode()
    for name in (
        "omnistock_operator_reconciliations_total",
        "omnistock_operator_reconciliation_failures_total",
        "omnistock_operator_reconciliation_duration_seconds_bucket",
        "omnistock_operator_resources",
        "omnistock_operator_paused_resources",
    ):
        assert name in exposed
