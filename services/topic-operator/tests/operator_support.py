"""KafkaTopic bodies as the API server would hand them to the operator, and a way to apply
the status an outcome writes (what kopf's patch does)."""

from __future__ import annotations

import copy
import uuid
from typing import Any

from omnistock.topic_operator.handlers import Outcome


def kafka_topic(
    topic_name: str,
    *,
    partitions: int = 3,
    config: dict[str, str] | None = None,
    deletion_policy: str = "Retain",
    name: str | None = None,
    created: str = "2026-11-21T10:00:00Z",
    annotations: dict[str, str] | None = None,
    generation: int = 1,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "topicName": topic_name,
        "partitions": partitions,
        "replicationFactor": 1,
        "deletionPolicy": deletion_policy,
    }
    if config is not None:
        spec["config"] = config
    return {
        "apiVersion": "omnistock.io/v1alpha1",
        "kind": "KafkaTopic",
        "metadata": {
            "name": name or topic_name.replace(".", "-").lower(),
            "namespace": "shop",
            "uid": str(uuid.uuid4()),
            "creationTimestamp": created,
            "generation": generation,
            "annotations": annotations or {},
        },
        "spec": spec,
    }


def applied(body: dict[str, Any], outcome: Outcome) -> dict[str, Any]:
    """``body`` after the operator's merge patch of its status."""
    result = copy.deepcopy(body)
    status = result.setdefault("status", {})
    for key, value in outcome.status.items():
        if value is None:
            status.pop(key, None)
        else:
            status[key] = value
    return result


def ready(body: dict[str, Any]) -> dict[str, Any]:
    [condition] = [c for c in body["status"]["conditions"] if c["type"] == "Ready"]
    return condition
