"""The inventory service's settings (environment variables, see README)."""

from __future__ import annotations

from pydantic import Field
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
    expiry_interval_s: float = Field(
        default=0.2, gt=0, description="How often partition owners look for due holds."
    )
    stock_gauges_interval_s: float = Field(
        default=15.0,
        gt=0,
        description="How often the stock gauges (SKUs at zero available per location) are "
        "recounted from the read model.",
    )
