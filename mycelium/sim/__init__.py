"""Deterministic network simulator for the sans-IO protocol cores."""
