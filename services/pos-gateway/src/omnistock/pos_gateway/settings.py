"""The pos-gateway's settings (environment variables, see README)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from omnistock.events.settings import ServiceSettings
from omnistock.pos_gateway.domain.ledger import DEFAULT_RESEND_WINDOW


class PosGatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="POS_", extra="ignore")

    max_batch: int = Field(
        default=1_000, ge=1, le=10_000, description="Most transactions one request may carry."
    )
    max_clock_skew_s: float = Field(
        default=300.0,
        ge=0,
        description="How far in the future a transaction's occurred_at may be (terminal clocks "
        "drift); later is refused.",
    )
    resend_window_hours: float = Field(
        default=DEFAULT_RESEND_WINDOW.total_seconds() / 3600,
        ge=1,
        description="How old a transaction a terminal may still send; older ones are refused "
        "(too_old), so each replica remembers only this long (plus an hour) of transactions. "
        "Keep it equal on every replica.",
    )
    decision_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="How long a write waits for this replica's ledger to fold it before 504 "
        "(the transactions are in the log; resending them returns duplicate).",
    )
    sales_window_minutes: int = Field(
        default=60, ge=1, le=7 * 24 * 60, description="Default look-back of GET /v1/pos/sales."
    )

    @property
    def resend_window(self) -> timedelta:
        return timedelta(hours=self.resend_window_hours)
