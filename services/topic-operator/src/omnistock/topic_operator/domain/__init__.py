"""What the operator decides without I/O: resources, claims, conditions and status."""
