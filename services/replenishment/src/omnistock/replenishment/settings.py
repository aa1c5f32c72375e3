"""The replenishment service's settings (environment variables, see README)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from omnistock.events.settings import ServiceSettings


class ReplenishmentSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="REPLENISHMENT_", extra="ignore")

    velocity_window_days: int = Field(
        default=7,
        ge=1,
        le=365,
        description="Days of demand the sales velocity (and suggestions) look back over.",
    )
    suggestion_lead_time_hours: int = Field(
        default=48,
        ge=0,
        le=24 * 365,
        description="Lead time suggestions assume when the request names none.",
    )
    suggestion_safety_days: float = Field(
        default=2.0, ge=0, description="Days of demand a suggested safety stock covers."
    )
    suggestion_review_days: float = Field(
        default=7.0,
        ge=0,
        description="Days of demand between a suggested reorder point and order-up-to level.",
    )
    max_bulk_rules: int = Field(
        default=10_000, ge=1, le=100_000, description="Most rules one bulk `PUT /v1/rules` takes."
    )
