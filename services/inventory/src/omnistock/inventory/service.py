"""How the platform runs the inventory service."""

from omnistock.events.service import ServiceSpec

SERVICE = ServiceSpec(
    name="inventory",
    app_factory="omnistock.inventory.main:create_inventory_app",
    default_port=8001,
    description="Stock ledger, reservations and cross-store stock queries",
)
