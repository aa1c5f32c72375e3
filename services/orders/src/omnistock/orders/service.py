"""How the platform runs the orders service."""

from omnistock.events.service import ServiceSpec

SERVICE = ServiceSpec(
    name="orders",
    app_factory="omnistock.orders.main:create_orders_app",
    default_port=8002,
    description="Order lifecycle, settled with inventory through events",
)
