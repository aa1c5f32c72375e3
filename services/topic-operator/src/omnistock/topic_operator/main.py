"""The operator process: kopf wiring of the handlers, metrics and liveness.

Run as ``python -m omnistock.topic_operator`` (one replica: kopf's standalone mode,
no peering). Deletion: only resources whose deletionPolicy is Delete get kopf's
finalizer, so deleting a Retain resource (or its namespace) never waits for the
operator; the chart's pre-delete hook removes Delete resources while the operator
still runs (see helm/omnistock/README.md, "Uninstalling").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import kopf
from prometheus_client import start_http_server

from omnistock.topic_operator import metrics
from omnistock.topic_operator.domain.resources import (
    GROUP,
    PLURAL,
    UNMANAGED,
    VERSION,
    KafkaTopic,
    ResourceRef,
    flag,
)
from omnistock.topic_operator.handlers import Broker, BrokerUnreachable, Outcome, reconcile, release
from omnistock.topic_operator.settings import OperatorSettings

log = logging.getLogger(__name__)

RESOURCE = (GROUP, VERSION, PLURAL)
RETRY_DELAY_S = 15

Claims = kopf.Index[str, tuple[ResourceRef, bool]]
DRIFT_INTERVAL_S = OperatorSettings().drift_interval_s


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    config = OperatorSettings()
    # Progress and the last handled spec go to annotations under our own prefix: the
    # CRD's status schema is ours alone (kopf's status fields would be pruned anyway).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.persistence.finalizer = f"{GROUP}/topic-operator"
    settings.posting.level = logging.WARNING
    memo.broker = Broker(config.kafka)
    start_http_server(config.metrics_port)


@kopf.on.cleanup()
async def cleanup(memo: Any, **_: Any) -> None:
    await memo.broker.close()


@kopf.index(*RESOURCE)
def topic_claims(body: kopf.Body, **_: Any) -> dict[str, tuple[ResourceRef, bool]] | None:
    """topicName -> every resource declaring it: for conflicts, and for the gauges."""
    resource = KafkaTopic.from_body(body)
    if resource.unmanaged:
        return None
    return {resource.spec.name: (resource.ref, resource.paused)}


def _claimants(index: Claims, body: kopf.Body) -> list[ResourceRef]:
    name = body.get("spec", {}).get("topicName", "")
    return [ref for ref, _ in index.get(name, [])]


def _refresh_gauges(index: Claims) -> None:
    entries = [entry for key in index for entry in index[key]]
    metrics.RESOURCES.set(len(entries))
    metrics.PAUSED_RESOURCES.set(sum(1 for _, paused in entries if paused))


@contextmanager
def _measured(handler: str) -> Iterator[list[Outcome]]:
    metrics.RECONCILIATIONS.labels(handler).inc()
    began = time.perf_counter()
    outcomes: list[Outcome] = []
    try:
        yield outcomes
    except Exception:
        metrics.FAILURES.labels(handler).inc()
        raise
    else:
        if any(not outcome.ready for outcome in outcomes):
            metrics.FAILURES.labels(handler).inc()
    finally:
        metrics.DURATION.labels(handler).observe(time.perf_counter() - began)


def _post(body: kopf.Body, outcome: Outcome) -> None:
    for event in outcome.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


async def _reconcile(
    handler: str, body: kopf.Body, patch: kopf.Patch, memo: Any, claims: Claims
) -> None:
    _refresh_gauges(claims)
    with _measured(handler) as outcomes:
        try:
            outcome = await reconcile(
                await memo.broker.admin(),
                body,
                claimants=_claimants(claims, body),
                drift_check=handler == "drift",
            )
        except BrokerUnreachable as exc:
            await memo.broker.forget()
            raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY_S) from exc
        outcomes.append(outcome)
        if outcome.status:
            patch.status.update(outcome.status)
        _post(body, outcome)


# kopf hands the index over by its function's name, among the keyword arguments.
@kopf.on.create(*RESOURCE)
async def on_create(body: kopf.Body, patch: kopf.Patch, memo: Any, **kwargs: Any) -> None:
    await _reconcile("create", body, patch, memo, kwargs["topic_claims"])


@kopf.on.update(*RESOURCE, field="spec")
async def on_update(body: kopf.Body, patch: kopf.Patch, memo: Any, **kwargs: Any) -> None:
    await _reconcile("update", body, patch, memo, kwargs["topic_claims"])


@kopf.on.resume(*RESOURCE)
async def on_resume(body: kopf.Body, patch: kopf.Patch, memo: Any, **kwargs: Any) -> None:
    await _reconcile("resume", body, patch, memo, kwargs["topic_claims"])


@kopf.timer(*RESOURCE, interval=DRIFT_INTERVAL_S, initial_delay=DRIFT_INTERVAL_S)
async def drift(body: kopf.Body, patch: kopf.Patch, memo: Any, **kwargs: Any) -> None:
    """Changes made directly in Kafka (config, a deleted topic) are found and reverted."""
    await _reconcile("drift", body, patch, memo, kwargs["topic_claims"])


def needs_finalizer(spec: Mapping[str, Any], annotations: Mapping[str, str], **_: Any) -> bool:
    """Only a topic the operator will delete holds up its resource's deletion."""
    return spec.get("deletionPolicy") == "Delete" and not flag(annotations, UNMANAGED)


@kopf.on.delete(*RESOURCE, when=needs_finalizer)
async def on_delete(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    claims: Claims = kwargs["topic_claims"]
    _refresh_gauges(claims)
    with _measured("delete") as outcomes:
        try:
            outcome = await release(
                await memo.broker.admin(), body, claimants=_claimants(claims, body)
            )
        except BrokerUnreachable as exc:
            await memo.broker.forget()
            raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY_S) from exc
        outcomes.append(outcome)
        _post(body, outcome)


def main() -> None:
    """Run the operator on the configured namespaces (every namespace when none)."""
    config = OperatorSettings()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    namespaces = [n.strip() for n in config.namespaces.split(",") if n.strip()]
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=f"http://0.0.0.0:{config.liveness_port}/healthz",
    )
