"""The inventory service: stock per (sku, location), reservations, cross-store stock queries."""
