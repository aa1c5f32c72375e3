"""How the platform runs the replenishment service."""

from omnistock.events.service import ServiceSpec

SERVICE = ServiceSpec(
    name="replenishment",
    app_factory="omnistock.replenishment.main:create_replenishment_app",
    default_port=8004,
    description="Reorder rules, low-stock detection and replenishment requests",
)
