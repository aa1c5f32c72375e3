"""The replenishment service: reorder rules, low-stock detection, replenishment requests."""
