"""Replenishment rules and decisions: pure folds, no I/O."""
