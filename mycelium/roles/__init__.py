"""Capability probe (psutil) and the deterministic role assignment rule."""
