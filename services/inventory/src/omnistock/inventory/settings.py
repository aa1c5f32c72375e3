"""The inventory service's settings (environment variables, see README)."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from omnistock.events.settings import ServiceSettings


class InventorySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INVENTORY_", extra="ignore")

    decision_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="How long a write request waits for the log's decision before 504.",
    )
    consistency_timeout_s: float = Field(
        default=2.0, gt=0, description="Bounded wait of a read with consistent_with before 504."
    )
    snapshot_every: int = Field(
        default=20_000, ge=100, description="Events per partition between state snapshots."
    )
    min_ttl_seconds: int = Field(
        default=30, ge=1, le=3_600, description="Shortest hold a checkout may ask for."
    )
    held_verdict_margin_s: float = Field(
        default=5.0,
        ge=0,
        description="A reservation is not reported held this close to its expiry: the "
        "verdict could land behind an owner's expiry of one of its lines (a slow write, "
        "clock skew between pods). Below the shortest hold.",
    )
    expiry_interval_s: float = Field(
        default=0.2, gt=0, description="How often partition owners look for due holds."
    )
    stock_gauges_interval_s: float = Field(
        default=15.0,
        gt=0,
        description="How often the stock gauges (SKUs at zero available per location) are "
        "recounted from the read model.",
    )

    @model_validator(mode="after")
    def _shortest_hold_can_be_held(self) -> Self:
        if self.held_verdict_margin_s >= self.min_ttl_seconds:
            raise ValueError(
                f"INVENTORY_HELD_VERDICT_MARGIN_S ({self.held_verdict_margin_s}) must be below "
                f"INVENTORY_MIN_TTL_SECONDS ({self.min_ttl_seconds}): a hold that short could "
                "never be reported held"
            )
        return self
