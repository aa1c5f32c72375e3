"""Settings every omnistock process reads from its environment.

Each service subclasses :class:`ServiceSettings` for its own knobs; the names
below are shared so one `.env`, one Helm ConfigMap and one dev stack can feed
every process the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from aiokafka.helpers import create_ssl_context
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    """How to reach the broker. Defaults match the embedded dev broker."""

    model_config = SettingsConfigDict(env_prefix="KAFKA_", extra="ignore")

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Comma-separated host:port list of brokers."
    )
    topic_prefix: str = Field(
        default="",
        description="Prefix for every physical topic and consumer group name "
        "(isolates environments sharing a cluster).",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = Field(default=None, description="CA bundle for TLS to the broker.")
    request_timeout_ms: int = Field(default=10_000, ge=1_000)
    produce_retries: int = Field(
        default=3, ge=0, le=20, description="Send attempts after the first before giving up."
    )
    produce_retry_backoff_ms: int = Field(default=100, ge=10)
    linger_ms: int = Field(default=0, ge=0, description="Producer batching delay.")
    produce_max_in_flight: int = Field(
        default=256,
        ge=1,
        le=100_000,
        description="Sends one producer hands to the Kafka client at a time; the rest wait "
        "their turn, in order, within their delivery timeout. aiokafka slows down sharply "
        "when thousands of sends wait on one full batch (a burst of requests, a hot SKU).",
    )
    produce_batch_bytes: int = Field(
        default=512 * 1024,
        ge=16 * 1024,
        le=1024 * 1024,
        description="Largest record batch per partition and produce request; the sends in "
        "flight for a hot partition should fit in one. At most the broker's "
        "message.max.bytes (1 MiB by default).",
    )
    session_timeout_ms: int = Field(
        default=6_000,
        ge=1_000,
        description="How long a silent group member keeps its partitions; bounds failover time.",
    )
    heartbeat_interval_ms: int = Field(default=1_000, ge=100)
    fetch_max_wait_ms: int = Field(
        default=500,
        ge=1,
        le=10_000,
        description="Longest a fetch waits for data. Apache Kafka answers as soon as data "
        "arrives; the embedded Tansu broker always waits this long, so the dev stack sets 10.",
    )

    def group(self, name: str) -> str:
        """The consumer group ``name`` as the broker knows it: environments that share a
        cluster must not share groups, or one's rebalances stall the other's consumers."""
        return f"{self.topic_prefix}{name}"

    def client_options(self) -> dict[str, object]:
        """Connection options shared by producers, consumers and admin clients."""
        options: dict[str, object] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            options["ssl_context"] = create_ssl_context(cafile=self.ssl_cafile)
        if self.sasl_mechanism:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        return options


Algorithm = Literal["RS256", "ES256"]


class AuthSettings(BaseSettings):
    """Where credentials are checked against, and how much one credential may ask."""

    model_config = SettingsConfigDict(env_prefix="AUTH_", extra="ignore")

    jwks_file: Path | None = Field(
        default=None, description="JWKS of the token issuer, a mounted file (re-read on change)."
    )
    jwks_url: str | None = Field(
        default=None, description="JWKS of the token issuer, fetched (https in production)."
    )
    issuer: str | None = Field(default=None, description="Expected `iss` of every JWT.")
    audience: str = Field(default="omnistock", description="Expected `aud` of every JWT.")
    algorithms: list[Algorithm] = Field(default=["RS256", "ES256"], min_length=1)
    leeway_s: int = Field(default=30, ge=0, le=300, description="Clock skew allowed on exp/nbf.")
    api_keys_file: Path | None = Field(
        default=None, description="Hashed API keys (JSON), a mounted file (re-read on change)."
    )
    jwks_refresh_s: float = Field(default=300.0, ge=5, description="Re-read interval of the JWKS.")
    rate_per_s: float = Field(
        default=200.0,
        gt=0,
        description="Requests per second one credential may make (per replica).",
    )
    rate_burst: int = Field(default=400, ge=1, description="Requests one credential may burst.")
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="Largest request body; larger is 413."
    )


class ServiceSettings(BaseSettings):
    """Settings common to every service process.

    Their environment names are the same for every service (no service prefix), so
    subclasses may add an ``env_prefix`` for their own settings only.
    """

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    database_url: SecretStr = Field(
        default=SecretStr("postgresql+asyncpg://postgres@127.0.0.1:55432/postgres"),
        validation_alias="DATABASE_URL",
        description="SQLAlchemy URL of this service's own database (asyncpg driver).",
    )
    log_level: str = Field(default="INFO", validation_alias="LOG_LEVEL")
    instance_id: str = Field(
        default="",
        validation_alias="INSTANCE_ID",
        description="Stable name of this replica (pod name in Kubernetes); random when empty.",
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
