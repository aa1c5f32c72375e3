"""The orders service's settings (environment variables, see README)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from omnistock.events.settings import ServiceSettings


class OrdersSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORDERS_", extra="ignore")

    decision_timeout_s: float = Field(
        default=3.0,
        gt=0,
        description="How long placing an order waits for inventory's answer before 202.",
    )
    consistency_timeout_s: float = Field(
        default=2.0,
        gt=0,
        description="How long a cancel or fulfil waits for the read model to catch up with "
        "the log (before deciding, and to report the outcome) before 504 / 202.",
    )
