"""The topic operator's settings (environment variables, see README)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from omnistock.events.settings import KafkaSettings


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPERATOR_", extra="ignore")

    namespaces: str = Field(
        default="",
        description="Comma-separated namespaces whose KafkaTopics are reconciled; "
        "empty means every namespace (needs the cluster-wide RBAC).",
    )
    drift_interval_s: float = Field(
        default=60.0,
        gt=0,
        description="How often each topic is compared with the broker, to revert changes "
        "made directly in Kafka and re-create a topic deleted behind the operator's back.",
    )
    liveness_port: int = Field(default=8080, description="Port of /healthz.")
    metrics_port: int = Field(default=9090, description="Port of the Prometheus /metrics.")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
