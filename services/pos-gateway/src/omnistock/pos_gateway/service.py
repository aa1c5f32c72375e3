"""How the platform runs the pos-gateway."""

from omnistock.events.service import ServiceSpec

SERVICE = ServiceSpec(
    name="pos-gateway",
    app_factory="omnistock.pos_gateway.main:create_pos_gateway_app",
    default_port=8003,
    description="Store POS transactions in: validation, de-duplication, sequence gaps, sales",
)
